"""How a handle reaches its node, and finds it again when the node comes back.

A :class:`NodeLink` knows the node by its admin port, and its RootSupervisor by
the global name :data:`~datalogger.actors.root_supervisor.ROOT_NAME`. It keeps
the router's address and each topic's route (the TopicSupervisor a topic's
chunks may go to directly) under a *generation* number. When a send to them
fails (dead target, refused connection, no acknowledgement within
``connect_timeout``), or a reply is late and a look-up shows another router,
the node went away: the link forgets the addresses, looks the router up again
through the admin, and carries on with the next generation. Nothing is needed
from the application: when the node is back on the same admin port, the next
call works.

Every wait is bounded. A call that cannot get a message to the node within
``connect_timeout`` raises :class:`~datalogger.exceptions.NotRunning`; one whose
message was taken but whose answer does not come within its ``timeout``
raises :class:`~datalogger.exceptions.DeliveryTimeout`. No lock is held while
waiting: each call borrows a private endpoint (:class:`~datalogger._endpoint.Endpoint`,
its own socket) from a small pool, so threads never wait on one another.

:class:`LocalLink` is the same interface for ``simpleSystemBase``, where the
node runs inside the caller's process and every call goes through one lock.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from thespian.actors import ActorSystem

from ._endpoint import Endpoint, Unpicklable, Unreachable
from .actors.pubsub import PubSub
from .actors.root_supervisor import ROOT_NAME, RootSupervisor
from .exceptions import DeliveryTimeout, NotRunning
from .messages import DirectLog, Log, LogAccepted, LogRejected, RouteCheck, RouteStatus
from .pubsub import PUBSUB_NAME

__all__ = ["PROBE_EVERY", "Link", "LocalLink", "NodeLink"]

PROBE_EVERY = 1.0
"""Seconds of silence after which a waiting call checks that its node is still the same one."""
WAIT_SLICE = 0.1
"""Longest pause between two calls of a waiting call's ``on_wait``."""
POOL_SIZE = 8
"""Endpoints kept for reuse (more are made when more threads call at once)."""

_graveyard: list[Any] = []
"""Endpoints inherited through fork(): never used nor collected (their sockets are the parent's)."""


class Link(Protocol):
    """What a handle needs from its way to the node."""

    def request(self, make: Callable[[int], Any], expected: tuple[type, ...], timeout: float) -> Any:
        """Send ``make(ref)`` to the router and return the answer of a type in ``expected``."""

    def log(
        self, topic: str, rows: list[dict[str, Any]], timeout: float,
        on_wait: Callable[[], None] | None = None, patience: float | None = None,
    ) -> LogAccepted | LogRejected:
        """Log a chunk and return the node's answer."""

    def broadcast(self, messages: list[Any], patience: float | None = None) -> None:
        """Hand broadcast messages to the node's PubSub actor."""

    @property
    def router(self) -> Any:
        """The RootSupervisor's current address (None while unknown)."""

    def status(self) -> dict[str, Any]:
        """``connected`` and ``reconnects``."""

    def after_fork(self) -> None:
        """Called in a forked child: drop what belongs to the parent."""


