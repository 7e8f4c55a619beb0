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
from typing import Any

import attrs

from .config import DestinationSpec, resolve_class
from .exceptions import ConfigError, PermanentError

__all__ = ["Attempt", "DestinationHost", "describe"]

log = logging.getLogger("datalogger.delivery")


def describe(error: BaseException) -> str:
    """One line naming an exception: ``TypeName: message``."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@attrs.frozen
class Attempt:
    """The outcome of one call to ``send_data``."""

    ok: bool
    result: Any = None
    error: BaseException | None = None
    permanent: bool = False
    bad_rows: list[dict[str, Any]] | None = None
    """With a permanent error, the rows rejected; None means all of them."""


def picklable(value: Any) -> Any:
    """``value`` if it can cross a process boundary, else its repr."""
    try:
        pickle.loads(pickle.dumps(value))
    except Exception:
        return repr(value)
    return value


class DestinationHost:
    """Owns one destination instance: builds it lazily and calls it safely."""

    def __init__(self, spec: DestinationSpec, topic: str) -> None:
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

    def send(self, rows: list[dict[str, Any]]) -> Attempt:
        """Call ``send_data`` once and classify what happened."""
        try:
            result = self.instance.send_data(self.topic, rows)
        except PermanentError as exc:
            bad = exc.rows if exc.rows is not None else None
            return Attempt(ok=False, error=exc, permanent=True, bad_rows=bad)
        except ConfigError as exc:
            # A destination that refuses its configuration will refuse it again.
            return Attempt(ok=False, error=exc, permanent=True)
        except Exception as exc:
            log.debug("send_data of %s failed: %s", self.spec.name, traceback.format_exc())
            return Attempt(ok=False, error=exc)
        return Attempt(ok=True, result=result)

    def restart(self) -> None:
        """Close the instance; the next send builds a fresh one."""
        self.close()

    def on_success(self, result: Any, rows: list[dict[str, Any]]) -> str | None:
        """Call ``on_success``; return an error description if it raised."""
        return self._callback("on_success", result, rows)

    def on_error(self, reason: BaseException | str, rows: list[dict[str, Any]]) -> str | None:
        """Call ``on_error``; return an error description if it raised."""
        return self._callback("on_error", reason, rows)

    def _callback(self, name: str, first: Any, rows: list[dict[str, Any]]) -> str | None:
        try:
            method = getattr(self.instance, name, None)
            if method is not None:
                method(first, self.topic, rows)
        except Exception as exc:
            message = f"{self.spec.name}.{name} raised {describe(exc)}"
            log.warning("%s (topic %s)", message, self.topic)
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
