"""Starting a node, connecting to one, and the handle both return.

::

    import datalogger

    with datalogger.start({"destinations": {"db": {"type": "sqlite", "path": "x.db"}}}) as dl:
        dl.log("green", [{"id": 1}])
        dl.flush()
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from thespian.actors import ActorSystem

from . import exceptions
from ._startup import check_data_dir, reap_on_failure
from ._thespian import (
    ADMIN_HOST_CAPABILITY,
    ALLOWED_CAPABILITY,
    BIND_CAPABILITY,
    DEFAULT_ADMIN_PORT,
    DEFAULT_BIND,
    LEADER_CAPABILITY,
    NODE_CAPABILITY,
    address_towards,
    check_allowed,
    check_port_free,
    default_allowed,
    is_own_address,
    log_defs,
    port_open,
    resolve,
)
from .actors.root_supervisor import ROOT_NAME, RootSupervisor
from .batching import ClientBatcher
from .config import Config, load_config, resolve_class
from .exceptions import DataLoggerError, DeliveryTimeout, NotRunning
from .messages import (
    ConfigureNode,
    DirectLog,
    FlushReply,
    FlushRequest,
    LastProcessedReply,
    LastProcessedRequest,
    Log,
    LogAccepted,
    LogRejected,
    NodeReady,
    NodesReply,
    NodesRequest,
    NodeStartFailed,
    ProcessStatusInfo,
    ProcessStatusInfoRequest,
    ProcessStatusReset,
    ProcessStatusResetDone,
    RouteCheck,
    RouteStatus,
    ShutdownReady,
    ShutdownRequest,
    StatsReply,
    StatsRequest,
)
from .validation import normalize_data, require_rows, validate_topic

__all__ = ["DataLogger", "connect", "get_default", "log", "start"]

BASES = ("multiprocTCPBase", "simpleSystemBase")
START_TIMEOUT = 30.0
"""Seconds a node gets to answer that it is ready."""
ROUTE_PROBE = 1.0
"""Seconds a direct ``log()`` waits before checking that its route is still alive."""

_default: DataLogger | None = None
_default_lock = threading.Lock()


class DataLogger:
    """A handle on a running node, returned by :func:`start` and :func:`connect`.

    Thread-safe: calls from several threads are serialised.
    """

    def __init__(
        self,
        system: ActorSystem,
        router: Any,
        *,
        config: Config | None,
        owns_system: bool,
        admin_port: int | None,
        log_timeout: float = 30.0,
    ) -> None:
        self._system = system
        self._router = router
        self.config = config
        self.owns_system = owns_system
        self.admin_port = admin_port
        self.log_timeout = log_timeout
        self._lock = threading.Lock()
        self._refs = itertools.count(1)
        self._closed = False
        self._destinations: dict[str, Any] = {}
        self._batcher: ClientBatcher | None = None
        self._routes: dict[str, Any] = {}
        self._rows_only: dict[str, bool] = {}
        self._batcher_lock = threading.Lock()
        #: ``host:port`` of the node's admin (None on ``simpleSystemBase``).
        self.node: str | None = None

    @property
    def router(self) -> Any:
        """The RootSupervisor's address: ``ActorSystem().tell(dl.router, Log(topic, data))``."""
        return self._router

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
    def _request(self, message_for: Any, expected: tuple[type, ...], timeout: float) -> Any:
        if self._closed:
            raise NotRunning("this datalogger handle has been shut down")
        with self._lock:
            ref = next(self._refs)
            deadline = time.monotonic() + timeout
            reply = self._system.ask(self._router, message_for(ref), timeout)
            while True:
                if reply is not None and isinstance(reply, expected) and getattr(reply, "ref", ref) == ref:
                    return reply
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeliveryTimeout(f"no answer from the node within {timeout:g}s")
                reply = self._system.listen(remaining)

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
            Backpressure: a destination with ``overflow = "block"`` stayed full.
            StorageError: the node cannot write the topic's write-ahead log
                (a full or read-only disk); the message names the path.
            DeliveryTimeout: the node did not answer within ``timeout``.
        """
        topic = validate_topic(topic)
        rows = self._check_rows(topic, normalize_data(data))
        wait = self.log_timeout if timeout is None else timeout
        route = self._routes.get(topic)
        if route is not None:
            reply = self._log_direct(topic, rows, route, wait)
        else:
            reply = self._request(
                lambda ref: Log(topic, rows, True, ref), (LogAccepted, LogRejected), wait
            )
        if isinstance(reply, LogRejected):
            error = getattr(exceptions, reply.error, DataLoggerError)
            if not (isinstance(error, type) and issubclass(error, DataLoggerError)):
                error = DataLoggerError
            raise error(reply.message)
        if reply.route is not None:
            self._routes[topic] = reply.route
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

    def _log_direct(self, topic: str, rows: list[dict[str, Any]], route: Any, timeout: float) -> Any:
        """Send a chunk straight to the topic's TopicSupervisor (learnt from an earlier answer).

        If no answer comes within :data:`ROUTE_PROBE` seconds, ask the router
        whether that supervisor is still the topic's; if it is not (it crashed
        and was restarted), the chunk never reached it: send it through the router.
        """
        if self._closed:
            raise NotRunning("this datalogger handle has been shut down")
        with self._lock:
            ref = next(self._refs)
            deadline = time.monotonic() + timeout
            self._system.tell(route, DirectLog(topic, rows, ref))
            direct = True
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeliveryTimeout(f"no answer from the node within {timeout:g}s")
                reply = self._system.listen(min(remaining, ROUTE_PROBE) if direct else remaining)
                if isinstance(reply, (LogAccepted, LogRejected)) and reply.ref == ref:
                    return reply
                if isinstance(reply, RouteStatus) and reply.ref == ref and not reply.current:
                    # the supervisor died before taking the chunk: go through the router
                    self._routes.pop(topic, None)
                    direct = False
                    ref = next(self._refs)
                    self._system.tell(self._router, Log(topic, rows, True, ref))
                elif reply is None and direct:
                    # silence: ask again whether the supervisor is alive (a slow one is)
                    self._system.tell(self._router, RouteCheck(topic, route, ref))

    def log_nowait(self, topic: str, data: Any) -> None:
        """Queue ``data`` for ``topic`` in this process and return at once.

        Rows are checked here and sent in chunks by a background thread (see
        :mod:`datalogger.batching`). They are safe from a crash of this process
        only once :meth:`flush` has returned; rows beyond the queue's bound are
        dropped and counted in ``stats()["client"]``.

        Raises:
            InvalidTopic, InvalidData: as :meth:`log`.
        """
        if self._closed:
            raise NotRunning("this datalogger handle has been shut down")
        batcher = self._batcher
        if batcher is None:
            with self._batcher_lock:  # not self._lock: a request in flight must not block this
                if self._batcher is None:
                    self._batcher = ClientBatcher(self.log)
                batcher = self._batcher
        if self.config is not None and type(data) is not dict:  # a row is fine for every topic
            # refuse here what the node would refuse (the batcher checks the rest)
            self._check_rows(validate_topic(topic), data if isinstance(data, list) else [data])
        batcher.add(topic, data)

    def broadcast(self, event: Any, topic: str = "requests", scope: str = "local") -> None:
        """Fan ``event`` out to the subscribers of ``topic`` (see :mod:`datalogger.pubsub`)."""
        from . import pubsub

        pubsub.broadcast(self, event, topic=topic, scope=scope)

    def subscribe(self, topic: str = "requests", callback: Any = None, max_pending: int = 1000) -> Any:
        """Subscribe to ``topic``'s events; returns a :class:`datalogger.pubsub.Subscription`."""
        from . import pubsub

        return pubsub.subscribe(self, topic=topic, callback=callback, max_pending=max_pending)

    def flush(self, timeout: float = 30.0) -> None:
        """Return once everything accepted so far is delivered (or dead-lettered).

        Rows queued with :meth:`log_nowait` are sent first.

        Raises:
            StorageError: a topic cannot be flushed because its write-ahead log
                cannot be opened (named, with the reason).
            DeliveryTimeout: naming the topics still pending after ``timeout`` seconds.
        """
        if self._batcher is not None:
            self._batcher.flush(timeout)
        reply: FlushReply = self._request(
            lambda ref: FlushRequest(timeout, ref), (FlushReply,), timeout + 10.0
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

    def stats(self) -> dict[str, Any]:
        """Counters per topic and destination.

        ``{"topics": {topic: {destination: {"received": rows, "delivered": rows,
        "failed": attempts, "retried": attempts, "dead_lettered": rows, "spilled": rows,
        "dropped": rows, "buffered": rows, ...}}}, "rejected": calls}``
        """
        reply: StatsReply = self._request(lambda ref: StatsRequest(ref), (StatsReply,), 20.0)
        stats = dict(reply.stats)
        if self._batcher is not None:
            b = self._batcher
            stats["client"] = {
                "queued": b.pending(),
                "sent": b.sent,
                "dropped": b.dropped,
                "errors": b.errors,
                "last_error": b.last_error,
            }
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

    def shutdown(self, timeout: float | None = None) -> int:
        """Deliver what can be delivered within ``timeout``, spill the rest, stop the node.

        Returns:
            Rows left on disk for the next start.
        """
        if self._closed:
            return 0
        wait = self.config.shutdown_timeout if (timeout is None and self.config) else (timeout or 10.0)
        spilled = 0
        try:
            reply: ShutdownReady = self._request(
                lambda ref: ShutdownRequest(wait, ref), (ShutdownReady,), wait + 20.0
            )
            spilled = reply.spilled_rows
        finally:
            self._closed = True
            self._close_destinations()
            self._system.shutdown()
            _forget(self)
        return spilled

    def _close_batcher(self, timeout: float) -> None:
        if self._batcher is not None:
            self._batcher.close(timeout)
            self._batcher = None

    def close(self) -> None:
        """Let go of the node without stopping it (for handles from :func:`connect`)."""
        self._close_batcher(10.0)
        self._closed = True
        self._close_destinations()
        _forget(self)

    def __enter__(self) -> DataLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.owns_system:
            self.shutdown()
        else:
            self.close()


def _forget(handle: DataLogger) -> None:
    global _default
    with _default_lock:
        if _default is handle:
            _default = None


def start(
    config: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    base: str = "multiprocTCPBase",
    admin_port: int | None = None,
    bind: str | None = None,
    log_level: int | str = "WARNING",
    make_default: bool = True,
    leader: str | None = None,
    capabilities: Sequence[str] = (),
) -> DataLogger:
    """Start a node and return its handle.

    Everything the node needs is checked before this returns: the data
    directory can be created and written, the admin port is free, the
    process-status adapter opens. A start that fails raises and leaves no
    process behind.

    Args:
        config: a dict, a TOML file path or a :class:`Config`; ``None`` for the
            embedded default (SQLite and JSONL).
        base: ``"multiprocTCPBase"`` (a process per actor) or ``"simpleSystemBase"``
            (one process, for tests and scripts).
        admin_port: the node's admin port (default 1900).
        bind: the address of this host the node's sockets listen on, and by
            which the other nodes reach it. Default: ``127.0.0.1`` for a
            leader; for a member, this host's address towards its leader.
            Thespian moves pickles: keep it on a private, trusted network.
        log_level: level of the actor processes' log output.
        make_default: make this the instance module-level :func:`log` uses.
        leader: ``host:port`` of a running node to join as a member of its
            convention (``multiprocTCPBase`` only); without it this node leads
            its own convention, which others may join.
        capabilities: what this node offers to destinations that ``require``
            it (``["influxdb", "postgres"]``).

    Raises:
        ConfigError: the configuration is malformed, or ``bind`` is not an
            address of this host.
        DataLoggerError: the data directory is unusable, the admin port is
            taken, the process-status adapter failed, or the node did not start.
    """
    cfg = load_config(config)
    if base not in BASES:
        raise exceptions.ConfigError(f"base must be one of {', '.join(BASES)}, not {base!r}")
    port = DEFAULT_ADMIN_PORT if admin_port is None else int(admin_port)
    caps: dict[str, Any] = {}
    node: str | None = None
    if base == "multiprocTCPBase":
        host, caps = _node_capabilities(cfg, port, bind, leader, capabilities)
        node = f"{host}:{port}"
    elif leader or capabilities or bind:
        raise exceptions.ConfigError("leader, bind and capabilities need base='multiprocTCPBase'")
    check_data_dir(cfg.data_dir)
    level = (
        log_level if isinstance(log_level, int) else getattr(__import__("logging"), str(log_level).upper())
    )
    # The first node started in a process becomes Thespian's process-wide system, so that
    # ActorSystem().tell(dl.router, Log(...)) reaches it; later ones are kept apart.
    first = getattr(ActorSystem, "systemBase", None) is None
    with reap_on_failure():
        system = ActorSystem(base, caps, logDefs=log_defs(level), transientUnique=not first)
        try:
            router = system.createActor(RootSupervisor, globalName=ROOT_NAME)
            ready = system.ask(router, ConfigureNode(cfg, node, leader, tuple(capabilities)), START_TIMEOUT)
            if isinstance(ready, NodeStartFailed):
                raise DataLoggerError(f"the node did not start: {ready.reason}")
            if not isinstance(ready, NodeReady):
                raise DataLoggerError(
                    f"the node did not start: no answer within {START_TIMEOUT:g}s (answer: {ready!r})"
                )
        except BaseException:
            system.shutdown()
            raise
    handle = DataLogger(
        system,
        router,
        config=cfg,
        owns_system=True,
        admin_port=port if base == "multiprocTCPBase" else None,
        log_timeout=cfg.log_timeout,
    )
    handle.node = node
    if make_default:
        _set_default(handle)
    return handle


def _node_capabilities(
    cfg: Config, port: int, bind: str | None, leader: str | None, capabilities: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """Where a TCP node listens, and the capabilities of its actor system.

    Raises:
        ConfigError: ``leader`` is not ``host:port``, or ``bind`` is not an address of this host.
        DataLoggerError: the admin port is taken.
    """
    caps: dict[str, Any] = {}
    if leader:
        leader_host, _, leader_port = leader.rpartition(":")
        if not leader_host or not leader_port.isdigit():
            raise exceptions.ConfigError(f"leader must be host:port, not {leader!r}")
        caps["Convention Address.IPv4"] = (resolve(leader_host), int(leader_port))
    if bind is None:
        host = address_towards(caps["Convention Address.IPv4"][0]) if leader else DEFAULT_BIND
    else:
        host = resolve(bind)
        if host == "0.0.0.0" or not is_own_address(host):
            raise exceptions.ConfigError(
                f"bind must be one address of this host (the one other nodes reach it by), not {bind!r}"
            )
    check_port_free(host, port, "admin port")
    node = f"{host}:{port}"
    caps.update({"Admin Port": port, ADMIN_HOST_CAPABILITY: host, NODE_CAPABILITY: node})
    caps.update(dict.fromkeys(capabilities, True))
    if not leader:
        caps[LEADER_CAPABILITY] = True
        allowed = check_allowed(cfg.cluster.allowed_members) or default_allowed(host)
        caps[ALLOWED_CAPABILITY] = [*allowed, node]  # a node always admits itself
    return host, caps


def connect(
    admin_port: int = DEFAULT_ADMIN_PORT,
    *,
    host: str = DEFAULT_BIND,
    bind: str | None = None,
    make_default: bool = True,
) -> DataLogger:
    """Attach to a node running on ``host:admin_port`` (started by another process).

    The node may run on another host: this process then listens for the
    node's answers on its own address towards ``host`` (the source address of
    the route there), or on ``bind``.

    Raises:
        NotRunning: nothing listens there.
        DataLoggerError: no route leads to ``host``, or ``bind`` is not an address of this host.
    """
    target = resolve(host)
    if bind is None:
        own = address_towards(target)
    else:
        own = resolve(bind)
        if not is_own_address(own):
            raise exceptions.ConfigError(f"bind must be an address of this host, not {bind!r}")
    if not port_open(target, admin_port, source=own):
        raise NotRunning(f"no datalogger node is listening on {host}:{admin_port} (seen from {own})")
    caps = {"Admin Port": admin_port, ADMIN_HOST_CAPABILITY: target, BIND_CAPABILITY: own}
    with reap_on_failure():
        system = ActorSystem("multiprocTCPBase", caps, logDefs=log_defs(), transientUnique=True)
    router = system.createActor(RootSupervisor, globalName=ROOT_NAME)
    handle = DataLogger(system, router, config=None, owns_system=False, admin_port=admin_port)
    handle.node = f"{target}:{admin_port}"
    if make_default:
        _set_default(handle)
    return handle


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