class _Budget:
    """The time left to get a message to the node."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


class NodeLink:
    """The way to a ``multiprocTCPBase`` node (see the module docstring).

    Args:
        admin_port: the node's admin port.
        connect_timeout: seconds a call may spend getting a message to the node.
        router: the router's address when it is already known (from ``start()``).
        admin_host: the node's address.
        bind: the address of this host that the link's endpoints listen on.
    """

    def __init__(
        self,
        admin_port: int,
        connect_timeout: float,
        router: Any = None,
        *,
        admin_host: str | None = None,
        bind: str | None = None,
    ) -> None:
        self.admin_port = int(admin_port)
        self.admin_host = admin_host
        self.bind = bind
        self.connect_timeout = float(connect_timeout)
        self._lock = threading.Lock()  # guards the fields below; never held across I/O
        self._router = router
        self._generation = 1 if router is not None else 0
        self._routes: dict[str, Any] = {}
        self._pubsub: Any = None
        self._pool: list[Endpoint] = []
        self._refs = itertools.count(1)
        self._pid = os.getpid()
        self.connected: bool | None = True if router is not None else None
        self.reconnects = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ state
    @property
    def router(self) -> Any:
        """The RootSupervisor's address as last found (None while the node is away)."""
        return self._router

    def status(self) -> dict[str, Any]:
        """``connected`` (None before the first contact) and ``reconnects``."""
        return {"connected": self.connected, "reconnects": self.reconnects}

    def after_fork(self) -> None:
        """In a forked child: the pooled endpoints share sockets with the parent; leave them be."""
        _graveyard.extend(self._pool)
        self._pool = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @contextmanager
    def _endpoint(self) -> Iterator[list[Endpoint]]:
        """Borrow an endpoint (in a one-element list, so a call can swap a broken one)."""
        if self._pid != os.getpid():
            self.after_fork()
        with self._lock:
            endpoint = self._pool.pop() if self._pool else None
        holder = [endpoint or self._new_endpoint()]
        ok = False
        try:
            yield holder
            ok = True
        finally:
            endpoint = holder[0]
            if ok and not endpoint.closed and len(self._pool) < POOL_SIZE:
                with self._lock:
                    self._pool.append(endpoint)
            else:  # it may hold a transmit or a late reply: do not lend it again
                endpoint.close()

    def _new_endpoint(self) -> Endpoint:
        return Endpoint(self.admin_port, self.admin_host, self.bind)

    def _fresh(self, holder: list[Endpoint]) -> Endpoint:
        holder[0].close()
        holder[0] = self._new_endpoint()
        return holder[0]

    def _current(self) -> tuple[Any, int]:
        with self._lock:
            return self._router, self._generation

    def _lost(self, generation: int, reason: str) -> None:
        """The node stopped answering at ``generation``'s addresses."""
        with self._lock:
            if generation == self._generation and self._router is not None:
                self._router = None
                self._routes.clear()
                self._pubsub = None
            self.connected = False
            self.last_error = reason

    def _unreachable(self, exc: Unreachable) -> NotRunning:
        where = f"{self.admin_host or '127.0.0.1'}:{self.admin_port}"
        if exc.silent:
            return NotRunning(
                f"the datalogger node on {where} did not answer within {self.connect_timeout:g}s "
                "(connect_timeout): it is stopped, overloaded or cut off"
            )
        return NotRunning(f"no datalogger node is listening on {where} ({exc})")

    def _resolve(self, holder: list[Endpoint], budget: _Budget) -> tuple[Any, int]:
        """Look the router up through the admin; a new address starts a new generation."""
        try:
            router = holder[0].find(RootSupervisor, ROOT_NAME, budget.left())
        except Unreachable as exc:
            self._fresh(holder)
            with self._lock:
                generation = self._generation
            self._lost(generation, str(exc))
            raise self._unreachable(exc) from None
        with self._lock:
            if router != self._router:
                self._router = router
                self._generation += 1
                self._routes.clear()
                self._pubsub = None
            if self.connected is False:
                self.reconnects += 1
            self.connected = True
            return self._router, self._generation

    def _reach(self, holder: list[Endpoint], budget: _Budget) -> tuple[Any, int]:
        router, generation = self._current()
        if router is None:
            return self._resolve(holder, budget)
        return router, generation

    def _send(
        self, holder: list[Endpoint], target: Any, message: Any, generation: int, budget: _Budget
    ) -> None:
        try:
            holder[0].send(target, message, budget.left())
        except Unreachable as exc:
            self._fresh(holder)
            self._lost(generation, str(exc))
            raise

    # ------------------------------------------------------------------ calls
    def request_router(self) -> Any:
        """Look the router up now; its address.

        Raises:
            NotRunning: the node could not be reached within ``connect_timeout``.
        """
        with self._endpoint() as holder:
            return self._resolve(holder, _Budget(self.connect_timeout))[0]

    def request(self, make: Callable[[int], Any], expected: tuple[type, ...], timeout: float) -> Any:
        """Send ``make(ref)`` to the router; return its answer (a type of ``expected``, same ``ref``).

        Raises:
            NotRunning: the node could not be reached within ``connect_timeout``.
            DeliveryTimeout: no answer within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._endpoint() as holder:
            ref, generation = self._deliver_to_router(holder, make)
            quiet_since = time.monotonic()
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeliveryTimeout(f"no answer from the node within {timeout:g}s")
                reply = holder[0].receive(min(remaining, PROBE_EVERY))
                if reply is None:
                    if time.monotonic() - quiet_since >= PROBE_EVERY:
                        quiet_since = time.monotonic()
                        if self._probe(holder) != generation:  # another node now: ask it
                            ref, generation = self._deliver_to_router(holder, make)
                    continue
                if isinstance(reply, expected) and getattr(reply, "ref", ref) == ref:
                    return reply

    def _deliver_to_router(self, holder: list[Endpoint], make: Callable[[int], Any]) -> tuple[int, int]:
        """Send ``make(ref)`` to the router, looking it up again once if its address failed."""
        budget = _Budget(self.connect_timeout)
        for attempt in (1, 2):
            router, generation = self._reach(holder, budget)
            ref = next(self._refs)
            try:
                self._send(holder, router, make(ref), generation, budget)
                return ref, generation
            except Unreachable as exc:
                if attempt == 2 or budget.left() <= 0:
                    raise self._unreachable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _probe(self, holder: list[Endpoint]) -> int:
        """Look the router up again (a reply is late); return the generation now."""
        return self._resolve(holder, _Budget(self.connect_timeout))[1]

    def log(
        self,
        topic: str,
        rows: list[dict[str, Any]],
        timeout: float,
        on_wait: Callable[[], None] | None = None,
        patience: float | None = None,
    ) -> LogAccepted | LogRejected:
        """Log a checked chunk; return the node's answer.

        The chunk goes straight to the topic's TopicSupervisor once an answer
        named it; if that supervisor is silent, the router is asked whether it
        still is the topic's, and the chunk goes through the router if not.
        ``on_wait`` is called at least every :data:`WAIT_SLICE` seconds while
        the answer is awaited. ``patience`` replaces ``connect_timeout`` (a
        background sender may wait longer for a busy node than a caller).

        Raises:
            NotRunning: the node could not be reached within ``connect_timeout``.
            DeliveryTimeout: the chunk was taken but not answered within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        with self._endpoint() as holder:
            ref, generation, route = self._send_chunk(holder, topic, rows, True, patience)
            quiet_since = time.monotonic()
            checked = False
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeliveryTimeout(f"no answer from the node within {timeout:g}s")
                wait = min(remaining, PROBE_EVERY, WAIT_SLICE if on_wait else PROBE_EVERY)
                reply = holder[0].receive(wait)
                if on_wait is not None:
                    on_wait()
                if isinstance(reply, (LogAccepted, LogRejected)) and reply.ref == ref:
                    if isinstance(reply, LogAccepted) and reply.route is not None:
                        with self._lock:
                            if self._generation == generation:
                                self._routes[topic] = reply.route
                    return reply
                if isinstance(reply, RouteStatus) and reply.ref == ref and not reply.current:
                    # the supervisor died before taking the chunk: through the router
                    with self._lock:
                        self._routes.pop(topic, None)
                    ref, generation, route = self._send_chunk(holder, topic, rows, False, patience)
                    quiet_since = time.monotonic()
                    continue
                if reply is not None or time.monotonic() - quiet_since < PROBE_EVERY:
                    continue
                quiet_since = time.monotonic()
                if self._probe(holder) != generation:  # the node restarted: the chunk is not there
                    ref, generation, route = self._send_chunk(holder, topic, rows, False, patience)
                elif route is not None and not checked:
                    checked = True  # is the supervisor alive? (a slow one is)
                    router, _ = self._current()
                    try:
                        self._send(holder, router, RouteCheck(topic, route, ref), generation,
                                   _Budget(self.connect_timeout))
                    except Unreachable as exc:
                        raise self._unreachable(exc) from None

    def _send_chunk(
        self,
        holder: list[Endpoint],
        topic: str,
        rows: list[dict[str, Any]],
        direct: bool,
        patience: float | None = None,
    ) -> tuple[int, int, Any]:
        """Send a chunk by its route (if known and ``direct``) or the router; (ref, generation, route)."""
        budget = _Budget(patience or self.connect_timeout)
        for attempt in (1, 2):
            router, generation = self._reach(holder, budget)
            with self._lock:
                route = self._routes.get(topic) if direct and self._generation == generation else None
            ref = next(self._refs)
            try:
                if route is not None:
                    self._send(holder, route, DirectLog(topic, rows, ref), generation, budget)
                else:
                    self._send(holder, router, Log(topic, rows, True, ref), generation, budget)
                return ref, generation, route
            except Unreachable as exc:
                if attempt == 2 or budget.left() <= 0:
                    raise self._unreachable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def broadcast(self, messages: list[Any], patience: float | None = None) -> None:
        """Hand ``messages`` to the node's PubSub actor (found by its global name), in order.

        Each acknowledgement is awaited for up to ``patience`` (default
        ``connect_timeout``) seconds.

        Raises:
            NotRunning: the node could not be reached in time. Its ``delivered``
                says how many of the first messages were taken, and its
                ``uncertain`` whether the next one was in flight (it may or may
                not have arrived: events are live, not stored, so it is not sent
                twice).
            Unpicklable: a message could not be pickled; its ``sent`` is how
                many of the first messages were taken.
        """
        delivered = 0
        wait = patience or self.connect_timeout
        with self._endpoint() as holder:
            budget = _Budget(wait)
            for attempt in (1, 2):
                _, generation = self._reach(holder, budget)
                with self._lock:
                    pubsub = self._pubsub
                try:
                    if pubsub is None:
                        pubsub = holder[0].find(PubSub, PUBSUB_NAME, budget.left())
                        with self._lock:
                            if self._generation == generation:
                                self._pubsub = pubsub
                    holder[0].send_many(pubsub, messages[delivered:], wait)
                    return
                except Unpicklable as exc:
                    exc.sent += delivered
                    raise
                except Unreachable as exc:
                    delivered += exc.sent
                    self._fresh(holder)
                    self._lost(generation, str(exc))
                    if exc.silent or attempt == 2 or budget.left() <= 0:
                        error = self._unreachable(exc)
                        error.delivered = delivered  # type: ignore[attr-defined]
                        error.uncertain = int(exc.silent and delivered < len(messages))  # type: ignore[attr-defined]
                        raise error from None


