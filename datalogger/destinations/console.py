"""Console: prints each row (or any item logged), for trying things out.

Options:

``stream`` (``"stdout"``)
    ``"stdout"`` or ``"stderr"``.
"""

from __future__ import annotations

import sys
from typing import Any

from ..exceptions import ConfigError
from ._values import to_json
from .base import Destination

__all__ = ["ConsoleDestination"]


class ConsoleDestination(Destination):
    """Prints ``topic {json row}`` lines."""

    takes_any_data = True

    def __init__(self, *, stream: str = "stdout") -> None:
        if stream not in ("stdout", "stderr"):
            raise ConfigError(f"console stream must be stdout or stderr, not {stream!r}")
        self.stream = stream

    def send_data(self, topic: str, data: list[Any]) -> int:
        """Print the items; return how many were printed."""
        out = sys.stdout if self.stream == "stdout" else sys.stderr
        out.write("".join(f"{topic} {to_json(item)}\n" for item in data))
        out.flush()
        return len(data)
