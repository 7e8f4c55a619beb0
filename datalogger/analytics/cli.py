"""``datalogger analytics``: print a summary of the recorded requests.

::

    datalogger analytics                                  # the embedded default SQLite file
    datalogger analytics --db app.db --since 1h
    datalogger analytics --dsn postgresql://... --schema public --table requests --since 1d

The DSN may hold a password: it is never printed, also not in error messages.
Exit codes: 0 printed, 1 the rows could not be read, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any

from rich.console import Console

from ..config import default_config
from ..exceptions import DataLoggerError
from .summary import load_rows_postgres, load_rows_sqlite, parse_since, render_summary, summarize

__all__ = ["add_parser", "default_db", "run"]


def default_db() -> str:
    """The SQLite file of the embedded default configuration (``datalogger.start()``)."""
    return str(default_config()["destinations"]["sqlite"]["path"])


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``analytics`` subcommand to ``subparsers``; it sets ``func=run``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "analytics",
        help="summarise recorded HTTP requests",
        description="Summarise the requests the analytics middleware recorded: counts, top "
        "paths, status classes, latency percentiles, devices and referers.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--db", metavar="PATH", help=f"SQLite database file (default: {default_db()})"
    )
    source.add_argument("--dsn", metavar="DSN", help="PostgreSQL connection string")
    parser.add_argument(
        "--table", default="requests", help="table holding the rows (default: requests)"
    )
    parser.add_argument(
        "--schema", default="public", help="PostgreSQL schema of the table (default: public)"
    )
    parser.add_argument(
        "--since", metavar="DURATION", help="only the last DURATION, e.g. 90s, 30m, 1h, 2d, 1w"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    """Load the rows, summarise them and print the summary; return the exit code."""
    err = Console(stderr=True)
    now = datetime.now(timezone.utc)  # noqa: UP017 - Python 3.10
    since = None
    if getattr(args, "since", None):
        try:
            since = now - parse_since(args.since)
        except ValueError as exc:
            err.print(f"datalogger analytics: {exc}", markup=False, highlight=False)
            return 2
    try:
        if getattr(args, "dsn", None):
            rows = load_rows_postgres(args.dsn, schema=args.schema, table=args.table, since=since)
        else:
            rows = load_rows_sqlite(getattr(args, "db", None) or default_db(), args.table, since)
    except DataLoggerError as exc:
        err.print(f"datalogger analytics: {exc}", markup=False, highlight=False)
        return 1
    out = console or Console(file=sys.stdout)
    out.print(render_summary(summarize(rows, now=now, since=since)))
    return 0
