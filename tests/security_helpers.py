"""Classes the security tests send in frames (importable, as pickles need)."""

from __future__ import annotations

import os
from typing import Any

import attrs


@attrs.frozen
class Event:
    """A user's own event class, outside datalogger's allow list."""

    name: str


class Exploit:
    """A pickle that runs ``touch <marker>`` in whatever unpickles it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class AttributeChain:
    """A pickle that fetches an attribute of an allowed class: the first step of many exploits."""

    def __reduce__(self) -> tuple[Any, ...]:
        from datalogger.messages import Log

        return (getattr, (Log, "__init__"))
