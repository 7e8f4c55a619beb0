"""Starting a node, connecting to one, and the handle both return.

::

    import datalogger

    with datalogger.start({"destinations": {"db": {"type": "sqlite", "path": "x.db"}}}) as dl:
        dl.log("green", [{"id": 1}])
        dl.flush()

A handle is a connection that heals: when its node goes away and comes back on
the same admin port, the next call works (see :mod:`datalogger.connection`).
Its fire-and-forget calls (``log_nowait``, ``broadcast``) never wait for the
node (see :mod:`datalogger.batching`).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import Any

from thespian.actors import ActorSystem

from . import exceptions
from ._endpoint import Endpoint, actor_system
from .actors.pubsub import SCOPES
from .batching import ClientSender
from .config import Config, resolve_class
from .connection import Link, LocalLink, NodeLink
from .exceptions import DataLoggerError, DeliveryTimeout, InvalidInput, NotRunning
from .messages import (
    FlushReply,
    FlushRequest,
    LastProcessedReply,
    LastProcessedRequest,
    LogRejected,
    NodesReply,
    NodesRequest,
    ProcessStatusInfo,
    ProcessStatusInfoRequest,
    ProcessStatusReset,
    ProcessStatusResetDone,
    PubSubBroadcast,
    ShutdownReady,
    ShutdownRequest,
    StatsReply,
    StatsRequest,
)
from .validation import normalize_data, require_rows, validate_topic

__all__ = ["DataLogger", "connect", "get_default", "log", "start"]

EXIT_TIMEOUT = 5.0
"""Seconds each handle may take, when the process exits, to send (or spool) what it queued."""
_KNOWN_TOPICS_MAX = 4096

_default: DataLogger | None = None
_default_lock = threading.Lock()
_handles: weakref.WeakSet[DataLogger] = weakref.WeakSet()


class DataLogger:
    """A handle on a node, returned by :func:`start` and :func:`connect`.

    Thread-safe, and no call holds a lock while it waits for the node: each
    call that waits borrows a private endpoint. Usable in a process forked
    after it was made (the child sends its own rows over its own sockets).
    """

    def __init__(
        self,
        link: Link,
        *,
        system: ActorSystem | None = None,
        config: Config | None,
        owns_system: bool,
        admin_port: int | None,
        log_timeout: float = 30.0,
        connect_timeout: float = 2.0,
        client_buffer_rows: int = 100_000,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 1 << 30,
    ) -> None:
        self._link = link
        self._actor_system = system
        self.config = config
        self.owns_system = owns_system
        self.admin_port = admin_port
        self.log_timeout = log_timeout
        self.connect_timeout = connect_timeout
        self.client_buffer_rows = int(client_buffer_rows)
        if self.client_buffer_rows < 1:
            raise exceptions.ConfigError(f"client_buffer_rows must be at least 1, not {client_buffer_rows}")
        self.spool_dir = os.path.abspath(os.fspath(spool_dir)) if spool_dir is not None else None
        self.spool_max_bytes = int(spool_max_bytes)
        self._lock = threading.Lock()  # for datalogger.pubsub's use of ``_system``; never held here
        self._client_lock = threading.Lock()
        self._closed = False
        self._owner_pid = os.getpid()
        self._destinations: dict[str, Any] = {}
        self._client: ClientSender | None = None
        self._known_topics: set[str] = set()
        self._rows_only: dict[str, bool] = {}
        #: ``host:port`` of the node's admin (None on ``simpleSystemBase``).
        self.node: str | None = None
        _handles.add(self)
        if self.spool_dir is not None:
            self._sender()  # rows an earlier run left in the spool go out now

    @property
    def router(self) -> Any:
        """The RootSupervisor's address: ``ActorSystem().tell(dl.router, Log(topic, data))``."""
        return self._link.router

    @property
    def _system(self) -> ActorSystem:
        """An ActorSystem to reach the node's actors with (the node's own for :func:`start`)."""
        if self._actor_system is None:
            assert isinstance(self._link, NodeLink)
            self._actor_system = actor_system(self._link.admin_port, self._link.admin_host, self._link.bind)
        return self._actor_system

    def destination(self, name: str) -> Any:
        """A local instance of the configured destination ``name``, built on first use.

        For calls a destination offers beside ``send_data``, such as the
        InfluxDB destination's ``ping()``, ``query()``, ``post_query()`` and
        ``push()``. It runs in the caller's process, apart from the node's
        workers, and is closed by :meth:`shutdown` or :meth:`close`.

        Raises:
            ConfigError: no destination has that name, or this handle has no
                configuration (it came from :func:`connect`).
        """
        if self.config is None:
            raise exceptions.ConfigError("this handle has no configuration: it came from connect()")
        built = self._destinations.get(name)
        if built is None:
            specs = {spec.name: spec for spec in self.config.destinations}
            if name not in specs:
                raise exceptions.ConfigError(
                    f"no destination named {name!r}; configured: {', '.join(sorted(specs))}"
                )
            built = resolve_class(specs[name].type)(**dict(specs[name].options))
            self._destinations[name] = built
        return built

    def _close_destinations(self) -> None:
        for built in self._destinations.values():
            close = getattr(built, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
        self._destinations.clear()

    # ------------------------------------------------------------------ requests
    def _check_open(self) -> None:
        if self._closed:
            raise NotRunning("this datalogger handle has been shut down")

    def _request(self, message_for: Any, expected: tuple[type, ...], timeout: float) -> Any:
        self._check_open()
        return self._link.request(message_for, expected, timeout)

    def log(self, topic: str, data: Any, timeout: float | None = None) -> int:
        """Log ``data`` (a row or a list of rows) to ``topic``; return the chunk's sequence number.

        Returns once the chunk is in the topic's write-ahead log and handed to
        every destination of the topic: from then on it is delivered at least
        once, across crashes (see docs/durability.md). Topics whose
        destinations all take any data (``takes_any_data``) accept any value
        msgpack can serialise, or a list of them.

        Raises:
            InvalidTopic: the topic is malformed, or no destination takes it.
            InvalidData: the data is not rows (for a destination that stores
                rows), or cannot be serialised.
            NotRunning: the node could not be reached within ``connect_timeout``
                (it is down, restarting or not answering); the same handle works
                again once the node is back.
            Backpressure: a destination with ``overflow = "block"`` stayed full.
            StorageError: the node cannot write the topic's write-ahead log
                (a full or read-only disk); the message names the path.
            DeliveryTimeout: the node took the chunk but did not answer within ``timeout``.
        """
        self._check_open()
        topic = validate_topic(topic)
        rows = self._check_rows(topic, normalize_data(data))
        wait = self.log_timeout if timeout is None else timeout
        reply = self._link.log(topic, rows, wait)
        if isinstance(reply, LogRejected):
            error = getattr(exceptions, reply.error, DataLoggerError)
            if not (isinstance(error, type) and issubclass(error, DataLoggerError)):
                error = DataLoggerError
            raise error(reply.message)
        return int(reply.seq)

    def _check_rows(self, topic: str, items: list[Any]) -> list[Any]:
        """``items``, if the topic's destinations take them (when this handle knows them)."""
        if self.config is None:
            return items
        rows_only = self._rows_only.get(topic)
        if rows_only is None:
            rows_only = self._rows_only[topic] = self.config.rows_only(topic)
        if rows_only:
            require_rows(items, topic)
        return items

    def _checked_topic(self, topic: str) -> str:
        if topic in self._known_topics:
            return topic
        topic = validate_topic(topic)
        if len(self._known_topics) < _KNOWN_TOPICS_MAX:
            self._known_topics.add(topic)
        return topic

    def _sender(self) -> ClientSender:
        client = self._client
        if client is None:
            with self._client_lock:
                client = self._client
                if client is None:
                    self._check_open()
                    client = self._client = ClientSender(
                        self._link,
                        buffer_rows=self.client_buffer_rows,
                        spool_dir=self.spool_dir,
                        spool_max_bytes=self.spool_max_bytes,
                        log_timeout=self.log_timeout,
                    )
        return client

    def log_nowait(self, topic: str, data: Any) -> bool:
        """Queue ``data`` for ``topic`` in this process and return at once.

        The rows are checked here, then sent in chunks by the handle's
        background thread, which keeps them while the node is away (in memory,
        up to ``client_buffer_rows``, then in ``spool_dir`` if set) and sends
        them when it is back (see :mod:`datalogger.batching`). They are in the
        node's write-ahead log once :meth:`flush` has returned.

        Returns:
            True when the rows were queued; False when they were dropped because
            the queue was full (counted in ``stats()["client"]["dropped"]`` and
            warned about).

        Raises:
            InvalidTopic, InvalidData: as :meth:`log`.
            NotRunning: the handle was closed.
        """
        topic = self._checked_topic(topic)
        rows = self._check_rows(topic, normalize_data(data))
        return (self._client or self._sender()).put(topic, rows)

    def _put_trusted(self, topic: str, row: dict[str, Any]) -> bool:
        """Queue a row built by datalogger itself (already checked); see :meth:`log_nowait`."""
        return (self._client or self._sender()).put_one(topic, row)

    def broadcast(self, event: Any, topic: str = "requests", scope: str = "local") -> bool:
        """Fan ``event`` out to the subscribers of ``topic`` (see :mod:`datalogger.pubsub`).

        Queued and sent by the background thread like :meth:`log_nowait`: it
        never waits for the node. Events are kept in memory only (up to
        ``client_buffer_rows``) while the node is away; beyond that they are
        dropped and counted (``stats()["client"]["events_dropped"]``).

        Raises:
            InvalidInput: ``scope`` is unknown.
            InvalidTopic: ``topic`` is malformed.
            NotRunning: the handle was closed.
        """
        if scope not in SCOPES:
            raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        topic = self._checked_topic(topic)
        if isinstance(self._link, LocalLink):  # the node runs in this thread's calls: no queue
            self._check_open()
            self._link.broadcast([PubSubBroadcast(topic, event, scope)])
            return True
        return (self._client or self._sender()).put_event(PubSubBroadcast(topic, event, scope))

    def subscribe(self, topic: str = "requests", callback: Any = None, max_pending: int = 1000) -> Any:
        """Subscribe to ``topic``'s events; returns a :class:`datalogger.pubsub.Subscription`."""
        from . import pubsub

        return pubsub.subscribe(self, topic=topic, callback=callback, max_pending=max_pending)

    def flush(self, timeout: float = 30.0) -> None:
        """Return once everything accepted so far is delivered (or dead-lettered).

        Rows queued with :meth:`log_nowait` (and left in the spool) are sent
        first; if the node is away, they wait for it within ``timeout``. When
        this returns, the process status of every topic is stored, so
        :meth:`last_processed` is current.

        Raises:
            StorageError: a topic cannot be flushed because its write-ahead log
                cannot be opened (named, with the reason).
            DeliveryTimeout: naming the topics (or client rows) still pending after ``timeout`` seconds.
            NotRunning: the node could not be reached.
        """
        deadline = time.monotonic() + timeout
        if self._client is not None:
            self._client.flush(timeout)
        remaining = max(0.0, deadline - time.monotonic())
        reply: FlushReply = self._request(
            lambda ref: FlushRequest(remaining, ref), (FlushReply,), remaining + 10.0
        )
        if reply.broken:
            raise exceptions.StorageError(
                "flush: "
                + "; ".join(f"topic {topic}: {reason}" for topic, reason in sorted(reply.broken.items()))
            )
        if not reply.done:
            raise DeliveryTimeout(
                f"flush: topics still pending after {timeout:g}s: {', '.join(sorted(reply.pending))}"
            )

    def client_stats(self) -> dict[str, Any]:
        """This handle's own counters, without asking the node (it may be away).

        ``{"queued": rows in memory, "spooled": rows in spool_dir, "sent": rows,
        "dropped": rows, "events_sent", "events_dropped", "errors", "last_error",
        "connected", "reconnects", ...}``: see :class:`datalogger.batching.ClientSender`.
        """
        if self._client is not None:
            return self._client.stats()
        return {
            "queued": 0, "spooled": 0, "sent": 0, "dropped": 0, "spooled_total": 0,
            "events_queued": 0, "events_sent": 0, "events_dropped": 0, "errors": 0,
            "last_error": None, "spool_error": None, "buffer_rows": self.client_buffer_rows,
            "spool_dir": self.spool_dir,
            **self._link.status(),
        }

    def stats(self, detail: bool | None = None) -> dict[str, Any]:
        """Counters per topic and destination, and this handle's own under ``"client"``.

        ``{"topics": {topic: {destination: {"received": rows, "delivered": rows,
        "failed": attempts, "retried": attempts, "dead_lettered": rows, "spilled": rows,
        "dropped": rows, "buffered": rows, ...}}}, "summary": {"topics": n,
        "destinations": {destination: {counter: sum}}, "failing": [topic, ...]},
        "rejected": calls, "client": {...}}``; ``"client"`` is :meth:`client_stats`.

        Args:
            detail: per-topic counters under ``"topics"``: True always, False never (the
                summary only), None (default) when the node has at most 200 topics.

        Raises:
            NotRunning: the node could not be reached (:meth:`client_stats` still answers).
        """
        reply: StatsReply = self._request(
            lambda ref: StatsRequest(ref, detail), (StatsReply,), 20.0
        )
        stats = dict(reply.stats)
        stats["client"] = self.client_stats()
        return stats

    # ------------------------------------------------------------------ process status
    def last_processed(self, entity: str, timeout: float = 20.0) -> int | None:
        """The process-status timestamp of ``entity`` (``"<topic>/<destination>"``), or None.

        The timestamp is the sequence number of the topic's chunk up to which
        that destination has settled every chunk.
        """
        reply: LastProcessedReply = self._request(
            lambda ref: LastProcessedRequest(entity, ref), (LastProcessedReply,), timeout
        )
        return reply.timestamp

    def processed(self, entity: str, timestamp: int) -> bool:
        """True when ``entity`` has been processed up to ``timestamp`` or later."""
        last = self.last_processed(entity)
        return last is not None and last >= timestamp

    def process_status_info(self, timeout: float = 20.0) -> dict[str, Any]:
        """The ProcessStatus actor's process id, adapter and number of entities."""
        reply: ProcessStatusInfo = self._request(
            lambda ref: ProcessStatusInfoRequest(ref), (ProcessStatusInfo,), timeout
        )
        return {"pid": reply.pid, "adapter": reply.adapter, "entities": reply.entities}

    def nodes(self, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The convention's members: node, capabilities, last heartbeat, and the
        ``"<topic>/<destination>"`` pairs each delivers."""
        reply: NodesReply = self._request(lambda ref: NodesRequest(ref), (NodesReply,), timeout)
        return list(reply.nodes)

    def reset(self) -> None:
        """Forget the whole process status, in memory and in storage (for tests)."""
        self._request(lambda ref: ProcessStatusReset(ref), (ProcessStatusResetDone,), 20.0)

    # ------------------------------------------------------------------ ending
    def shutdown(self, timeout: float | None = None) -> int:
        """Send what this handle queued, deliver what can be delivered within ``timeout``,
        spill the rest, stop the node.

        In a process forked after :func:`start`, the node belongs to the parent:
        this only closes the child's handle (as :meth:`close`).

        Returns:
            Rows left on disk for the next start.
        """
        if self._closed:
            return 0
        if os.getpid() != self._owner_pid:
            self.close()
            return 0
        wait = self.config.shutdown_timeout if (timeout is None and self.config) else (timeout or 10.0)
        self._close_client(wait)
        spilled = 0
        try:
            reply: ShutdownReady = self._request(
                lambda ref: ShutdownRequest(wait, ref), (ShutdownReady,), wait + 20.0
            )
            spilled = reply.spilled_rows
        finally:
            self._closed = True
            self._close_destinations()
            if self.owns_system and self._actor_system is not None:
                self._actor_system.shutdown()
            else:
                _stop_admin(self._link)
            _forget(self)
        return spilled

    def _close_client(self, timeout: float) -> None:
        if self._client is not None:
            self._client.close(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Let go of the node without stopping it (for handles from :func:`connect`).

        Rows still queued are sent within ``timeout`` seconds; what cannot be
        sent stays in ``spool_dir`` if set, else it is counted as dropped.
        """
        if self._closed:
            return
        self._close_client(timeout)
        self._closed = True
        self._close_destinations()
        _forget(self)

    def _after_fork(self) -> None:
        """In a forked child: new locks, endpoints and sender; the parent's queue stays the parent's."""
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._link.after_fork()
        if self._client is not None:
            self._client.after_fork()

    def __enter__(self) -> DataLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.owns_system:
            self.shutdown()
        else:
            self.close()


def _after_fork_in_child() -> None:
    for handle in list(_handles):
        try:
            handle._after_fork()
        except Exception:  # never break the fork of an application
            pass


def _close_at_exit() -> None:
    """When the process exits, each handle sends (or spools) what it queued, within EXIT_TIMEOUT."""
    for handle in list(_handles):
        if handle._closed or handle._client is None:
            continue
        try:
            handle._close_client(EXIT_TIMEOUT)
        except Exception:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_at_exit)


def _stop_admin(link: Link, timeout: float = 10.0) -> None:
    """Stop the actor system of the node ``link`` reaches (after its RootSupervisor is done)."""
    if not isinstance(link, NodeLink):
        return
    endpoint = Endpoint(link.admin_port, link.admin_host, link.bind)
    try:
        endpoint.stop_admin(timeout)
    finally:
        endpoint.close()


def _forget(handle: DataLogger) -> None:
    global _default
    with _default_lock:
        if _default is handle:
            _default = None


def _set_default(handle: DataLogger) -> None:
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = handle


def get_default() -> DataLogger:
    """The handle module-level :func:`log` uses.

    Raises:
        NotRunning: no node was started or connected in this process.
    """
    handle = _default
    if handle is None or handle._closed:
        raise NotRunning("no datalogger is running: call datalogger.start() or datalogger.connect()")
    return handle


def log(topic: str, data: Any, timeout: float | None = None) -> int:
    """Log ``data`` to ``topic`` on the default instance; see :meth:`DataLogger.log`."""
    return get_default().log(topic, data, timeout)


# start() and connect() make handles; they live in their own module (re-exported here).
from .starting import BASES, connect, start  # noqa: E402, F401 - re-exported (examples use system.BASES)
