"""Actors for the raw-Thespian baselines (importable: multiprocTCPBase creates them by path)."""

from __future__ import annotations

from typing import Any

from thespian.actors import Actor


class Echo(Actor):
    """Answers every message with the message itself: the cheapest possible ``ask``."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Send ``message`` back to ``sender`` (Thespian's own messages are ignored)."""
        if isinstance(message, (dict, list, tuple, str, bytes, int)):
            self.send(sender, message)
