"""Restart back-off for the workers of a supervisor, as a plain class."""

from __future__ import annotations

from collections import deque

__all__ = ["RESTART_BURST", "RESTART_DELAY", "RESTART_WINDOW", "RestartBackoff"]

RESTART_WINDOW = 10.0
"""Seconds over which worker restarts are counted for back-off."""
RESTART_BURST = 5
"""Restarts within the window before a restart is delayed."""
RESTART_DELAY = 1.0
"""Seconds a restart is delayed once the burst is exceeded."""


class RestartBackoff:
    """How long to wait before restarting something that died: at once, unless it dies often.

    Up to ``burst`` restarts within ``window`` seconds go at once; beyond them each
    waits ``delay`` seconds, so a worker that dies on start does not spin.
    """

    def __init__(
        self, window: float = RESTART_WINDOW, burst: int = RESTART_BURST, delay: float = RESTART_DELAY
    ) -> None:
        self.window = window
        self.burst = burst
        self.delay = delay
        self._history: dict[object, deque[float]] = {}

    def exited(self, key: object, now: float) -> float:
        """``key`` died at ``now``: the seconds to wait before restarting it (0: at once)."""
        history = self._history.setdefault(key, deque())
        history.append(now)
        while history and now - history[0] > self.window:
            history.popleft()
        return self.delay if len(history) > self.burst else 0.0
