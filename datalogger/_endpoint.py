"""A client's private line to a node: a Thespian endpoint whose every wait is bounded.

Thespian's external API is made for a node that is always there. Its
``ActorSystem(...)`` starts a new admin when it finds none (a web app would
fork a node of its own); a ``tell`` waits up to 60 s; a transmit to a peer that
closed its socket is retried after 35 s; ``createActor`` waits up to 50 s. A
client of a node that can be restarted needs the opposite: to learn within
``connect_timeout`` whether the node took a message, and to find the node again
by name when it comes back on the same admin port.

:class:`Endpoint` is one external endpoint (its own listening socket, so its
replies are its own) built without starting anything, with sends that wait
for the transport's acknowledgement for a bounded time and a bounded lookup of
a global name. It is used by one thread at a time. After a failed or timed-out
send its transport may still hold that transmit, so an endpoint that raised
:class:`Unreachable` is closed, not reused.

This is the one module that uses Thespian's internals for the client side
(``ExternalOpsToActors``, ``PendingActor``); it is small on purpose.
"""

from __future__ import annotations

import itertools
import time
from datetime import timedelta
from typing import Any

from thespian.actors import ActorSystem, ExternalContext
from thespian.system import isInternalActorSystemMessage
from thespian.system.messages.admin import (
    PendingActor,
    PendingActorResponse,
    QueryAck,
    QueryExists,
    SystemShutdown,
    SystemShutdownCompleted,
)
from thespian.system.systemBase import BaseContext, ExternalOpsToActors
from thespian.system.transport import ExternalInterfaceTransportInit, ReceiveEnvelope, TransmitIntent
from thespian.system.transport.TCPTransport import TCPTransport

from ._thespian import ADMIN_HOST_CAPABILITY, BIND_CAPABILITY

__all__ = ["Endpoint", "Unreachable", "actor_system"]

_instances = itertools.count(1)


class Unreachable(Exception):
    """The node did not take a message (refused, dead target, no acknowledgement in time).

    ``silent`` is true when nothing answered in time (a stopped or cut-off node),
    false when the attempt failed at once (nothing listens there).
    """

    def __init__(self, reason: str, silent: bool = False, sent: int = 0) -> None:
        super().__init__(reason)
        self.silent = silent
        self.sent = sent
        """Of several messages, how many of the first were acknowledged."""


def _describe(status: Any) -> str:
    """A send status in words."""
    text = str(status)
    if "DEADTARGET" in text:
        return "connection refused"
    return f"send failed ({text.lstrip('-+')})"


def _class_name(actor_class: type) -> str:
    return f"{actor_class.__module__}.{actor_class.__name__}"


