"""Starting a node and connecting to one: the two ways to get a :class:`~datalogger.DataLogger`.

Both are re-exported by :mod:`datalogger.system` and :mod:`datalogger`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from thespian.actors import ActorSystem

from . import exceptions, lifeline, security
from ._endpoint import Endpoint
from ._startup import check_data_dir, reap_on_failure
from ._thespian import (
    ADMIN_HOST_CAPABILITY,
    ALLOWED_CAPABILITY,
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
from .config import Config, load_config
from .connection import Link, LocalLink, NodeLink
from .exceptions import DataLoggerError, NotRunning
from .messages import ConfigureNode, NodeReady, NodeStartFailed
from .system import DataLogger, _set_default

__all__ = ["BASES", "PORT_WAIT", "START_TIMEOUT", "connect", "start"]

BASES = ("multiprocTCPBase", "simpleSystemBase")
"""The Thespian system bases a node can run on."""
START_TIMEOUT = 30.0
"""Seconds a node gets to answer that it is ready."""
PORT_WAIT = 5.0
"""Seconds ``start()`` waits for an admin port still held by a node that is shutting down."""


def _wait_for_port(host: str, port: int, wait: float = PORT_WAIT) -> None:
    """Return once ``host:port`` can take the admin; wait up to ``wait`` s for a node shutting down.

    Raises:
        DataLoggerError: a running node (or another program) keeps the port.
    """
    try:
        check_port_free(host, port, "admin port")
        return
    except DataLoggerError:
        if not port_open(host, port):
            raise  # not in use, but unusable: nothing to wait for
    endpoint = Endpoint(port, host, address_towards(host))
    try:
        state = endpoint.admin_state(min(1.0, wait))
    finally:
        endpoint.close()
    if state == "running":
        raise DataLoggerError(
            f"admin port {host}:{port} is already in use: a node runs there (use datalogger.connect)"
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            check_port_free(host, port, "admin port")
            return
        except DataLoggerError:
            time.sleep(0.05)
    raise DataLoggerError(
        f"admin port {host}:{port} is already in use: a node (or another program) listens there "
        f"and did not let it go within {wait:g}s"
    )


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
    exit_with_process: bool = True,
) -> DataLogger:
    """Start a node and return its handle.

    Everything the node needs is checked before this returns: the data
    directory can be created and written, the admin port is free, the
    process-status adapter opens. A start that fails raises and leaves no
    process behind.

    Args:
        config: a dict, a TOML file path or a :class:`Config`; ``None`` for the
            embedded default (SQLite and JSONL). Its ``connect_timeout``,
            ``client_buffer_rows``, ``spool_dir`` and ``spool_max_bytes`` set
            the handle's client options.
        base: ``"multiprocTCPBase"`` (a process per actor) or ``"simpleSystemBase"``
            (one process, for tests and scripts).
        admin_port: the node's admin port (default 1900). If a node that is
            shutting down still holds it, ``start()`` waits up to 5 s for it.
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
        exit_with_process: stop the node's processes when this process ends,
            even by SIGKILL (they run detached from it). False leaves the node
            running until :meth:`DataLogger.shutdown` or ``datalogger shutdown``.

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
    host = DEFAULT_BIND
    if base != "multiprocTCPBase" and (leader or capabilities or bind):
        raise exceptions.ConfigError("leader, bind and capabilities need base='multiprocTCPBase'")
    check_data_dir(cfg.data_dir)
    if base == "multiprocTCPBase":
        security.install_node(cfg)  # before any endpoint or actor system: every frame is signed
        host, caps = _node_capabilities(cfg, port, bind, leader, capabilities)
        node = f"{host}:{port}"
        if leader:
            security.probe(*caps["Convention Address.IPv4"])  # a leader with another secret: say so now
    level = (
        log_level if isinstance(log_level, int) else getattr(__import__("logging"), str(log_level).upper())
    )
    # The first node started in a process becomes Thespian's process-wide system, so that
    # ActorSystem().tell(dl.router, Log(...)) reaches it; later ones are kept apart.
    first = getattr(ActorSystem, "systemBase", None) is None
    owner = lifeline.identity() if exit_with_process and base == "multiprocTCPBase" else None
    with reap_on_failure():
        system = ActorSystem(base, caps, logDefs=log_defs(level), transientUnique=not first)
        try:
            router = system.createActor(RootSupervisor, globalName=ROOT_NAME)
            configure = ConfigureNode(cfg, node, leader, tuple(capabilities), owner)
            ready = system.ask(router, configure, START_TIMEOUT)
            if isinstance(ready, NodeStartFailed):
                raise DataLoggerError(f"the node did not start: {ready.reason}")
            if not isinstance(ready, NodeReady):
                raise DataLoggerError(
                    f"the node did not start: no answer within {START_TIMEOUT:g}s (answer: {ready!r})"
                )
        except BaseException:
            system.shutdown()
            raise
    link: Link
    if base == "multiprocTCPBase":
        link = NodeLink(port, cfg.connect_timeout, router, admin_host=host, bind=host)
    else:
        link = LocalLink(system, router)
    handle = DataLogger(
        link,
        system=system,
        config=cfg,
        owns_system=True,
        admin_port=port if base == "multiprocTCPBase" else None,
        log_timeout=cfg.log_timeout,
        connect_timeout=cfg.connect_timeout,
        client_buffer_rows=cfg.client_buffer_rows,
        spool_dir=cfg.spool_dir,
        spool_max_bytes=cfg.spool_max_bytes,
    )
    handle.node = node
    security.register(handle)
    if make_default:
        _set_default(handle)
    return handle


