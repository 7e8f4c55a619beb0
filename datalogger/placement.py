"""Where a destination's worker for a topic runs, in distributed mode.

Plain functions used by the TopicSupervisor. A destination's workers go only
to members that have every capability it ``requires``; among those, the owner
of a ``(topic, destination)`` pair is picked by rendezvous hashing, so adding or
removing a member moves only the pairs it wins or held.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = ["Member", "owner_for", "qualifying", "rendezvous"]


@attrs.frozen
class Member:
    """A live node of the convention."""

    node: str
    """The node's id: ``host:port`` of its admin."""
    capabilities: tuple[str, ...] = ()
    """Capabilities given with ``--capability`` (``influxdb``, ``postgres``...)."""
    root: Any = None
    """The node's RootSupervisor address."""
    pubsub: Any = None
    """The node's PubSub actor address."""


def qualifying(members: Iterable[Member], requires: Iterable[str]) -> list[Member]:
    """Members that have every capability in ``requires``."""
    needed = set(requires)
    return [m for m in members if needed <= set(m.capabilities)]


def rendezvous(key: str, nodes: Iterable[str]) -> str | None:
    """The node with the highest hash score for ``key`` (None when there is none)."""
    best: tuple[bytes, str] | None = None
    for node in nodes:
        score = hashlib.blake2b(f"{key}\x00{node}".encode(), digest_size=8).digest()
        if best is None or score > best[0]:
            best = (score, node)
    return best[1] if best else None


def owner_for(topic: str, destination: str, requires: Iterable[str], members: Iterable[Member]) -> str | None:
    """The node whose worker delivers ``topic`` to ``destination``, or None if no member qualifies."""
    return rendezvous(f"{topic}/{destination}", (m.node for m in qualifying(members, requires)))


def capability_check(capabilities: Mapping[str, Any], requirements: Mapping[str, Any]) -> bool:
    """Thespian's placement test for workers: the named node, with every required capability."""
    node = requirements.get("node")
    if node is not None and capabilities.get("datalogger.node") != node:
        return False
    return all(capabilities.get(cap) for cap in requirements.get("requires", ()))
