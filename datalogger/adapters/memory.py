"""A process-status adapter that keeps the status in a dict.

Fast and dependency-free, but the status lives only as long as the adapter:
after a crash of its process nothing can be reloaded. Use it in tests and for
data whose replay after a crash does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .base import Item, StorageAdapter, check_options, validate_item

__all__ = ["MemoryAdapter"]


class MemoryAdapter(StorageAdapter):
    """Keeps ``entity -> timestamp`` in a dict. Takes no options."""

    def __init__(self) -> None:
        self._items: dict[str, int] = {}

    def start(self, options: Mapping[str, Any]) -> None:
        """Check that no options were given and start empty."""
        check_options(options, (), "memory adapter")
        self._items = {}

    def item_processed(self, item: Item) -> None:
        """Store the item's timestamp for its entity (upsert, given value as is)."""
        entity, timestamp = validate_item(item)
        self._items[entity] = timestamp

    def item_processed_many(self, items: Iterable[Item]) -> None:
        """Store several items; all are checked before any is stored."""
        checked = [validate_item(item) for item in items]
        self._items.update(checked)

    def load(self) -> list[Item]:
        """Every stored item, sorted by entity."""
        return sorted(self._items.items())

    def reset(self) -> None:
        """Forget every item."""
        self._items.clear()

    def __repr__(self) -> str:
        """``MemoryAdapter(<n> entities)``."""
        return f"MemoryAdapter({len(self._items)} entities)"
