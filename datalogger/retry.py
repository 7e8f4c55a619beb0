"""Retry decisions with tenacity policies, without sleeping.

tenacity's ``stop``, ``wait`` and ``retry`` objects are evaluated against a
:class:`tenacity.RetryCallState` that we fill in ourselves, so an actor can ask
"retry, and after how long?" and schedule the next attempt with
``wakeupAfter`` instead of ``time.sleep``.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import tenacity

from .config import RetrySettings
from .exceptions import PermanentError

__all__ = ["RetryDecision", "RetryPolicy"]


@attrs.frozen
class RetryDecision:
    """What to do after a failed attempt."""

    retry: bool
    """True to try again; False to give up (dead-letter)."""
    delay: float
    """Seconds to wait before the next attempt."""


class RetryPolicy:
    """A retry policy built from :class:`~datalogger.config.RetrySettings`."""

    def __init__(self, settings: RetrySettings) -> None:
        self.stop: Any = settings.stop or tenacity.stop_after_attempt(settings.max_attempts)
        wait: Any = settings.wait
        if wait is None:
            wait = tenacity.wait_exponential(
                multiplier=settings.initial_delay,
                exp_base=settings.multiplier,
                max=settings.max_delay,
            )
            if settings.jitter > 0:
                wait = wait + tenacity.wait_random(0, settings.jitter)
        self.wait = wait
        self.retry: Any = settings.retry or tenacity.retry_if_exception(
            lambda exc: not isinstance(exc, PermanentError)
        )

    def retryable(self, error: BaseException) -> bool:
        """Whether ``error`` is of a kind the policy retries at all (its ``retry`` predicate).

        An error it does not retry is taken as permanent: not about the moment
        but about the rows (or the configuration).
        """
        if isinstance(error, PermanentError):
            return False
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = 1
        state.outcome = tenacity.Future.construct(1, error, True)
        return bool(self.retry(state))

    def decide(
        self, attempt: int, error: BaseException, started: float, now: float | None = None
    ) -> RetryDecision:
        """Decide after attempt number ``attempt`` (1-based) failed with ``error``.

        Args:
            attempt: how many attempts have been made, this one included.
            error: the exception the attempt raised.
            started: ``time.monotonic()`` of the first attempt.
            now: the time of the failure on the clock of ``started``
                (default ``time.monotonic()``), so a fake clock can be injected.
        """
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        state.start_time = started
        state.outcome_timestamp = time.monotonic() if now is None else now
        state.outcome = tenacity.Future.construct(attempt, error, True)
        if isinstance(error, PermanentError) or not self.retry(state) or self.stop(state):
            return RetryDecision(retry=False, delay=0.0)
        return RetryDecision(retry=True, delay=max(0.0, float(self.wait(state))))
