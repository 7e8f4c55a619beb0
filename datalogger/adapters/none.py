"""A process-status adapter that keeps nothing (EventStreamex's ``NoAdapter``).

:meth:`NoneAdapter.load` always returns ``[]``, so after a crash everything is
processed as if it were new. It is meant for tests and experiments, never for
production: :meth:`NoneAdapter.start` says so with a :class:`RuntimeWarning`
and a logged warning.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from .base import Item, StorageAdapter, check_options, validate_item

__all__ = ["NoneAdapter"]

logger = logging.getLogger(__name__)

WARNING_TEXT = (
    "the 'none' process-status adapter keeps nothing: after a crash the process "
    "status is lost. It is not for production; use 'sqlite', 'postgres' or 'redis'."
)


class NoneAdapter(StorageAdapter):
    """Accepts every item and keeps none of them. Takes no options."""

    def start(self, options: Mapping[str, Any]) -> None:
        """Warn (``RuntimeWarning`` and a log record) that this adapter is not for production."""
        check_options(options, (), "none adapter")
        warnings.warn(WARNING_TEXT, RuntimeWarning, stacklevel=2)
        logger.warning(WARNING_TEXT)

    def item_processed(self, item: Item) -> None:
        """Check the item, then drop it."""
        validate_item(item)

    def item_processed_many(self, items: Iterable[Item]) -> None:
        """Check the items, then drop them."""
        for item in items:
            validate_item(item)

    def load(self) -> list[Item]:
        """Always ``[]``."""
        return []

    def reset(self) -> None:
        """Nothing to remove."""

    def __repr__(self) -> str:
        """``NoneAdapter()``."""
        return "NoneAdapter()"
