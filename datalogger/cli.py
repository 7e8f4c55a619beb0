"""The ``datalogger`` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__, health, keyfiles
from ._thespian import DEFAULT_ADMIN_PORT, DEFAULT_BIND, check_port_free, port_open
from .analytics import cli as analytics_cli
from .config import default_config, load_config
from .dashboard import cli as dashboard_cli
from .exceptions import DataLoggerError
from .lane import COUNTER_NAMES

__all__ = ["main"]

console = Console()
errors = Console(stderr=True)


def _admin_port(args: argparse.Namespace) -> int:
    if getattr(args, "admin_port", None):
        return int(args.admin_port)
    return int(os.environ.get("DATALOGGER_ADMIN_PORT", DEFAULT_ADMIN_PORT))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """Log a sample workload to SQLite and JSONL and show what landed where."""
    from .system import start

    base_dir = os.path.abspath(args.dir)
    config = default_config(base_dir)
    db_path = config["destinations"]["sqlite"]["path"]
    jsonl_dir = config["destinations"]["jsonl"]["directory"]
    for topic in ("green", "red"):
        Path(jsonl_dir, f"{topic}.jsonl").unlink(missing_ok=True)
    if os.path.exists(db_path):
        with sqlite3.connect(db_path) as conn:
            conn.execute('DROP TABLE IF EXISTS "green"')
            conn.execute('DROP TABLE IF EXISTS "red"')
    port = args.admin_port or _free_port()
    console.print(f"[bold]datalogger {__version__}[/] demo: a node on 127.0.0.1:{port} (multiprocTCPBase)")
    sent = {"green": 0, "red": 0}
    started = time.monotonic()
    with start(config, admin_port=port) as dl:
        for chunk in range(args.chunks):
            for topic, share in (("green", 3), ("red", 2)):
                rows = [
                    {
                        "id": chunk * 1000 + i,
                        "topic": topic,
                        "value": (chunk * 31 + i) % 97,
                        "ok": i % 5 != 0,
                    }
                    for i in range(share * 100)
                ]
                dl.log(topic, rows)
                sent[topic] += len(rows)
        dl.flush(timeout=60)
        stats = dl.stats()
    elapsed = time.monotonic() - started
    table = Table(title="What landed where (read back from the files and the database)")
    for column in (
        "topic",
        "rows logged",
        "SQLite rows",
        "JSONL lines",
        "delivered per stats() (sqlite/jsonl)",
    ):
        table.add_column(column, justify="right" if column != "topic" else "left")
    ok = True
    with sqlite3.connect(db_path) as conn:
        for topic, count in sent.items():
            in_db = conn.execute(f'SELECT count(*) FROM "{topic}"').fetchone()[0]
            with open(os.path.join(jsonl_dir, f"{topic}.jsonl"), encoding="utf-8") as handle:
                in_files = sum(1 for _ in handle)
            delivered = "/".join(str(stats["topics"][topic][d]["delivered"]) for d in ("sqlite", "jsonl"))
            ok = ok and in_db == count and in_files == count
            table.add_row(topic, str(count), str(in_db), str(in_files), delivered)
    console.print(table)
    console.print(f"SQLite: {db_path}\nJSONL:  {jsonl_dir}/{{green,red}}.jsonl")
    console.print(f"{sum(sent.values())} rows in {elapsed:.2f}s")
    if not ok:
        errors.print("[red]some rows are missing[/]")
        return 1
    console.print("[green]every row arrived[/]")
    return 0


# ---------------------------------------------------------------------- run / shutdown
def cmd_run(args: argparse.Namespace) -> int:
    """Start a node and keep it running until a signal or ``datalogger shutdown``.

    Exits 2 with the reason, and no process left, when the node cannot start.
    """
    from .system import start

    port = _admin_port(args)
    if args.metrics_port is not None:
        check_port_free("127.0.0.1", args.metrics_port, "metrics port")
    handle = start(
        args.config,
        admin_port=port,
        bind=args.bind,
        log_level=args.log_level,
        leader=args.leader,
        capabilities=args.capability,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.metrics_port is not None:
        from .metrics import serve_node_metrics

        try:
            server = serve_node_metrics(handle, args.metrics_port)
        except Exception as exc:
            handle.shutdown(timeout=2.0)
            raise DataLoggerError(f"cannot serve metrics on 127.0.0.1:{args.metrics_port}: {exc}") from exc
    assert handle.node is not None
    host = handle.node.rpartition(":")[0]
    console.print(f"datalogger node running on {handle.node} (pid {os.getpid()})")
    if args.metrics_port is not None:
        console.print(f"metrics on http://127.0.0.1:{server.server_port}/metrics")
    sys.stdout.flush()
    while not stop.wait(1.0):
        if not port_open(host, port):
            console.print("the node was shut down")
            return 0
    spilled = handle.shutdown()
    console.print(f"stopped; {spilled} rows left on disk for the next start")
    return 0


def _connect(args: argparse.Namespace) -> Any:
    """A handle on the node the client options name (``--host``, ``--admin-port``, ``--bind``),
    signing with the node's secret (``--secret-file``, ``--config``)."""
    from .system import connect

    return connect(
        _admin_port(args),
        host=args.host,
        bind=args.bind,
        make_default=False,
        secret_file=getattr(args, "secret_file", None),
        config=getattr(args, "config", None),
    )


