"""JSONL: a file of JSON lines per topic in a directory.

Options:

``directory`` (required)
    Where the files go: ``<directory>/<topic>.jsonl``. Created if missing.
``fsync`` (``false``)
    ``true`` to fsync each chunk before reporting it delivered.

Topic names cannot hold a path separator (``[A-Za-z0-9_.:-]`` only, and not
``.`` or ``..``), so a file can never land outside ``directory``.
"""

from __future__ import annotations

import json
import os

from ..validation import validate_topic
from .base import Destination, Rows

__all__ = ["JsonlDestination"]


class JsonlDestination(Destination):
    """Appends each chunk's rows as JSON lines to ``<directory>/<topic>.jsonl``."""

    def __init__(self, *, directory: str, fsync: bool = False) -> None:
        self.directory = os.path.abspath(directory)
        self.fsync = fsync

    def path_for(self, topic: str) -> str:
        """The file a topic is written to."""
        return os.path.join(self.directory, validate_topic(topic) + ".jsonl")

    def send_data(self, topic: str, data: Rows) -> int:
        """Append the rows; return how many were written."""
        text = "".join(json.dumps(row, default=str, separators=(",", ":")) + "\n" for row in data)
        os.makedirs(self.directory, exist_ok=True)
        with open(self.path_for(topic), "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
        return len(data)
