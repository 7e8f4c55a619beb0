"""The dashboard's data and actions, apart from the web layer.

:class:`Dashboard` makes the snapshots the page shows: the pipeline rows of
:func:`~datalogger.dashboard.pipeline.pipeline_view` (``stats()``, dead letters,
the health rule) and the analytics of
:func:`~datalogger.dashboard.requests.analytics_view` (a
:class:`~datalogger.dashboard.requests.RequestStore` fed by the history table and
a pubsub subscription). Snapshots are cached for most of ``refresh`` seconds, so
many open pages cost the node one ``stats()`` per refresh.

Its only writes are the two actions, refused unless ``allow_actions`` was
given: replaying dead letters and shutting the node down.
"""

from __future__ import annotations

import hmac
import io
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from ..config import Config, DashboardSettings
from ..exceptions import ConfigError, DataLoggerError, InvalidInput, NotRunning
from ..validation import validate_topic
from .pipeline import pipeline_view
from .requests import WINDOWS, RequestStore, analytics_view, history_source, window_start

__all__ = ["Dashboard"]

log = logging.getLogger("datalogger.dashboard")

#: Seconds between two attempts to reconnect to the node or to subscribe again.
RETRY_AFTER = 5.0
#: Seconds after the first history read before the second.
FIRST_REREAD = 5.0
#: Seconds a window stays "in use" after the page last asked for it (its rows are kept).
WINDOW_IN_USE = 600.0