def cmd_shutdown(args: argparse.Namespace) -> int:
    """Stop a running node: deliver what can be delivered, spill the rest."""
    handle = _connect(args)
    spilled = handle.shutdown(timeout=args.timeout)
    console.print(f"node on port {_admin_port(args)} stopped; {spilled} rows left on disk for the next start")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    """List the convention's members, their capabilities and the topics each holds."""
    handle = _connect(args)
    try:
        nodes = handle.nodes()
        dropped_from = handle.stats().get("security", {}).get("refused_peers", [])
    finally:
        handle.close()
    if args.json:
        print(json.dumps(nodes, indent=2))
        return 1 if any(node.get("state") == "refused" for node in nodes) else 0
    table = Table(title="datalogger nodes")
    for column in ("node", "state", "capabilities", "last heartbeat", "delivers (topic/destination)"):
        table.add_column(column)
    for node in nodes:
        age = time.time() - node["last_seen"]
        holds = "\n".join(node["holds"]) or "-"
        state = node.get("state", "member")
        table.add_row(
            node["node"], state, ", ".join(node["capabilities"]) or "-", f"{age:.1f}s ago", holds
        )
    console.print(table)
    refused = [node for node in nodes if node.get("state") == "refused"]
    for node in refused:
        errors.print(f"[red]node {node['node']} is refused by its leader:[/] {node.get('reason')}")
    for peer in dropped_from:
        errors.print(
            f"[red]refused[/] {peer['peer']}: {peer['frames']} frames dropped, the last "
            f"{time.time() - peer['last_at']:.0f}s ago ({peer['last_reason']}): a member or client "
            "without this node's secret"
        )
    return 1 if refused else 0


