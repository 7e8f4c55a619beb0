"""BufferActor: one partition of a :class:`~datalogger.buffer.DataBuffer`.

A thin actor around :class:`~datalogger.buffer_partition.Partition`, which
holds the logic: it imports the user's DataBuffer subclass, makes its own copy
of the buffer object from the state it is sent, and feeds the partition
messages and ``wakeupAfter`` timers. On ``ActorExitRequest`` it flushes what is
left (one attempt per key, failures to ``handle_error`` and the dead letters).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, WakeupMessage

from ..buffer import DataBuffer
from ..buffer_partition import Partition
from ..delivery import describe
from ..exceptions import ConfigError
from ..loading import import_by_path
from ..messages import (
    BufferDumpReply,
    BufferDumpRequest,
    BufferFlush,
    BufferInfoReply,
    BufferInfoRequest,
    BufferInsert,
    BufferSizeReply,
    BufferSizeRequest,
    BufferStart,
    BufferStarted,
    BufferSyncFlush,
)

__all__ = ["BufferActor", "load_buffer_class"]

log = logging.getLogger("datalogger.buffer")


def load_buffer_class(path: str) -> type[DataBuffer]:
    """Import the DataBuffer subclass named by ``"module:qualname"``.

    Raises:
        ConfigError: the module or the class is missing, or it is no DataBuffer.
    """
    found = import_by_path(path, "buffer class")
    if not (isinstance(found, type) and issubclass(found, DataBuffer)):
        raise ConfigError(f"{path} is not a DataBuffer subclass")
    return found


class BufferActor(ActorTypeDispatcher):
    """One partition of a DataBuffer; created by :meth:`DataBuffer.start`."""

    def __init__(self) -> None:
        super().__init__()
        self.partition: Partition | None = None

    def receiveMsg_BufferStart(self, message: BufferStart, sender: Any) -> None:
        """Import the user's class, make this partition's copy of the buffer, call ``on_start``.

        The partition is taken up only once ``on_start`` returned; a second
        BufferStart (or Thespian's retry) is answered without starting again.
        """
        if self.partition is not None:
            self.send(sender, BufferStarted(message.partition, None, message.token))
            return
        try:
            cls = load_buffer_class(message.buffer_class)
            buffer = cls.__new__(cls)
            buffer.__dict__.update(message.state)
            buffer.on_start()
            self.partition = Partition(buffer, message.partition, self._schedule, self.send)
        except Exception as exc:
            self.send(sender, BufferStarted(message.partition, describe(exc), message.token))
            return
        self.send(sender, BufferStarted(message.partition, None, message.token))

    def _schedule(self, delay: float, payload: Any) -> None:
        self.wakeupAfter(timedelta(seconds=delay), payload)

    def _ready(self, message: Any) -> Partition | None:
        if self.partition is None:
            log.warning("BufferActor not started: ignored %s", type(message).__name__)
        return self.partition

    def receiveMsg_BufferInsert(self, message: BufferInsert, sender: Any) -> None:
        """Buffer values."""
        if (partition := self._ready(message)) is not None:
            partition.insert(message.key, list(message.values))

    def receiveMsg_BufferFlush(self, message: BufferFlush, sender: Any) -> None:
        """Flush now."""
        if (partition := self._ready(message)) is not None:
            partition.flush(message.key)

    def receiveMsg_BufferSyncFlush(self, message: BufferSyncFlush, sender: Any) -> None:
        """Flush now; answer once settled."""
        if (partition := self._ready(message)) is not None:
            partition.sync_flush(message.token, sender, message.key)

    def receiveMsg_BufferDumpRequest(self, message: BufferDumpRequest, sender: Any) -> None:
        """Report the values held."""
        if (partition := self._ready(message)) is not None:
            self.send(
                sender, BufferDumpReply(message.token, partition.index, partition.dump(message.key))
            )

    def receiveMsg_BufferSizeRequest(self, message: BufferSizeRequest, sender: Any) -> None:
        """Count the values held."""
        if (partition := self._ready(message)) is not None:
            self.send(
                sender, BufferSizeReply(message.token, partition.index, partition.size(message.key))
            )

    def receiveMsg_BufferInfoRequest(self, message: BufferInfoRequest, sender: Any) -> None:
        """Report keys, sizes, settings and counters."""
        if (partition := self._ready(message)) is not None:
            self.send(sender, BufferInfoReply(message.token, partition.index, partition.info()))

    def receiveMsg_WakeupMessage(self, message: WakeupMessage, sender: Any) -> None:
        """Interval and retry timers."""
        if self.partition is not None:
            self.partition.on_timer(message.payload)

    def receiveMsg_ActorExitRequest(self, message: ActorExitRequest, sender: Any) -> None:
        """Flush what is left (one attempt each), then call ``on_stop``."""
        if self.partition is None:
            return
        self.partition.close()
        try:
            self.partition.buffer.on_stop()
        except Exception as exc:
            log.error("%s.on_stop raised %s", type(self.partition.buffer).__name__, describe(exc))

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Anything else is logged, never fatal."""
        log.warning("BufferActor ignored %r", type(message).__name__)
