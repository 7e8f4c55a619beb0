"""ClusterRegistry: who is in the convention, as told by heartbeats.

Runs on the convention leader. Thespian notices a dead member only after its
re-registration misses (about 22 minutes by default); every node's
RootSupervisor instead sends a heartbeat each ``heartbeat_interval`` seconds,
and a member silent for ``heartbeat_timeout`` seconds is dropped. Each change
of membership is sent to every live node, which moves the destinations that
member delivered to other members.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from thespian.actors import ActorTypeDispatcher, WakeupMessage

from .._thespian import member_allowed
from ..messages import (
    Membership,
    MembershipRefused,
    NodeHeartbeat,
    NodesReply,
    NodesRequest,
    RegistryStart,
)
from ..placement import Member

log = logging.getLogger("datalogger.cluster")


class ClusterRegistry(ActorTypeDispatcher):
    """The membership of the convention."""

    def __init__(self) -> None:
        super().__init__()
        self.timeout = 3.0
        self.members: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.checking = False
        self.refused: set[str] = set()
        self.node: str | None = None
        self.allowed: tuple[str, ...] | None = None

    def receiveMsg_RegistryStart(self, message: RegistryStart, sender: Any) -> None:
        """Start checking for silent members (a second RegistryStart only updates the settings)."""
        self.timeout = message.heartbeat_timeout
        self.node = message.node
        self.allowed = None if message.allowed is None else tuple(message.allowed)
        if not self.checking:
            self.checking = True
            self.wakeupAfter(timedelta(seconds=self.timeout / 3))

    def _membership(self) -> Membership:
        members = tuple(
            Member(node, tuple(info["capabilities"]), info["root"], info.get("pubsub"))
            for node, info in sorted(self.members.items())
        )
        return Membership(members, self.version)

    def _broadcast(self) -> None:
        self.version += 1
        membership = self._membership()
        for info in self.members.values():
            self.send(info["root"], membership)

    def _admits(self, node: str) -> bool:
        """The leader itself always; others when the allow list names them."""
        if node == self.node or self.allowed is None:
            return True
        host, _, port = node.rpartition(":")
        return port.isdigit() and member_allowed(host, int(port), self.allowed)

    def receiveMsg_NodeHeartbeat(self, message: NodeHeartbeat, sender: Any) -> None:
        """A node is alive: record it; a new or changed node is announced to all.

        A node the allow list does not admit is told so after each heartbeat
        (:class:`MembershipRefused`), and logged here once.
        """
        if not self._admits(message.node):
            if message.node not in self.refused:
                self.refused.add(message.node)
                log.warning("refused node %s: not in cluster.allowed_members", message.node)
            reason = (
                f"not in cluster.allowed_members of the leader {self.node}; add "
                f"{message.node.rpartition(':')[0]} (or its network) there and restart the leader"
            )
            self.send(message.root, MembershipRefused(message.node, reason))
            return
        self.refused.discard(message.node)
        known = self.members.get(message.node)
        changed = (
            known is None
            or known["root"] != message.root
            or tuple(known["capabilities"]) != tuple(message.capabilities)
            or known.get("pubsub") != message.pubsub
        )
        self.members[message.node] = {
            "root": message.root,
            "capabilities": tuple(message.capabilities),
            "last_seen": time.time(),
            "placements": dict(message.placements),
            "pubsub": message.pubsub,
        }
        if changed:
            log.info(
                "node %s joined (capabilities: %s)", message.node, ", ".join(message.capabilities) or "none"
            )
            self._broadcast()
        else:
            self.send(message.root, self._membership())

    def receiveMsg_WakeupMessage(self, message: WakeupMessage, sender: Any) -> None:
        """Drop members whose heartbeats stopped."""
        now = time.time()
        gone = [n for n, info in self.members.items() if now - info["last_seen"] > self.timeout]
        for node in gone:
            log.warning("node %s missed its heartbeats for %.1fs: removed", node, self.timeout)
            del self.members[node]
        if gone:
            self._broadcast()
        self.wakeupAfter(timedelta(seconds=self.timeout / 3))

    def receiveMsg_NodesRequest(self, message: NodesRequest, sender: Any) -> None:
        """The members, their capabilities and the destinations they deliver."""
        holds: dict[str, list[str]] = {node: [] for node in self.members}
        for info in self.members.values():
            for pair, owner in info["placements"].items():
                if owner in holds:
                    holds[owner].append(pair)
        nodes = [
            {
                "node": node,
                "capabilities": list(info["capabilities"]),
                "last_seen": info["last_seen"],
                "holds": sorted(set(holds[node])),
                "state": "member",
            }
            for node, info in sorted(self.members.items())
        ]
        self.send(message.reply_to or sender, NodesReply(nodes, message.ref))

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Convention notices and anything else are ignored."""
