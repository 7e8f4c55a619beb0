"""Adapters as a user would write them, loaded by name in the loader tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datalogger.adapters.base import Item, StorageAdapter, validate_item


class MyAdapter(StorageAdapter):
    """A user adapter keeping items in a dict; remembers the options it was started with."""

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}
        self.items: dict[str, int] = {}

    def start(self, options: Mapping[str, Any]) -> None:
        """Remember the options."""
        self.options = dict(options)

    def item_processed(self, item: Item) -> None:
        """Store the item."""
        entity, timestamp = validate_item(item)
        self.items[entity] = timestamp

    def load(self) -> list[Item]:
        """Every stored item."""
        return list(self.items.items())

    def reset(self) -> None:
        """Forget everything."""
        self.items.clear()


class FailingAdapter(MyAdapter):
    """Fails to start with a message holding the password it was given."""

    def start(self, options: Mapping[str, Any]) -> None:
        """Raise an error mentioning the ``password`` option."""
        raise RuntimeError(f"login refused for password {options['password']}")


class Incomplete(StorageAdapter):
    """A subclass that forgot to implement ``load`` and ``reset``."""

    def start(self, options: Mapping[str, Any]) -> None:
        """Nothing to open."""

    def item_processed(self, item: Item) -> None:
        """Drop the item."""


class NotAnAdapter:
    """Has the four methods but does not derive from StorageAdapter."""

    def start(self, options: Mapping[str, Any]) -> None:
        """Nothing to open."""

    def item_processed(self, item: Item) -> None:
        """Drop the item."""

    def load(self) -> list[Item]:
        """Nothing stored."""
        return []

    def reset(self) -> None:
        """Nothing to remove."""


NOT_A_CLASS = MyAdapter()
