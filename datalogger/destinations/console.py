"""Console: prints each row, for trying things out.

Options:

``stream`` (``"stdout"``)
    ``"stdout"`` or ``"stderr"``.
"""

from __future__ import annotations

import json
import sys

from ..exceptions import ConfigError
from .base import Destination, Rows

__all__ = ["ConsoleDestination"]


class ConsoleDestination(Destination):
    """Prints ``topic {json row}`` lines."""

    def __init__(self, *, stream: str = "stdout") -> None:
        if stream not in ("stdout", "stderr"):
            raise ConfigError(f"console stream must be stdout or stderr, not {stream!r}")
        self.stream = stream

    def send_data(self, topic: str, data: Rows) -> int:
        """Print the rows; return how many were printed."""
        out = sys.stdout if self.stream == "stdout" else sys.stderr
        out.write("".join(f"{topic} {json.dumps(row, default=str)}\n" for row in data))
        out.flush()
        return len(data)