# ---------------------------------------------------------------------- log / status
def _json_lines(stream: Any) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataLoggerError(f"line {number} is not valid JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise DataLoggerError(f"line {number} is not a JSON object")
        yield row


def cmd_log(args: argparse.Namespace) -> int:
    """Log JSON lines from stdin or a file to a running node."""
    handle = _connect(args)
    stream = open(args.file, encoding="utf-8") if args.file else sys.stdin
    total = 0
    try:
        chunk: list[dict[str, Any]] = []
        for row in _json_lines(stream):
            chunk.append(row)
            if len(chunk) >= args.batch:
                handle.log(args.topic, chunk)
                total += len(chunk)
                chunk = []
        if chunk:
            handle.log(args.topic, chunk)
            total += len(chunk)
    finally:
        if args.file:
            stream.close()
        handle.close()
    console.print(f"logged {total} rows to {args.topic}")
    return 0


def stats_table(stats: dict[str, Any]) -> Table:
    """A rich table of ``stats()``."""
    table = Table(title="datalogger status")
    columns = (*COUNTER_NAMES, "buffered")
    table.add_column("topic")
    table.add_column("destination")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    table.add_column("last error")
    from .dashboard.pipeline import per_topic

    for topic, destinations in per_topic(stats).items():
        for name, counters in destinations.items():
            table.add_row(
                topic,
                name,
                *(str(counters.get(c, 0)) for c in columns),
                Text(counters.get("last_error") or ""),
            )
    return table


#: Narrower than this (or not a terminal), ``datalogger status`` prints the narrow layout.
WIDE_STATUS = 150


def cmd_status(args: argparse.Namespace) -> int:
    """Print the counters of a running node: a wide table on a wide terminal, else text lines."""
    from .dashboard.pipeline import pipeline_view, render_narrow

    handle = _connect(args)
    try:
        while True:
            stats = handle.stats()
            if args.json:
                print(json.dumps(stats, default=str, indent=2))
            elif console.is_terminal and console.width >= WIDE_STATUS:
                console.print(stats_table(stats))
                console.print(f"rejected calls: {stats.get('rejected', 0)}")
            else:
                view = pipeline_view(stats, None, float("inf"))
                console.print(render_narrow(view, console.width), markup=False, highlight=False)
            if not args.json:
                dropped = stats.get("security", {}).get("rejected_frames", 0)
                console.print(f"dropped frames (no valid signature, or a forbidden class): {dropped}")
            if not args.watch:
                return 0
            time.sleep(args.interval)
            console.clear()
    except KeyboardInterrupt:
        return 0
    finally:
        handle.close()


# ---------------------------------------------------------------------- dead letters
def _data_dir(args: argparse.Namespace) -> str:
    if args.data_dir:
        return os.path.abspath(args.data_dir)
    return load_config(args.config).data_dir


def cmd_dead_letters_list(args: argparse.Namespace) -> int:
    """Show dead letters per topic and destination."""
    from .deadletters import DeadLetterStore

    store = DeadLetterStore(os.path.join(_data_dir(args), "dead_letters"))
    summary = store.summary()
    table = Table(title="dead letters")
    for column in ("destination", "topic", "letters", "rows", "oldest", "newest", "last reason"):
        table.add_column(column)
    for item in summary:
        table.add_row(
            item.destination,
            item.topic,
            str(item.letters),
            str(item.rows),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.oldest)),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.newest)),
            item.last_reason,
        )
    console.print(table)
    console.print(f"{sum(i.letters for i in summary)} letters, {sum(i.rows for i in summary)} rows")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Send dead letters again through their destination; remove what was delivered."""
    from .replay import replay

    result = replay(load_config(args.config), topic=args.topic, destination=args.destination, console=console)
    console.print(
        f"replayed {result.delivered_letters} letters ({result.delivered_rows} rows); "
        f"{result.failed_letters} still failing"
    )
    return 0 if result.failed_letters == 0 else 1


# ---------------------------------------------------------------------- parser
def add_node_args(p: argparse.ArgumentParser) -> None:
    """The options of a command that talks to a running node: ``--admin-port``, ``--host``, ``--bind``."""
    p.add_argument("--admin-port", type=int, help=f"the node's admin port (default {DEFAULT_ADMIN_PORT})")
    p.add_argument("--host", default=DEFAULT_BIND, help="the node's address (default 127.0.0.1)")
    p.add_argument(
        "--bind",
        help="the address of this host to receive the node's answers on "
        "(default: this host's address towards --host)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``datalogger`` command."""
    parser = argparse.ArgumentParser(prog="datalogger", description=__doc__)
    parser.add_argument("--version", action="version", version=f"datalogger {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def node_args(p: argparse.ArgumentParser) -> None:
        add_node_args(p)
        keyfiles.add_arguments(p)

    p = sub.add_parser("demo", help="log a sample workload to SQLite and JSONL, show the result")
    p.add_argument(
        "--dir", default="datalogger-demo", help="where the demo writes (default ./datalogger-demo)"
    )
    p.add_argument("--chunks", type=int, default=10, help="chunks per topic (500 rows each round)")
    p.add_argument("--admin-port", type=int, default=None, help="admin port (default: a free one)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="start a node and keep it running")
    p.add_argument("--config", required=True, help="TOML configuration file")
    p.add_argument("--admin-port", type=int, help=f"admin port (default {DEFAULT_ADMIN_PORT})")
    p.add_argument(
        "--bind",
        help="the address of this host to listen on, by which other nodes reach this one "
        "(default: 127.0.0.1 for a leader; for a member, this host's address towards --leader)",
    )
    p.add_argument("--log-level", default="WARNING", help="log level of the actor processes")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (loopback only: the endpoint "
        "has no authentication; expose it through an authenticating proxy)",
    )
    p.add_argument("--leader", help="HOST:PORT of the node whose convention to join (default: lead one)")
    p.add_argument(
        "--capability", action="append", default=[], help="a capability this node offers (repeatable)"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("nodes", help="list the convention's members and what each delivers")
    node_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_nodes)

    p = sub.add_parser("shutdown", help="stop a running node")
    node_args(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to deliver before spilling")
    p.set_defaults(func=cmd_shutdown)

    p = sub.add_parser("log", help="log JSON lines from stdin or --file to a running node")
    p.add_argument("topic")
    p.add_argument("--file", help="read from this file instead of stdin")
    p.add_argument("--batch", type=int, default=1000, help="rows per chunk (default 1000)")
    node_args(p)
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("status", help="print the counters of a running node")
    node_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p.set_defaults(func=cmd_status)

    def data_args(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--config", help="the node's TOML configuration (for data_dir)")
        group.add_argument("--data-dir", help="the node's data_dir")

    p = sub.add_parser("dead-letters", help="inspect dead letters")
    dl_sub = p.add_subparsers(dest="dl_command", required=True)
    q = dl_sub.add_parser("list", help="dead letters per topic and destination")
    data_args(q)
    q.set_defaults(func=cmd_dead_letters_list)

    p = sub.add_parser("replay", help="send dead letters again")
    p.add_argument("--config", required=True, help="the node's TOML configuration")
    p.add_argument("--topic", help="only this topic")
    p.add_argument("--destination", help="only this destination")
    p.set_defaults(func=cmd_replay)

    analytics_cli.add_parser(sub)
    health.add_parser(sub)
    dashboard_cli.add_parser(sub)
    keyfiles.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``datalogger`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DataLoggerError as exc:
        errors.print(f"[red]error:[/] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
