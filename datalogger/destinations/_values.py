"""How the built-in destinations write values msgpack carries but their targets lack.

One place for the rules, so that every destination page can say the same:

=================  ==================================================
Python value       JSON (JSONL, console, JSON columns, nested values)
=================  ==================================================
``datetime``       ISO 8601 text (``2024-05-01T12:30:00+00:00``)
``date``, ``time`` ISO 8601 text
``timedelta``      a number of seconds (``90.5``)
``Decimal``        its exact text (``"1.10"``), as a string
``UUID``           its text (``"1b4e28ba-..."``)
``bytes``          base64 text
=================  ==================================================
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

__all__ = ["json_default", "to_json"]


def json_default(value: Any) -> Any:
    """``json.dumps``'s ``default``: the JSON form of the types above (``str`` for others)."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


_ENCODER = json.JSONEncoder(default=json_default, separators=(",", ":"))
"""Made once: ``json.dumps`` with any option builds a new encoder on every call."""


def to_json(value: Any) -> str:
    """Compact JSON text of ``value``, with the rules above."""
    return _ENCODER.encode(value)
