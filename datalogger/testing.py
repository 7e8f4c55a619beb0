"""Helpers for testing code that uses datalogger.

:class:`CapturingDestination` records what it is sent. In one process
(``simpleSystemBase``) read :attr:`CapturingDestination.captured`; across
processes (``multiprocTCPBase``) give it a ``directory`` and read the rows back
with :func:`read_captured`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

from .destinations._values import to_json
from .destinations.base import Destination
from .names import file_name
from .validation import validate_topic

__all__ = ["CapturingDestination", "read_captured"]


class CapturingDestination(Destination):
    """Keeps every row (or any item) it is sent: in memory, and in ``directory`` if one is given."""

    takes_any_data = True

    #: Rows per topic captured in this process, by every instance.
    captured: dict[str, list[Any]] = defaultdict(list)

    def __init__(self, *, directory: str | None = None) -> None:
        self.directory = directory

    def send_data(self, topic: str, data: list[Any]) -> int:
        """Record the rows."""
        CapturingDestination.captured[topic].extend(data)
        if self.directory is not None:
            os.makedirs(self.directory, exist_ok=True)
            path = os.path.join(self.directory, file_name(validate_topic(topic)) + ".jsonl")
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("".join(to_json(r) + "\n" for r in data))
        return len(data)


def read_captured(directory: str, topic: str) -> list[Any]:
    """Rows a :class:`CapturingDestination` with ``directory`` captured for ``topic``."""
    path = os.path.join(directory, file_name(validate_topic(topic)) + ".jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
