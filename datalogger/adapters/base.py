"""The process-status storage plug-in point.

The process status tells, for every entity, the last timestamp that was fully
processed. datalogger keeps it in memory and hands every change to a
:class:`StorageAdapter`, so that after a crash the status can be reloaded with
:meth:`StorageAdapter.load`. The semantics are those of EventStreamex's
``ProcessStatusStorageAdapter``: an *item* is a tuple ``(entity, timestamp)``;
datalogger stores per-topic sequence numbers in the timestamp, so it is an
``int``.

An adapter is a plain class built without arguments; :meth:`StorageAdapter.start`
then receives the options from the configuration. The built-in adapters are
written exactly like this, so any of them is an example of how to write your own::

    from datalogger.adapters.base import StorageAdapter, validate_item

    class DictAdapter(StorageAdapter):
        def start(self, options):
            self.items = {}

        def item_processed(self, item):
            entity, timestamp = validate_item(item)
            self.items[entity] = timestamp

        def load(self):
            return list(self.items.items())

        def reset(self):
            self.items.clear()

Configure it with ``adapter = "mypackage.mymodule:DictAdapter"``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from types import TracebackType
from typing import Any

from ..exceptions import ConfigError, InvalidInput
from ..redaction import mentions_secret, redact, secrets_in

__all__ = [
    "REQUIRED_METHODS",
    "Item",
    "StorageAdapter",
    "check_options",
    "mentions_secret",
    "redact",
    "secrets_in",
    "validate_identifier",
    "validate_item",
]

#: One process-status entry: ``(entity, timestamp)``.
Item = tuple[str, int]

#: The methods every adapter must implement (``close`` has a default).
REQUIRED_METHODS = ("start", "item_processed", "load", "reset")

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class StorageAdapter:
    """Base class of every process-status storage adapter.

    Subclasses implement :meth:`start`, :meth:`item_processed`, :meth:`load`
    and :meth:`reset`; :meth:`item_processed_many` and :meth:`close` have
    defaults. Backend errors should be raised as
    :class:`datalogger.DataLoggerError` (``raise ... from exc``), bad options
    as :class:`datalogger.ConfigError`. An adapter can be used as a context
    manager, which calls :meth:`close` on exit.
    """

    def start(self, options: Mapping[str, Any]) -> None:
        """Open the storage with the ``options`` from the configuration.

        Called once, before any other method.

        Raises:
            ConfigError: an option is missing or invalid.
            DataLoggerError: the storage cannot be opened.
        """
        raise NotImplementedError

    def item_processed(self, item: Item) -> None:
        """Record that ``entity`` was processed up to ``timestamp``.

        This is an upsert: an unknown entity is added, a known one gets the
        given timestamp. As in EventStreamex the value given is stored as is,
        even when it is lower than the stored one; keeping timestamps
        increasing is the caller's job.
        """
        raise NotImplementedError

    def item_processed_many(self, items: Iterable[Item]) -> None:
        """Record several items, in order (for equal entities the last one wins).

        The default calls :meth:`item_processed` for each item; adapters may
        override it to write a batch in one round trip.
        """
        for item in items:
            self.item_processed(item)

    def load(self) -> list[Item]:
        """Return every stored ``(entity, timestamp)``, each entity once, in no set order."""
        raise NotImplementedError

    def reset(self) -> None:
        """Remove every item from the storage (used by tests and ``reset`` commands)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and files. The default does nothing."""

    def __enter__(self) -> StorageAdapter:
        """Return the adapter itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Call :meth:`close`."""
        self.close()


def validate_item(item: Any) -> Item:
    """Check that ``item`` is ``(entity: str, timestamp: int)`` and return it as a tuple.

    The timestamp must fit in a signed 64-bit integer (``bool`` is refused).

    Raises:
        InvalidInput: the item has the wrong shape or types.
    """
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise InvalidInput(f"a process-status item is (entity, timestamp), got {item!r}")
    entity, timestamp = item
    if not isinstance(entity, str) or not entity:
        raise InvalidInput(f"the entity must be a non-empty str, got {entity!r}")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise InvalidInput(f"the timestamp of {entity!r} must be an int, got {timestamp!r}")
    if not _INT64_MIN <= timestamp <= _INT64_MAX:
        raise InvalidInput(f"the timestamp of {entity!r} does not fit in 64 bits: {timestamp}")
    return entity, timestamp


def check_options(
    options: Mapping[str, Any] | None, allowed: Collection[str], adapter: str
) -> dict[str, Any]:
    """Return ``options`` as a dict after refusing unknown option names.

    Raises:
        ConfigError: ``options`` is not a mapping, or names an unknown option.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{adapter}: options must be a mapping, got {type(options).__name__}")
    unknown = sorted(str(key) for key in options if key not in allowed)
    if unknown:
        raise ConfigError(
            f"{adapter}: unknown option(s) {', '.join(unknown)}; "
            f"known options: {', '.join(sorted(allowed))}"
        )
    return dict(options)


def validate_identifier(name: Any, option: str) -> str:
    """Check that ``name`` is a plain SQL identifier (letters, digits, ``_``; 63 chars max).

    Raises:
        ConfigError: naming ``option`` and the bad value.
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ConfigError(
            f"option {option!r}: {name!r} is not a valid identifier "
            "(letters, digits and _, not starting with a digit, at most 63 characters)"
        )
    return name


