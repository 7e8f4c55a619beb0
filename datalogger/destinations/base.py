"""The destination plug-in point.

A destination is a plain class. Its worker builds it with the options from the
configuration as keyword arguments, then calls :meth:`Destination.send_data`
for every chunk. The built-in destinations are written exactly like this, so
any of them is an example of how to write your own::

    from datalogger import Destination

    class Stdout(Destination):
        def __init__(self, *, stream: str = "stdout") -> None:
            self.stream = stream

        def send_data(self, topic: str, data: list[dict]) -> int:
            for row in data:
                print(topic, row)
            return len(data)

Configure it with ``type = "mypackage.mymodule:Stdout"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = ["Destination", "Rows"]

#: A chunk as a destination sees it: a list of rows, each a dict.
Rows = list[dict[str, Any]]


class Destination:
    """Base class of every destination. Only :meth:`send_data` is required.

    Any exception raised by these methods is caught by the worker and reported;
    it never crashes the actor tree. Raise :class:`datalogger.PermanentError`
    for data that will never be accepted: it is not retried, and the rows at
    fault are found (by splitting the chunk, unless you name them) and
    dead-lettered alone.
    """

    #: False (the default): the destination stores rows, and ``log()`` refuses other
    #: data with ``InvalidData``. True: any value msgpack can serialise (strings,
    #: numbers, lists...) may be logged to its topics; ``send_data`` gets a list of them.
    takes_any_data: ClassVar[bool] = False

    @classmethod
    def log_time(cls, options: Mapping[str, Any]) -> tuple[str, str] | None:
        """The row key to fill with the time of ``log()`` where a row lacks it, and its unit.

        Called once, with the destination's options, when the configuration is
        loaded. ``None`` (the default) leaves rows as they were logged. A
        destination returning ``("time", "ms")`` gets, in every row without a
        ``time`` (or with ``None``), the time the chunk was logged in whole
        milliseconds since the epoch, unique per row of a topic (see
        :mod:`datalogger.stamps`).
        """
        return None

    def send_data(self, topic: str, data: Rows) -> Any:
        """Deliver one chunk of rows for ``topic``.

        Returns:
            Any result; it is passed on to :meth:`on_success`.

        Raises:
            PermanentError: the data (or some rows of it) can never be stored.
            Exception: anything else is a transient failure and is retried.
        """
        raise NotImplementedError

    def on_success(self, result: Any, topic: str, data: Rows) -> None:
        """Called after ``send_data`` returned ``result`` for this chunk."""

    def on_error(self, reason: BaseException | str, topic: str, data: Rows) -> None:
        """Called when a chunk could not be delivered, before it is dead-lettered.

        ``reason`` is the exception, or a string when the exception could not
        be carried back (a crashed ``SendActor``).
        """

    def close(self) -> None:
        """Release connections and files. Called on shutdown and before a restart."""
