"""Sending one chunk through a destination and classifying the outcome.

Plain code shared by the DestinationWorker (synchronous sends) and the
SendActor (``send_async``). Every call into user code is guarded: an exception
from ``send_data``, ``on_success``, ``on_error`` or ``close`` becomes a result,
never a crash of the actor that made the call.
"""

from __future__ import annotations

import logging
import pickle
import traceback
from collections.abc import Sequence
from typing import Any

import attrs

from .config import DestinationSpec, resolve_class
from .exceptions import ConfigError, PermanentError
from .validation import pack

__all__ = ["Attempt", "DestinationHost", "classify_permanent", "describe"]

log = logging.getLogger("datalogger.delivery")


def describe(error: BaseException) -> str:
    """One line naming an exception: ``TypeName: message``."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@attrs.frozen
class Attempt:
    """The outcome of one call to ``send_data``.

    Rows are named by their index in the list sent, so an outcome can cross a
    process boundary (``send_async``) without losing which rows it means.
    """

    ok: bool
    result: Any = None
    error: BaseException | None = None
    permanent: bool = False
    """The error will not go away by itself: the rows are not retried as they are."""
    bad: tuple[tuple[int, str], ...] | None = None
    """With a permanent error, ``(index, reason)`` of each row the destination named
    as rejected; None when it named none (the rows failed as a whole)."""
    unsure: tuple[int, ...] = ()
    """With a permanent error, indices of rows that failed along with good ones,
    the destination cannot tell which: to be tried again in halves."""
    isolate: bool = True
    """False when the error is not about the rows (a configuration error): splitting
    the rows would only fail again."""


def _indices(rows: Sequence[Any], named: Sequence[Any]) -> list[int]:
    """The index in ``rows`` of each of ``named`` (the same objects, or equal ones).

    Rows the destination copied are matched by their serialised form; a named
    row that is not in ``rows`` at all is left out.
    """
    by_id = {id(row): index for index, row in enumerate(rows)}
    found: list[int] = []
    missing: list[Any] = []
    for row in named:
        index = by_id.get(id(row))
        if index is None:
            missing.append(row)
        else:
            found.append(index)
    if missing:
        taken = set(found)
        by_value: dict[bytes, list[int]] = {}
        for index, row in enumerate(rows):
            if index not in taken:
                by_value.setdefault(_key(row), []).append(index)
        for row in missing:
            candidates = by_value.get(_key(row))
            if candidates:
                found.append(candidates.pop(0))
            else:
                log.warning("a row named by PermanentError is not in the chunk sent: ignored")
    return found


def _key(row: Any) -> bytes:
    try:
        return pack(row)
    except Exception:
        return repr(row).encode("utf-8", "backslashreplace")


def classify_permanent(rows: Sequence[Any], exc: PermanentError) -> Attempt:
    """The :class:`Attempt` of a ``send_data`` call on ``rows`` that raised ``exc``."""
    if exc.rows is None and exc.unsure is None:
        return Attempt(ok=False, error=exc, permanent=True)
    message = describe(exc)
    named = list(exc.rows or ())
    reasons = list(exc.reasons or ())
    bad: dict[int, str] = {}
    for position, index in enumerate(_indices(rows, named)):
        reason = reasons[position] if position < len(reasons) and reasons[position] else message
        bad.setdefault(index, str(reason))
    unsure = tuple(i for i in _indices(rows, list(exc.unsure or ())) if i not in bad)
    return Attempt(ok=False, error=exc, permanent=True, bad=tuple(bad.items()), unsure=unsure)


def picklable(value: Any) -> Any:
    """``value`` if it can cross a process boundary, else its repr."""
    try:
        pickle.loads(pickle.dumps(value))
    except Exception:
        return repr(value)
    return value


class DestinationHost:
    """Owns one destination instance: builds it lazily and calls it safely.

    One instance serves every topic its worker is given: each call names its
    topic (``topic`` here is the default, for a SendActor that sends one chunk).
    """

    def __init__(self, spec: DestinationSpec, topic: str = "") -> None:
        self.spec = spec
        self.topic = topic
        self._instance: Any = None

    @property
    def instance(self) -> Any:
        """The destination object, built on first use from ``spec``."""
        if self._instance is None:
            cls = resolve_class(self.spec.type)
            self._instance = cls(**dict(self.spec.options))
        return self._instance

    def send(self, rows: list[dict[str, Any]], topic: str | None = None) -> Attempt:
        """Call ``send_data`` once for ``topic`` and classify what happened."""
        try:
            result = self.instance.send_data(self.topic if topic is None else topic, rows)
        except PermanentError as exc:
            return classify_permanent(rows, exc)
        except ConfigError as exc:
            # A destination that refuses its configuration will refuse it again,
            # whatever the rows: nothing to isolate.
            return Attempt(ok=False, error=exc, permanent=True, isolate=False)
        except Exception as exc:
            log.debug("send_data of %s failed: %s", self.spec.name, traceback.format_exc())
            return Attempt(ok=False, error=exc)
        return Attempt(ok=True, result=result)

    def restart(self) -> None:
        """Close the instance; the next send builds a fresh one."""
        self.close()

    def on_success(
        self, result: Any, rows: list[dict[str, Any]], topic: str | None = None
    ) -> str | None:
        """Call ``on_success``; return an error description if it raised."""
        return self._callback("on_success", result, rows, topic)

    def on_error(
        self, reason: BaseException | str, rows: list[dict[str, Any]], topic: str | None = None
    ) -> str | None:
        """Call ``on_error``; return an error description if it raised."""
        return self._callback("on_error", reason, rows, topic)

    def _callback(self, name: str, first: Any, rows: list[dict[str, Any]], topic: str | None) -> str | None:
        topic = self.topic if topic is None else topic
        try:
            method = getattr(self.instance, name, None)
            if method is not None:
                method(first, topic, rows)
        except Exception as exc:
            message = f"{self.spec.name}.{name} raised {describe(exc)}"
            log.warning("%s (topic %s)", message, topic)
            return message
        return None

    def close(self) -> None:
        """Call ``close`` on the instance, if one was built; errors are logged."""
        instance, self._instance = self._instance, None
        if instance is None:
            return
        try:
            close = getattr(instance, "close", None)
            if close is not None:
                close()
        except Exception as exc:
            log.warning("%s.close raised %s", self.spec.name, describe(exc))