class Dashboard:
    """What the dashboard page shows, and its actions.

    Args:
        handle: a :class:`~datalogger.DataLogger` (not closed by :meth:`close`).
        connect: instead of ``handle``: makes one (``datalogger.connect``), again
            after the node stopped answering; closed by :meth:`close`.
        alive: with ``connect``: a quick check that the node still listens (its
            admin port is open), so that a stopped node is noticed at once
            rather than after ``stats()`` times out.
        config: the node's configuration (default: ``handle.config``): the
            history table, the dead letters, ``health_failing_after`` and the
            ``[dashboard]`` settings come from it. Without one the page has no
            history and does not check dead letters.
        window: the window the page opens with (default: ``dashboard.window``).
        allow_actions: offer replay and shutdown, guarded by :attr:`token`.
        token: the actions token (default: a random one).
        subscribe: follow live requests through pubsub.
    """

    def __init__(
        self,
        handle: Any = None,
        *,
        connect: Callable[[], Any] | None = None,
        alive: Callable[[], bool] | None = None,
        config: Config | None = None,
        window: str | None = None,
        allow_actions: bool = False,
        token: str | None = None,
        subscribe: bool = True,
    ) -> None:
        if (handle is None) == (connect is None):
            raise InvalidInput("give the dashboard either a handle or a connect function")
        self.config = config if config is not None else getattr(handle, "config", None)
        self.settings = self.config.dashboard if self.config is not None else DashboardSettings()
        self.window = window or self.settings.window
        if self.window not in WINDOWS:
            raise ConfigError(f"window must be one of {', '.join(WINDOWS)}, not {self.window!r}")
        self.failing_after = self.config.health_failing_after if self.config is not None else 60.0
        self.dead_letter_dir = (
            os.path.join(self.config.data_dir, "dead_letters") if self.config is not None else None
        )
        source = (
            history_source(self.config, self.settings.topic, self.settings.history)
            if self.config is not None
            else None
        )
        self.store = RequestStore(source, self.settings.max_rows)
        self.allow_actions = bool(allow_actions)
        #: The token the actions need (``X-Datalogger-Token`` header); None without actions.
        self.token = (token or secrets.token_urlsafe(24)) if self.allow_actions else None
        self._handle = handle
        self._connect = connect
        self._alive = alive
        self._subscribe = subscribe
        self._subscription: Any = None
        self._live_error: str | None = None
        self._node_error: str | None = None
        self._last_attempt = {"node": 0.0, "live": 0.0}
        self._lock = threading.Lock()
        self._pipeline: tuple[float, dict[str, Any]] | None = None
        self._analytics: dict[str, tuple[float, int, dict[str, Any]]] = {}
        self._windows_in_use: dict[str, float] = {}
        self._closed = False
        if self._subscribe:  # follow from now on, whether a page is open or not
            now = time.time()
            self._ensure_live(self._node(now), now)

    # ------------------------------------------------------------------ the node
    def _node(self, now: float) -> Any:
        """The handle, connecting (again) when the dashboard owns it; None while there is none."""
        if self._handle is not None or self._connect is None:
            return self._handle
        if now - self._last_attempt["node"] < RETRY_AFTER:
            return None
        self._last_attempt["node"] = now
        if self._alive is not None and not self._alive():
            self._node_error = "the node does not listen on its admin port"
            return None
        try:
            self._handle = self._connect()
            self._node_error = None
        except DataLoggerError as exc:
            self._node_error = str(exc)
        return self._handle

    def _lost_node(self, exc: Exception) -> None:
        self._node_error = f"{type(exc).__name__}: {exc}"
        if self._connect is None:
            return
        self._drop_subscription()
        handle, self._handle = self._handle, None
        self._last_attempt["node"] = time.time()
        try:
            handle.close()
        except Exception:
            pass

    def _ensure_live(self, handle: Any, now: float) -> None:
        if not self._subscribe or handle is None:
            return
        if self._subscription is not None and not self._subscription.closed:
            return
        if now - self._last_attempt["live"] < RETRY_AFTER:
            return
        self._last_attempt["live"] = now
        from .. import pubsub

        try:
            self._subscription = pubsub.subscribe(
                handle, self.settings.topic, callback=self.store.add_event, max_pending=10_000
            )
            self._live_error = None
        except DataLoggerError as exc:
            self._subscription = None
            self._live_error = str(exc)

    def _drop_subscription(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                subscription.unsubscribe(timeout=2.0)
            except Exception:
                pass

    # ------------------------------------------------------------------ snapshots
    def pipeline(self, now: float) -> dict[str, Any]:
        """The pipeline rows (see :func:`~datalogger.dashboard.pipeline.pipeline_view`)."""
        dead_letters = None
        dead_letter_error = None
        if self.dead_letter_dir is not None:
            from ..deadletters import DeadLetterStore

            try:
                dead_letters = DeadLetterStore(self.dead_letter_dir).summary()
            except (OSError, DataLoggerError) as exc:
                dead_letter_error = f"cannot read the dead letters: {exc}"
        handle = self._node(now)
        stats: dict[str, Any] = {}
        if handle is not None and self._alive is not None and not self._alive():
            self._lost_node(NotRunning("the node stopped listening on its admin port"))
            handle = None
        if handle is not None:
            try:
                stats = handle.stats()
                self._node_error = None
            except Exception as exc:  # the node went away: say so, keep serving
                self._lost_node(exc)
        view = pipeline_view(stats, dead_letters, self.failing_after, now)
        view["node_error"] = self._node_error if handle is None or not stats else None
        view["dead_letter_error"] = dead_letter_error
        view["failing_after"] = self.failing_after
        return view

    def analytics(self, window: str, now: float) -> dict[str, Any]:
        """The analytics of ``window`` (see :func:`~datalogger.dashboard.requests.analytics_view`)."""
        moment = datetime.fromtimestamp(now, UTC)
        start = window_start(window, moment)
        self._windows_in_use[window] = now
        store = self.store
        loaded = store.history_loaded_at
        # The first read soon again: rows still on their way to the table when the page
        # started were broadcast before the subscription, and are not in the first read.
        every = self.settings.history_refresh if store.history_reads > 1 else FIRST_REREAD
        stale = loaded is None or now - loaded >= min(every, self.settings.history_refresh)
        if store.source is not None and (stale or not store.covers(start)):
            store.load_history(start, now)
        self._forget_unused(moment, now)
        view = analytics_view(store.rows_since(start), window, moment)
        view["complete"] = store.complete(start)
        view["max_rows"] = store.max_rows
        view["history"] = {
            "source": store.source.description if store.source is not None else None,
            "loaded_at": store.history_loaded_at,
            "error": store.history_error,
        }
        view["live"] = {
            "topic": self.settings.topic,
            "subscribed": self._subscription is not None and not self._subscription.closed,
            "received": store.live_received,
            "error": self._live_error,
        }
        return view

    def _forget_unused(self, moment: datetime, now: float) -> None:
        in_use = [w for w, at in self._windows_in_use.items() if now - at < WINDOW_IN_USE]
        self._windows_in_use = {w: self._windows_in_use[w] for w in in_use}
        if "all" in in_use or not in_use:
            return
        starts = [window_start(w, moment) for w in in_use]
        self.store.forget_before(min(s for s in starts if s is not None))

    def snapshot(self, window: str | None = None) -> dict[str, Any]:
        """Everything the page shows for ``window`` (default: the opening window), JSON-ready.

        Raises:
            InvalidInput: ``window`` is not one of :data:`~datalogger.dashboard.requests.WINDOWS`.
        """
        window = window or self.window
        if window not in WINDOWS:
            raise InvalidInput(f"window must be one of {', '.join(WINDOWS)}, not {window!r}")
        with self._lock:
            now = time.time()
            fresh = self.settings.refresh * 0.8
            self._ensure_live(self._node(now), now)
            if self._pipeline is None or now - self._pipeline[0] >= fresh:
                self._pipeline = (now, self.pipeline(now))
            cached = self._analytics.get(window)
            if cached is None or cached[1] != self.store.version or now - cached[0] >= fresh:
                cached = (now, self.store.version, self.analytics(window, now))
                self._analytics[window] = cached
            return {
                "generated_at": now,
                "window": window,
                "windows": list(WINDOWS),
                "refresh": self.settings.refresh,
                "actions": self.allow_actions,
                "pipeline": self._pipeline[1],
                "analytics": cached[2],
            }

    # ------------------------------------------------------------------ actions
    def check_token(self, given: str | None) -> bool:
        """True when actions are allowed and ``given`` is the token (compared in constant time)."""
        if not self.allow_actions or self.token is None or not given:
            return False
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    def replay(self, topic: str, destination: str) -> dict[str, Any]:
        """Replay the dead letters of (``topic``, ``destination``); what ``datalogger replay`` does.

        Raises:
            InvalidInput: actions are not allowed, or there is no configuration.
            InvalidTopic: a malformed topic or destination name.
        """
        if not self.allow_actions:
            raise InvalidInput("actions are not allowed (start the dashboard with --allow-actions)")
        if self.config is None:
            raise InvalidInput("replaying needs the node's configuration (--config)")
        from ..replay import replay

        result = replay(
            self.config,
            topic=validate_topic(topic),
            destination=validate_topic(destination),
            console=Console(file=io.StringIO()),
        )
        with self._lock:
            self._pipeline = None
        return {
            "delivered_letters": result.delivered_letters,
            "delivered_rows": result.delivered_rows,
            "failed_letters": result.failed_letters,
            "last_error": result.last_error,
        }

    def shutdown_node(self) -> dict[str, Any]:
        """Stop the node (deliver what can be, spill the rest), as ``datalogger shutdown``.

        Raises:
            InvalidInput: actions are not allowed.
            DataLoggerError: there is no node to stop.
        """
        if not self.allow_actions:
            raise InvalidInput("actions are not allowed (start the dashboard with --allow-actions)")
        with self._lock:
            handle = self._node(time.time())
            if handle is None:
                raise DataLoggerError(self._node_error or "no node to stop")
            self._drop_subscription()
            spilled = handle.shutdown()
            self._pipeline = None
        log.warning("dashboard: the node was shut down from the page")
        return {"spilled_rows": spilled}

    def close(self) -> None:
        """End the subscription, and close the handle if the dashboard made it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._drop_subscription()
        if self._connect is not None and self._handle is not None:
            try:
                self._handle.close()
            except Exception:
                pass
            self._handle = None
