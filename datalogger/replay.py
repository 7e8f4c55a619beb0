"""Replaying dead letters through their destination."""

from __future__ import annotations

import os
from typing import Any

import attrs
from rich.console import Console
from rich.progress import Progress

from .config import Config
from .deadletters import DeadLetterStore
from .delivery import DestinationHost, describe
from .exceptions import ConfigError
from .isolation import deliver_isolating

__all__ = ["ReplayResult", "replay"]


@attrs.frozen
class ReplayResult:
    """What a replay did."""

    delivered_letters: int
    delivered_rows: int
    failed_letters: int
    last_error: str | None = None


def replay(
    config: Config,
    *,
    topic: str | None = None,
    destination: str | None = None,
    console: Console | None = None,
) -> ReplayResult:
    """Send dead letters again, directly through their destination, and remove those delivered.

    A letter whose rows all fail again stays in the store as it was. When only
    some of its rows fail again (found as in delivery, by bisection), the rows
    that went through are removed from it and it keeps the others, each with
    its new error. Destinations are built from ``config``, so a fixed
    configuration (a corrected DSN, a new column) applies.
    """
    specs = {spec.name: spec for spec in config.destinations}
    if destination is not None and destination not in specs:
        raise ConfigError(f"no destination named {destination!r} in the configuration")
    store = DeadLetterStore(os.path.join(config.data_dir, "dead_letters"))
    letters = list(store.letters(topic=topic, destination=destination))
    hosts: dict[tuple[str, str], DestinationHost] = {}
    done: dict[tuple[str, str], set[str]] = {}
    partly: dict[tuple[str, str], dict[str, tuple[list[Any], list[str]]]] = {}
    delivered_rows = failed = 0
    last_error: str | None = None
    progress_console: Any = console or Console(stderr=True)
    try:
        with Progress(console=progress_console, transient=False) as progress:
            task = progress.add_task("replaying dead letters", total=len(letters))
            for letter in letters:
                spec = specs.get(letter.destination)
                if spec is None:
                    failed += 1
                    last_error = f"destination {letter.destination!r} is not configured"
                    progress.advance(task)
                    continue
                key = (letter.topic, letter.destination)
                host = hosts.setdefault(key, DestinationHost(spec, letter.topic))
                outcome = deliver_isolating(host.send, letter.rows)
                delivered_rows += len(outcome.delivered)
                if len(outcome.delivered) == len(letter.rows):
                    done.setdefault(key, set()).add(letter.id)
                else:
                    failed += 1
                    if outcome.transient is not None:
                        last_error = describe(outcome.transient)
                        host.restart()
                    else:
                        last_error = next(iter(outcome.dead.values()), "failed")
                    if outcome.delivered:
                        old = letter.row_errors()
                        left = sorted([*outcome.dead, *outcome.pending])
                        rows = [letter.rows[i] for i in left]
                        errors = [outcome.dead.get(i, old[i]) for i in left]
                        partly.setdefault(key, {})[letter.id] = (rows, errors)
                progress.advance(task)
    finally:
        for host in hosts.values():
            host.close()
        for key in {*done, *partly}:
            store.remove(*key, done.get(key, set()), keep=partly.get(key))
    return ReplayResult(sum(len(i) for i in done.values()), delivered_rows, failed, last_error)
