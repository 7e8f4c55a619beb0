"""RegistryLocator: finds the leader's ClusterRegistry for a member node.

A global name is unique per actor system, not across a convention, so a member
cannot look the registry up by name from its own system. Instead its
RootSupervisor creates a RegistryLocator with the requirement that the host
system be the leader; Thespian places it there, where the global-name lookup
finds the registry.
"""

from __future__ import annotations

from typing import Any

from thespian.actors import ActorTypeDispatcher

from .._thespian import LEADER_CAPABILITY
from ..messages import LocateRegistry, RegistryLocated
from .cluster_registry import ClusterRegistry

REGISTRY_NAME = "datalogger-cluster-registry"
"""Global name of the ClusterRegistry on the leader."""


class RegistryLocator(ActorTypeDispatcher):
    """Lives on the leader; answers where the registry is."""

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:
        """Only the convention leader can host a locator."""
        return bool(capabilities.get(LEADER_CAPABILITY))

    def receiveMsg_LocateRegistry(self, message: LocateRegistry, sender: Any) -> None:
        """Look the registry up on this (the leader's) system."""
        registry = self.createActor(ClusterRegistry, globalName=REGISTRY_NAME)
        self.send(sender, RegistryLocated(registry))

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Anything else is ignored."""
