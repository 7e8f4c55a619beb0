"""ProcessStatus: per entity, the last chunk delivered (event_streamex's process status).

An entity is ``"<topic>/<destination>"``; its timestamp is the sequence number
of the topic's chunk up to which that destination has settled every chunk
(delivered or dead-lettered). Sequence numbers, not clock times, because they
are exact and gap-free: after a restart the TopicSupervisor replays from the
write-ahead log exactly the chunks numbered above it, and the clock can jump.

The actor keeps a cache in memory in front of a pluggable storage adapter
(:mod:`datalogger.adapters`). It loads the cache from the adapter when it
starts, and the RootSupervisor restarts it after a crash, so it loads again.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, WakeupMessage

from ..adapters import create_adapter
from ..adapters.base import StorageAdapter
from ..delivery import describe
from ..messages import (
    ItemsProcessed,
    LastProcessedReply,
    LastProcessedRequest,
    ProcessStatusInfo,
    ProcessStatusInfoRequest,
    ProcessStatusReset,
    ProcessStatusResetDone,
    ProcessStatusStart,
    ProcessStatusStarted,
    ProcessStatusSync,
    ProcessStatusSynced,
    WatermarksReply,
    WatermarksRequest,
)

log = logging.getLogger("datalogger.process_status")

RETRY_WRITE_AFTER = 1.0
"""Seconds before writes the adapter refused are tried again."""


class ProcessStatus(ActorTypeDispatcher):
    """A cache of the process status, written through to a storage adapter."""

    def __init__(self) -> None:
        super().__init__()
        self.adapter: StorageAdapter | None = None
        self.cache: dict[str, int] = {}
        self.unwritten: dict[str, int] = {}
        self.retry_scheduled = False
        self.adapter_name = ""

    def receiveMsg_ProcessStatusStart(self, message: ProcessStatusStart, sender: Any) -> None:
        """Open the adapter, load every item into the cache, answer :class:`ProcessStatusStarted`.

        All or nothing: when the adapter does not open or load, this actor
        stays without one (as it was) and the answer carries the reason, so a
        later ProcessStatusStart may try again. Once started, a second one
        (or Thespian's retry) changes nothing.
        """
        if self.adapter is not None:
            self.send(sender, ProcessStatusStarted())
            return
        adapter: StorageAdapter | None = None
        try:
            adapter = create_adapter(message.adapter, message.options)
            loaded = dict(adapter.load())
        except Exception as exc:
            if adapter is not None:
                try:
                    adapter.close()
                except Exception:
                    pass
            log.error("process status adapter %s failed: %s", message.adapter, describe(exc))
            self.send(sender, ProcessStatusStarted(describe(exc)))
            return
        self.adapter, self.adapter_name = adapter, message.adapter
        for entity_name, timestamp in loaded.items():  # what arrived meanwhile is newer
            self.cache[entity_name] = max(timestamp, self.cache.get(entity_name, timestamp))
        self._write({})
        self.send(sender, ProcessStatusStarted())

    def _write(self, items: dict[str, int]) -> None:
        self.unwritten.update(items)
        if self.adapter is None or not self.unwritten:
            return
        try:
            self.adapter.item_processed_many(sorted(self.unwritten.items()))
            self.unwritten.clear()
        except Exception as exc:
            log.warning("process status write failed, will retry: %s", describe(exc))
            if not self.retry_scheduled:
                self.retry_scheduled = True
                self.wakeupAfter(timedelta(seconds=RETRY_WRITE_AFTER))

    def receiveMsg_ItemsProcessed(self, message: ItemsProcessed, sender: Any) -> None:
        """Upsert entities."""
        items = dict(message.items)
        self.cache.update(items)
        self._write(items)

    def receiveMsg_ProcessStatusSync(self, message: ProcessStatusSync, sender: Any) -> None:
        """Upsert entities now and confirm."""
        items = dict(message.items)
        self.cache.update(items)
        self._write(items)
        self.send(sender, ProcessStatusSynced(message.token))

    def receiveMsg_WakeupMessage(self, message: WakeupMessage, sender: Any) -> None:
        """Retry writes the adapter refused."""
        self.retry_scheduled = False
        self._write({})

    def receiveMsg_WatermarksRequest(self, message: WatermarksRequest, sender: Any) -> None:
        """Timestamps of the entities asked for."""
        if message.entities is None:
            items = dict(self.cache)
        else:
            items = {e: self.cache[e] for e in message.entities if e in self.cache}
        self.send(sender, WatermarksReply(message.token, items))

    def receiveMsg_LastProcessedRequest(self, message: LastProcessedRequest, sender: Any) -> None:
        """The timestamp of one entity, or None."""
        reply = LastProcessedReply(message.entity, self.cache.get(message.entity), message.ref)
        self.send(message.reply_to or sender, reply)

    def receiveMsg_ProcessStatusInfoRequest(self, message: ProcessStatusInfoRequest, sender: Any) -> None:
        """Report the process id, the adapter and the number of entities."""
        info = ProcessStatusInfo(os.getpid(), self.adapter_name, len(self.cache), message.ref)
        self.send(message.reply_to or sender, info)

    def receiveMsg_ProcessStatusReset(self, message: ProcessStatusReset, sender: Any) -> None:
        """Forget everything, in the cache and in storage."""
        self.cache.clear()
        self.unwritten.clear()
        if self.adapter is not None:
            try:
                self.adapter.reset()
            except Exception as exc:
                log.error("process status reset failed: %s", describe(exc))
        self.send(message.reply_to or sender, ProcessStatusResetDone(message.ref))

    def receiveMsg_ActorExitRequest(self, message: ActorExitRequest, sender: Any) -> None:
        """Write what is pending and close the adapter."""
        if self.adapter is not None:
            self._write({})
            try:
                self.adapter.close()
            except Exception as exc:
                log.warning("closing the process status adapter failed: %s", describe(exc))

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Anything else is logged, never fatal."""
        log.warning("ProcessStatus ignored %r", type(message).__name__)
