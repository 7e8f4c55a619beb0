"""``datalogger dashboard``: serve the dashboard page of a running node.

::

    datalogger dashboard --config datalogger.toml             # http://127.0.0.1:8050/
    datalogger dashboard --admin-port 1901 --port 0           # any free port
    datalogger dashboard --config datalogger.toml --allow-actions

``--config`` gives the history table, the dead letters, the health threshold
and the ``[dashboard]`` settings; without it the page shows live requests and
``stats()`` only. The node is found on ``--host``:``--admin-port`` (default:
``$DATALOGGER_ADMIN_PORT`` or 1900). The page listens on 127.0.0.1 unless
``--bind`` says otherwise, and answers only to the ``Host`` names of
``--allowed-host`` (default: loopback names and the bind address), which stops
DNS-rebinding pages. Exit codes: 0 stopped by a signal, 2 no node or bad options.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys
from typing import Any

__all__ = ["add_parser", "run"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``dashboard`` subcommand to ``subparsers``; it sets ``func=run``."""
    from .._thespian import DEFAULT_ADMIN_PORT, DEFAULT_BIND
    from .requests import WINDOWS

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dashboard",
        help="serve a web page with live request analytics and pipeline health",
        description="Serve the dashboard of a running node: live request analytics and the "
        "health of every topic and destination.",
    )
    parser.add_argument("--config", help="the node's TOML configuration (history, dead letters)")
    parser.add_argument(
        "--admin-port", type=int, help=f"the node's admin port (default {DEFAULT_ADMIN_PORT})"
    )
    parser.add_argument("--host", default=DEFAULT_BIND, help="the node's address (default 127.0.0.1)")
    parser.add_argument(
        "--secret-file", help="the node's secret file (default: as `datalogger status`, see docs/security.md)"
    )
    parser.add_argument("--port", type=int, help="the page's port (default: dashboard.port, 8050)")
    parser.add_argument(
        "--bind",
        help="address the page listens on (default: dashboard.bind, 127.0.0.1); the page shows "
        "request paths and errors to whoever reaches it",
    )
    parser.add_argument(
        "--window", choices=WINDOWS, help="the analytics window the page opens with (default 1h)"
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host header name the page answers to (repeatable; default: loopback and --bind)",
    )
    parser.add_argument(
        "--allow-actions",
        action="store_true",
        help="offer replay and shutdown buttons, guarded by a token printed at start",
    )
    parser.set_defaults(func=run)
    return parser


def _listen(bind: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _allowed_hosts(bind: str, extra: list[str]) -> list[str] | None:
    names = [*LOOPBACK_HOSTS, *extra]
    try:
        wildcard = ipaddress.ip_address(bind).is_unspecified
    except ValueError:
        wildcard = False
    if not wildcard:
        names.append(f"[{bind}]" if ":" in bind else bind)
    return sorted(set(names))


def run(args: argparse.Namespace) -> int:
    """Serve the dashboard until SIGINT/SIGTERM; return the exit code."""
    from .._thespian import DEFAULT_ADMIN_PORT, port_open
    from ..config import load_config
    from ..exceptions import ConfigError

    try:
        import uvicorn

        from .core import Dashboard
        from .web import build_app
    except ImportError as exc:
        raise ConfigError(
            f"the dashboard needs Starlette and uvicorn: pip install 'datalogger[dashboard]' ({exc})"
        ) from exc

    config = load_config(args.config) if args.config else None
    settings = config.dashboard if config is not None else None
    port = args.port if args.port is not None else (settings.port if settings else 8050)
    bind = args.bind or (settings.bind if settings else "127.0.0.1")
    admin_port = args.admin_port or int(os.environ.get("DATALOGGER_ADMIN_PORT", DEFAULT_ADMIN_PORT))
    if not port_open(args.host, admin_port):
        print(f"datalogger dashboard: no node answers on {args.host}:{admin_port}", file=sys.stderr)
        return 2

    def connect() -> Any:
        from ..system import connect as connect_node

        return connect_node(
            admin_port, host=args.host, make_default=False, secret_file=args.secret_file, config=config
        )

    dashboard = Dashboard(
        connect=connect,
        alive=lambda: port_open(args.host, admin_port),
        config=config,
        window=args.window,
        allow_actions=args.allow_actions,
    )
    try:
        sock = _listen(bind, port)
    except OSError as exc:
        print(f"datalogger dashboard: cannot listen on {bind}:{port}: {exc}", file=sys.stderr)
        return 2
    application = build_app(dashboard, allowed_hosts=_allowed_hosts(bind, args.allowed_host))
    host, real_port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"dashboard of node {args.host}:{admin_port} on http://{shown}:{real_port}/", flush=True)
    if dashboard.allow_actions:
        print(f"actions token: {dashboard.token}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            application,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
            access_log=False,
        )
    )

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    # uvicorn handles SIGINT/SIGTERM while serving, then raises the signal again:
    # end quietly on either, not with a KeyboardInterrupt or killed by SIGTERM.
    signal.signal(signal.SIGTERM, stop)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        dashboard.close()
        sock.close()
    return 0