def _node_capabilities(
    cfg: Config, port: int, bind: str | None, leader: str | None, capabilities: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """Where a TCP node listens, and the capabilities of its actor system.

    Raises:
        ConfigError: ``leader`` is not ``host:port``, or ``bind`` is not an address of this host.
        DataLoggerError: the admin port is taken (a node shutting down gets 5 s to let it go).
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
    _wait_for_port(host, port)
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
    require_node: bool = True,
    connect_timeout: float = 2.0,
    log_timeout: float = 30.0,
    client_buffer_rows: int = 100_000,
    spool_dir: str | os.PathLike[str] | None = None,
    spool_max_bytes: int = 1 << 30,
    secret_file: str | os.PathLike[str] | None = None,
    config: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> DataLogger:
    """Attach to a node running on ``host:admin_port`` (started by another process).

    The node may run on another host: this process then listens for the
    node's answers on its own address towards ``host`` (the source address of
    the route there), or on ``bind``.

    Args:
        admin_port: the node's admin port.
        host: the node's address.
        bind: the address of this host to listen on for the node's answers.
        make_default: make this the instance module-level :func:`log` uses
            (unless one is already set).
        require_node: raise :class:`NotRunning` when no node answers now.
            False returns a handle anyway: ``log_nowait()`` queues until the
            node is there, blocking calls raise ``NotRunning`` until then.
        connect_timeout: seconds a call may take to get a message to the node.
        log_timeout: seconds :meth:`DataLogger.log` waits for the node's answer.
        client_buffer_rows: rows (and events) the fire-and-forget calls keep in
            memory while the node is away.
        spool_dir: where rows that wait for the node are kept on disk, across
            restarts of this application; None keeps them in memory only.
        spool_max_bytes: most bytes this process keeps in ``spool_dir``.
        secret_file: the node's secret, which every frame is signed with. Unset,
            it is looked for as ``config`` names it (``security.secret_file``),
            then in the file named by ``DATALOGGER_SECRET_FILE``, then in
            ``<data_dir>/secret``. A process that runs a node itself keeps that
            node's secret when none of these is given.
        config: the node's configuration (a dict, TOML path or ``Config``), for
            its ``security`` table and ``data_dir``.
        data_dir: the node's data directory (default: ``config``'s, else
            ``.datalogger``), for ``<data_dir>/secret``.

    Raises:
        NotRunning: nothing answers there (with ``require_node``).
        DataLoggerError: no route leads to ``host``, or ``bind`` is not an address of this host.
        SecurityError: the secret cannot be read, or the node does not take this
            process's frames (it has another secret).
    """
    target = resolve(host)
    if bind is None:
        own = address_towards(target)
    else:
        own = resolve(bind)
        if not is_own_address(own):
            raise exceptions.ConfigError(f"bind must be an address of this host, not {bind!r}")
    security.install_client(secret_file, load_config(config) if config is not None else None, data_dir)
    link = NodeLink(admin_port, connect_timeout, admin_host=target, bind=own)
    if require_node:
        if not port_open(target, admin_port, timeout=min(1.0, connect_timeout), source=own):
            raise NotRunning(f"no datalogger node is listening on {host}:{admin_port} (seen from {own})")
        security.probe(target, admin_port, source=own)
        link.request_router()
    handle = DataLogger(
        link,
        config=None,
        owns_system=False,
        admin_port=admin_port,
        log_timeout=log_timeout,
        connect_timeout=connect_timeout,
        client_buffer_rows=client_buffer_rows,
        spool_dir=spool_dir,
        spool_max_bytes=spool_max_bytes,
    )
    handle.node = f"{target}:{admin_port}"
    security.register(handle)
    if make_default:
        _set_default(handle)
    return handle
