"""Health checks: is every destination delivering, and are there no dead letters?

:func:`find_problems` is the rule, a plain function (:func:`check_health` gives
its sentences; the dashboard turns a row red for each problem); :func:`run_health` is
``datalogger health``: it asks a running node for its ``stats()``, reads the
dead letters of its data directory and prints the verdict. Exit codes:

- 0: ``healthy``;
- 1: problems, one line each: the node refused by its convention's leader
  (not in its ``cluster.allowed_members``), a topic whose write-ahead log
  cannot be opened, or that holds damaged records, a destination failing for
  longer than the threshold (``health_failing_after``, default 60 s), dead
  letters on disk, or topics that did not answer;
- 2: no node answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import attrs

from .deadletters import DeadLetterSummary

__all__ = ["HealthProblem", "add_parser", "check_health", "cmd_health", "find_problems", "run_health"]

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_NO_NODE = 2


@attrs.frozen
class HealthProblem:
    """One reason a node is unhealthy, tied to the (topic, destination) it concerns."""

    topic: str
    """The topic ("" for a problem of the whole node)."""
    destination: str
    """The destination ("" for a problem of the whole node)."""
    kind: str
    """``"failing"`` (failing for longer than the threshold), ``"dead_letters"`` (on disk),
    ``"wal_error"`` (the topic's log cannot be opened), ``"wal_damaged"`` (damaged records
    found in it), ``"unanswered"`` (its supervisor did not answer; no destination) or
    ``"refused"`` (the node's convention leader will not have it; no topic)."""
    message: str
    """The sentence ``datalogger health`` prints."""


def find_problems(
    stats: Mapping[str, Any],
    dead_letter_summary: Iterable[DeadLetterSummary] | None,
    failing_after: float,
    now: float,
) -> list[HealthProblem]:
    """The problems a node has, each tied to its (topic, destination); empty means healthy.

    The one rule behind ``datalogger health`` and the dashboard's red rows; see
    :func:`check_health` for the arguments.
    """
    problems: list[HealthProblem] = []
    cluster = stats.get("cluster") or {}
    if cluster.get("refused"):
        message = f"node {cluster.get('node')} is refused by its leader: {cluster['refused']}"
        problems.append(HealthProblem("", "", "refused", message))
    for topic, destinations in sorted((stats.get("topics") or {}).items()):
        problems.extend(_log_problems(topic, destinations))
        for destination, lane in sorted(destinations.items()):
            since = lane.get("failing_since")
            if since is None:
                continue
            failing_for = now - float(since)
            if failing_for > failing_after:
                error = lane.get("last_error") or "unknown error"
                problems.append(
                    HealthProblem(
                        topic,
                        destination,
                        "failing",
                        f"{topic} -> {destination}: failing for {failing_for:.0f}s "
                        f"(more than {failing_after:g}s); last error: {error}",
                    )
                )
    for topic in stats.get("unanswered") or ():
        message = f"{topic}: its TopicSupervisor did not answer stats() in time"
        problems.append(HealthProblem(topic, "", "unanswered", message))
    for item in dead_letter_summary or ():
        if item.letters > 0:
            problems.append(
                HealthProblem(
                    item.topic,
                    item.destination,
                    "dead_letters",
                    f"{item.topic} -> {item.destination}: {item.letters} dead letters "
                    f"({item.rows} rows) on disk; last reason: {item.last_reason} "
                    "(see `datalogger dead-letters list`, `datalogger replay`)",
                )
            )
    return problems


def _log_problems(topic: str, destinations: Mapping[str, Any]) -> list[HealthProblem]:
    """The topic's write-ahead log problems, tied to each of its destinations."""
    lanes = list(destinations.values())
    found: list[tuple[str, str]] = []
    wal_error = next((lane.get("wal_error") for lane in lanes if lane.get("wal_error")), None)
    if wal_error:
        found.append(("wal_error", f"{topic}: its write-ahead log cannot be written: {wal_error}"))
    damaged = max((int(lane.get("wal_corrupt_records") or 0) for lane in lanes), default=0)
    if damaged:
        found.append((
            "wal_damaged",
            f"{topic}: {damaged} damaged record(s) in its write-ahead log; their chunks are "
            "lost (see the node's log for the files and offsets)",
        ))
    return [
        HealthProblem(topic, destination, kind, message)
        for kind, message in found
        for destination in sorted(destinations)
    ]


def check_health(
    stats: Mapping[str, Any],
    dead_letter_summary: Iterable[DeadLetterSummary] | None,
    failing_after: float,
    now: float,
) -> list[str]:
    """The problems a node has; an empty list means healthy.

    Args:
        stats: a node's ``stats()``.
        dead_letter_summary: ``DeadLetterStore.summary()`` of the node's data
            directory, or ``None`` when it is not known (not checked).
        failing_after: seconds a destination may keep failing before it is a problem.
        now: the current time (epoch seconds).

    Returns:
        One sentence per problem: the node refused by its convention's
        leader, each topic whose write-ahead log cannot be opened or holds
        damaged records, each (topic, destination) failing for more than
        ``failing_after`` seconds, each topic that did not answer, then each
        (topic, destination) with dead letters.
    """
    messages = [p.message for p in find_problems(stats, dead_letter_summary, failing_after, now)]
    return list(dict.fromkeys(messages))  # a topic's problem is tied to each of its destinations


def run_health(
    *,
    admin_port: int,
    host: str,
    failing_after: float,
    data_dir: str | os.PathLike[str] | None,
    out: TextIO,
    bind: str | None = None,
    secret_file: str | None = None,
    config: Any = None,
) -> int:
    """Check the node on ``host:admin_port``, print the verdict to ``out``, return the exit code.

    Args:
        admin_port: the node's admin port.
        host: the node's address.
        bind: the address of this host to take the node's answers on
            (default: this host's address towards ``host``).
        failing_after: seconds a destination may keep failing.
        data_dir: the node's data directory, for its dead letters; ``None``
            skips that check (and says so).
        out: where to print.
        secret_file: the node's secret file (see :func:`datalogger.connect`).
        config: the node's configuration, where the secret may be named.
    """
    from .deadletters import DeadLetterStore
    from .exceptions import DataLoggerError
    from .system import connect

    try:
        handle = connect(
            admin_port,
            host=host,
            bind=bind,
            make_default=False,
            secret_file=secret_file,
            config=config,
            data_dir=data_dir,
        )
        try:
            stats = handle.stats(detail=True)  # every topic, however many
        finally:
            handle.close()
    except DataLoggerError as exc:
        print(f"no node answers on {host}:{admin_port}: {exc}", file=out)
        return EXIT_NO_NODE
    summary = None
    if data_dir is not None:
        summary = DeadLetterStore(os.path.join(data_dir, "dead_letters")).summary()
    problems = check_health(stats, summary, failing_after, time.time())
    if problems:
        print(f"unhealthy: {len(problems)} problem(s)", file=out)
        for problem in problems:
            print(f"- {problem}", file=out)
        return EXIT_UNHEALTHY
    note = "" if data_dir is not None else " (dead letters not checked: no --config, --data-dir)"
    print(f"healthy{note}", file=out)
    return EXIT_HEALTHY


def cmd_health(args: Any) -> int:
    """``datalogger health``: the threshold and data directory from the options or the config."""
    import sys

    from ._thespian import DEFAULT_ADMIN_PORT
    from .config import load_config

    failing_after = 60.0
    data_dir: str | None = None
    config = None
    if args.config:
        config = load_config(args.config)
        failing_after, data_dir = config.health_failing_after, config.data_dir
    if args.failing_after is not None:
        failing_after = args.failing_after
    if args.data_dir:
        data_dir = os.path.abspath(args.data_dir)
    port = args.admin_port or int(os.environ.get("DATALOGGER_ADMIN_PORT", DEFAULT_ADMIN_PORT))
    return run_health(
        admin_port=port,
        host=args.host,
        failing_after=failing_after,
        data_dir=data_dir,
        out=sys.stdout,
        bind=args.bind,
        secret_file=args.secret_file,
        config=config,
    )


def add_parser(sub: Any) -> None:
    """Add the ``health`` command to the ``datalogger`` command's subparsers."""
    from .cli import add_node_args

    p = sub.add_parser(
        "health",
        help="exit 0 when the node is healthy, 1 with the reasons when not, 2 when it is not found",
    )
    p.add_argument("--config", help="the node's TOML configuration (threshold and data_dir)")
    p.add_argument(
        "--failing-after",
        type=float,
        help="seconds a destination may keep failing (default: the config's "
        "health_failing_after, else 60)",
    )
    p.add_argument("--data-dir", help="the node's data_dir, for its dead letters")
    add_node_args(p)
    p.add_argument("--secret-file", help="the node's secret file (default: as `datalogger status`)")
    p.set_defaults(func=cmd_health)
