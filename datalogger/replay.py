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

    A letter that fails again stays in the store. Destinations are built from
    ``config``, so a fixed configuration (a corrected DSN, a new column) applies.
    """
    specs = {spec.name: spec for spec in config.destinations}
    if destination is not None and destination not in specs:
        raise ConfigError(f"no destination named {destination!r} in the configuration")
    store = DeadLetterStore(os.path.join(config.data_dir, "dead_letters"))
    letters = list(store.letters(topic=topic, destination=destination))
    hosts: dict[tuple[str, str], DestinationHost] = {}
    done: dict[tuple[str, str], set[str]] = {}
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
                attempt = host.send(letter.rows)
                if attempt.ok:
                    done.setdefault(key, set()).add(letter.id)
                    delivered_rows += len(letter.rows)
                else:
                    failed += 1
                    last_error = describe(attempt.error) if attempt.error else "failed"
                    host.restart()
                progress.advance(task)
    finally:
        for host in hosts.values():
            host.close()
        for (letter_topic, letter_destination), ids in done.items():
            store.remove(letter_topic, letter_destination, ids)
    return ReplayResult(sum(len(i) for i in done.values()), delivered_rows, failed, last_error)