class LocalLink:
    """The way to a ``simpleSystemBase`` node: the caller's own process, one call at a time.

    There is no network here: the lock serialises calls into the single-threaded system.
    """

    connected = True

    def __init__(self, system: ActorSystem, router: Any) -> None:
        self._system = system
        self._router = router
        self._lock = threading.Lock()
        self._refs = itertools.count(1)
        self._pubsub: Any = None

    @property
    def router(self) -> Any:
        """The RootSupervisor's address."""
        return self._router

    def status(self) -> dict[str, Any]:
        """Always connected: the node is in this process."""
        return {"connected": True, "reconnects": 0}

    def after_fork(self) -> None:
        """Nothing to do: a simpleSystemBase node is not shared with a child."""

    def request(self, make: Callable[[int], Any], expected: tuple[type, ...], timeout: float) -> Any:
        """As :meth:`NodeLink.request`."""
        with self._lock:
            ref = next(self._refs)
            deadline = time.monotonic() + timeout
            reply = self._system.ask(self._router, make(ref), timeout)
            while True:
                if isinstance(reply, expected) and getattr(reply, "ref", ref) == ref:
                    return reply
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeliveryTimeout(f"no answer from the node within {timeout:g}s")
                reply = self._system.listen(remaining)

    def log(
        self,
        topic: str,
        rows: list[dict[str, Any]],
        timeout: float,
        on_wait: Callable[[], None] | None = None,
        patience: float | None = None,
    ) -> LogAccepted | LogRejected:
        """As :meth:`NodeLink.log` (always through the router)."""
        reply: LogAccepted | LogRejected = self.request(
            lambda ref: Log(topic, rows, True, ref), (LogAccepted, LogRejected), timeout
        )
        return reply

    def broadcast(self, messages: list[Any], patience: float | None = None) -> None:
        """Tell each message to the PubSub actor."""
        with self._lock:
            if self._pubsub is None:
                self._pubsub = self._system.createActor(PubSub, globalName=PUBSUB_NAME)
            for message in messages:
                self._system.tell(self._pubsub, message)
