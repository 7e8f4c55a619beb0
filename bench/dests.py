"""Destinations for the benchmarks (importable: the node builds them in its own processes)."""

from __future__ import annotations

import json
import os
from typing import Any

from datalogger import DataLoggerError, Destination


class DestinationDown(DataLoggerError):
    """The flag file exists: the destination is "down" and the chunk is retried."""


class FlagDestination(Destination):
    """Down while ``flag`` exists; otherwise appends each row's ``i`` to ``<directory>/<topic>``.

    Args:
        directory: where the received rows are recorded, one JSON value a line.
        flag: path of the flag file; while it exists every ``send_data`` fails.
    """

    def __init__(self, *, directory: str, flag: str) -> None:
        self.directory = directory
        self.flag = flag

    def send_data(self, topic: str, data: list[dict[str, Any]]) -> int:
        """Record the rows, or raise :class:`DestinationDown` while the flag file exists."""
        if os.path.exists(self.flag):
            raise DestinationDown("destination down (flag file present)")
        os.makedirs(self.directory, exist_ok=True)
        text = "".join(json.dumps(row.get("i")) + "\n" for row in data)
        with open(os.path.join(self.directory, topic), "a", encoding="utf-8") as handle:
            handle.write(text)
        return len(data)


def recorded(directory: str, topic: str) -> list[Any]:
    """The ``i`` values :class:`FlagDestination` recorded for ``topic``."""
    path = os.path.join(directory, topic)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
