"""Drive one actor's handlers without an actor system, as Thespian would.

:class:`Harness` builds an actor and stands in for its Thespian reference:
it records what the actor sends, creates and schedules. :meth:`Harness.deliver`
hands a message to the actor the way Thespian does: when the handler raises,
the same message is delivered once more, and a second failure is counted as a
``PoisonMessage``. That is what makes half-made state dangerous: the retry
sees it.
"""

from __future__ import annotations

import itertools
from typing import Any

from thespian.actors import ActorAddress


class FakeRef:
    """What an actor reaches through ``self._myRef``: records instead of acting."""

    def __init__(self, name: str) -> None:
        self.address = ActorAddress(name)
        self.globalName = None
        self.created: list[tuple[type, ActorAddress, Any, Any]] = []
        self.sent: list[tuple[ActorAddress, Any]] = []
        self.timers: list[Any] = []
        self.fail_create: set[str] = set()
        self._ids = itertools.count(1)

    def createActor(self, cls: type, requirements: Any, global_name: Any, source_hash: Any) -> ActorAddress:
        if cls.__name__ in self.fail_create:
            self.fail_create.discard(cls.__name__)
            raise RuntimeError(f"cannot create {cls.__name__}")
        address = ActorAddress(f"{cls.__name__}-{next(self._ids)}")
        self.created.append((cls, address, requirements, global_name))
        return address

    def actor_send(self, target: ActorAddress, message: Any) -> None:
        self.sent.append((target, message))

    def wakeupAfter(self, period: Any, payload: Any) -> None:
        self.timers.append(payload)

    def handleDeadLetters(self, address: Any, start: bool) -> None:
        pass


class Harness:
    """One actor of class ``cls``, its handlers called directly."""

    def __init__(self, cls: type) -> None:
        self.actor = cls()
        self.ref = FakeRef(cls.__name__)
        self.actor._myRef = self.ref
        self.poisoned: list[Any] = []

    def deliver(self, message: Any, sender: Any = None) -> None:
        """Deliver ``message``; on an exception deliver it once more, as Thespian does."""
        sender = sender if sender is not None else ActorAddress("sender")
        try:
            self.actor.receiveMessage(message, sender)
        except Exception:
            try:
                self.actor.receiveMessage(message, sender)
            except Exception:
                self.poisoned.append(message)

    def created(self, name: str) -> list[ActorAddress]:
        """Addresses of the actors of class ``name`` created so far."""
        return [address for cls, address, _, _ in self.ref.created if cls.__name__ == name]

    def sent(self, kind: type, to: Any = None) -> list[Any]:
        """Messages of type ``kind`` sent so far (to ``to`` only, when given)."""
        return [m for target, m in self.ref.sent if isinstance(m, kind) and (to is None or target == to)]

    def sent_to(self, kind: type) -> list[ActorAddress]:
        """Where messages of type ``kind`` went."""
        return [target for target, m in self.ref.sent if isinstance(m, kind)]
