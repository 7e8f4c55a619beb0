"""SendActor: one attempt to send one chunk, for ``send_async`` destinations.

Created by a DestinationWorker for each attempt. It builds the destination,
calls ``send_data`` once, reports a :class:`SendOutcome` to the worker and
exits. If it dies instead, the worker notices through ``ChildActorExited``
and treats the attempt as failed.
"""

from __future__ import annotations

import logging
from typing import Any

from thespian.actors import ActorExitRequest, ActorTypeDispatcher

from ..delivery import DestinationHost, describe, picklable
from ..messages import SendChunk, SendOutcome

log = logging.getLogger("datalogger.send")


class SendActor(ActorTypeDispatcher):
    """Sends one chunk, then exits."""

    def receiveMsg_SendChunk(self, message: SendChunk, sender: Any) -> None:
        """Build the destination, send, report, exit."""
        host = DestinationHost(message.spec, message.topic)
        try:
            attempt = host.send(message.rows)
        except Exception as exc:
            outcome = SendOutcome(
                message.token, False, error=describe(exc), error_type=type(exc).__name__
            )
        else:
            error = attempt.error
            outcome = SendOutcome(
                token=message.token,
                ok=attempt.ok,
                result=picklable(attempt.result),
                error=picklable(error) if error is not None else None,
                error_type=type(error).__name__ if error is not None else None,
                permanent=attempt.permanent,
                bad=attempt.bad,
                unsure=attempt.unsure,
                isolate=attempt.isolate,
            )
        finally:
            host.close()
        self.send(sender, outcome)
        self.send(self.myAddress, ActorExitRequest())

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        """Anything else is ignored."""
        if not isinstance(message, ActorExitRequest):
            log.warning("SendActor ignored %r", type(message).__name__)