class _Lookup:
    """Transport handler waiting for the admin's answer to a PendingActor request.

    Other messages that arrive meanwhile are kept for :meth:`Endpoint.receive`.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.address: Any = None
        self.failure: Any = None

    @property
    def pending(self) -> bool:
        return self.address is None and self.failure is None

    def transmit_failed(self, result: Any, intent: Any) -> None:
        self.failure = result
        self.endpoint._transport.abort_run()

    def __call__(self, envelope: Any) -> bool:
        message = envelope.message
        if isinstance(message, PendingActorResponse):
            if message.errorCode:
                self.failure = getattr(message, "errorStr", None) or f"error {message.errorCode}"
            else:
                self.address = message.actualAddress
            return False  # stop running the transport
        self.endpoint._stash(message)
        return True


def _capabilities(admin_port: int, admin_host: str | None, bind: str | None) -> dict[str, Any]:
    capabilities: dict[str, Any] = {"Admin Port": int(admin_port)}
    if admin_host:
        capabilities[ADMIN_HOST_CAPABILITY] = admin_host
    if bind:
        capabilities[BIND_CAPABILITY] = bind
    return capabilities


class Endpoint:
    """One private Thespian endpoint towards the admin on ``admin_port`` (see the module docstring).

    Args:
        admin_port: the node's admin port.
        admin_host: the node's address (default: as Thespian guesses, loopback here).
        bind: the address of this host the endpoint listens on (see
            :mod:`datalogger._thespian`: the address towards ``admin_host``).
    """

    def __init__(self, admin_port: int, admin_host: str | None = None, bind: str | None = None) -> None:
        capabilities = _capabilities(admin_port, admin_host, bind)
        self._transport = TCPTransport(ExternalInterfaceTransportInit(), capabilities, None, None)
        self._ops = ExternalOpsToActors(
            TCPTransport.getAdminAddr(capabilities), transport=self._transport
        )
        self._stashed: list[Any] = []
        self.closed = False

    @property
    def admin(self) -> Any:
        """The admin's address."""
        return self._ops.adminAddr

    def _stash(self, message: Any) -> None:
        if not isInternalActorSystemMessage(message):
            self._stashed.append(message)

    def send(self, address: Any, message: Any, timeout: float) -> None:
        """Send ``message`` and wait up to ``timeout`` s for the transport's acknowledgement.

        Raises:
            Unreachable: the target refused or is dead, or nothing acknowledged in time.
        """
        self.send_many(address, [message], timeout)

    def send_many(self, address: Any, messages: list[Any], timeout: float) -> None:
        """Send several messages to one address, in order; wait for every acknowledgement.

        One at a time: Thespian's TCP transport sends one message at a time to
        an address and may start a transmit scheduled later before older ones
        waiting for that address, so several in progress at once can arrive
        out of order. ``timeout`` bounds the wait for each acknowledgement: a
        busy actor that keeps taking messages is slow, not gone.

        Raises:
            Unreachable: as :meth:`send`; its ``sent`` is how many of the first
                messages were acknowledged (the next may or may not have arrived).
        """
        sent: list[Any] = []
        failed: list[Any] = []

        def on_error(result: Any, intent: Any) -> None:
            failed.append(result)
            self._transport.abort_run()

        for index, message in enumerate(messages):
            self._transport.scheduleTransmit(
                None,
                TransmitIntent(address, message, onSuccess=lambda r, i: sent.append(r), onError=on_error),
            )
            deadline = time.monotonic() + timeout
            while not failed and len(sent) <= index:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unreachable(
                        f"no acknowledgement within {timeout:.3g}s", silent=True, sent=len(sent)
                    )
                self._ops._run_transport(timedelta(seconds=remaining), txonly=True)
            if failed:
                raise Unreachable(_describe(failed[0]), sent=len(sent))

    def receive(self, timeout: float) -> Any:
        """The next message for this endpoint, waiting up to ``timeout`` s; None on silence."""
        if self._stashed:
            return self._stashed.pop(0)
        return self._ops.listen(timedelta(seconds=max(timeout, 0.0)))

    def find(self, actor_class: type, global_name: str, timeout: float) -> Any:
        """The address of the actor registered as ``global_name`` (created if there is none).

        Raises:
            Unreachable: the admin did not answer within ``timeout`` s, or refused.
        """
        lookup = _Lookup(self)
        request = PendingActor(_class_name(actor_class), None, next(_instances), None,
                               globalName=global_name, sourceHash=None)
        self._transport.scheduleTransmit(
            None, TransmitIntent(self.admin, request, onError=lookup.transmit_failed)
        )
        deadline = time.monotonic() + timeout
        while lookup.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._transport.run(lookup, timedelta(seconds=remaining))
        if lookup.address:
            return lookup.address
        if lookup.failure is not None:
            raise Unreachable(_describe(lookup.failure))
        raise Unreachable(f"the admin did not answer within {timeout:.3g}s", silent=True)

    def admin_state(self, timeout: float) -> str:
        """``"running"``, ``"stopping"`` (an admin shutting down) or ``"silent"`` (no answer)."""
        watch = self._ops._tx_to_admin(QueryExists())
        deadline = time.monotonic() + timeout
        while not watch.failed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            response = self._ops._run_transport(timedelta(seconds=remaining))
            if isinstance(response, ReceiveEnvelope) and isinstance(response.message, QueryAck):
                return "stopping" if response.message.inShutdown else "running"
            if not isinstance(response, ReceiveEnvelope):
                break
        return "silent"

    def stop_admin(self, timeout: float) -> bool:
        """Ask the admin to stop the actor system; True once it says it has."""
        watch = self._ops._tx_to_admin(SystemShutdown())
        deadline = time.monotonic() + timeout
        while not watch.failed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            response = self._ops._run_transport(timedelta(seconds=remaining))
            if isinstance(response, ReceiveEnvelope):
                if isinstance(response.message, SystemShutdownCompleted):
                    return True
            elif response is not None:
                return False
        return False

    def private_context(self) -> BaseContext:
        """A further endpoint sharing nothing with this one (for ``ActorSystem.private()``)."""
        return BaseContext(self.admin, self._transport)

    def close(self) -> None:
        """Close the socket; transmits still pending are dropped. Idempotent."""
        if not self.closed:
            self.closed = True
            self._transport.close()


class _SystemBase(ExternalOpsToActors):
    """The part of Thespian's system base an :class:`~thespian.actors.ActorSystem` needs, minus
    the admin start (``ActorSystem.shutdown`` is not offered: the node is not this process's)."""

    def external_clone(self) -> BaseContext:
        """A private endpoint (for ``ActorSystem.private()``)."""
        return BaseContext(self.adminAddr, self.transport)

    def exit_context(self) -> None:
        """Close the socket."""
        self.transport.close()


def actor_system(admin_port: int, admin_host: str | None = None, bind: str | None = None) -> ActorSystem:
    """An ``ActorSystem`` for the node on ``admin_port`` that never starts a node of its own.

    ``tell``, ``ask``, ``createActor`` and ``private()`` work as usual; unlike
    ``ActorSystem("multiprocTCPBase", ...)``, making it while no node runs
    starts no admin in this process. ``admin_host`` and ``bind`` as for
    :class:`Endpoint`.
    """
    capabilities = _capabilities(admin_port, admin_host, bind)
    transport = TCPTransport(ExternalInterfaceTransportInit(), capabilities, None, None)
    base = _SystemBase(TCPTransport.getAdminAddr(capabilities), transport=transport)
    return ExternalContext(base)
