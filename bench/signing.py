"""Case ``signing``: what signing and checking one frame costs, without a node.

Each variant turns a message into a frame and back the way a node does, a
given number of times: ``plain`` with Thespian's own ``pickle.dumps`` and
``pickle.loads``; ``unsigned`` with datalogger's serializer under
``security.sign = false`` (the restricted unpickler only); ``signed`` with the
default (HMAC-SHA256 over the pickle, ``hmac.compare_digest``, the restricted
unpickler). Messages: a ``Log`` of 1 row, as a blocking ``log()`` sends, and of
1,000 rows, as the ``postgres`` case sends. Figures only: the targets are in
the ``latency`` and ``postgres`` cases, which run whole nodes signed and
unsigned.
"""

from __future__ import annotations

import os
import pickle
import time
from typing import Any

from datalogger import security
from datalogger.keyfiles import Keyring
from datalogger.messages import Log

from ._common import Metrics, Mode, Result, alternate, medians_of
from ._node import pg_rows


def _best(call: Any, count: int, batches: int = 15) -> float:
    """Microseconds per call, the best of ``batches`` batches (other load only ever adds time)."""
    batch = max(1, count // batches)
    best = float("inf")
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(batch):
            call()
        best = min(best, (time.perf_counter() - started) / batch * 1e6)
    return best


def run(mode: Mode) -> Result:
    """Alternate ``plain``, ``unsigned`` and ``signed`` for each message size."""
    count = int(mode.pick(20_000, 5_000, 50))
    rounds = mode.rounds_or(7, 3, 1)
    messages = {"1 row": Log("t", pg_rows(1), True, 1), "1000 rows": Log("t", pg_rows(1000), True, 1)}
    sizes = {name: len(pickle.dumps(m)) for name, m in messages.items()}
    result = Result("signing", mode.name, {"frames_per_round": count, "rounds": rounds,
                                          "pickle_bytes": sizes})
    signed = Keyring(secret=os.urandom(32), source="bench")
    unsigned = Keyring(sign=False, source="bench")

    def variant(ring: Keyring | None) -> Any:
        def one(r: int) -> Metrics:
            out: Metrics = {}
            if ring is not None:
                security.use(ring)
            dumps = pickle.dumps if ring is None else security.SERIALIZER.dumps
            loads = pickle.loads if ring is None else security.SERIALIZER.loads
            for name, message in messages.items():
                n = count if name == "1 row" else max(15, count // 50)
                frame = dumps(message)
                out[f"{name} dumps us"] = _best(lambda m=message: dumps(m), n)
                out[f"{name} loads us"] = _best(lambda f=frame: loads(f), n)
            return out

        return one

    result.per_round = alternate(
        rounds, {"plain": variant(None), "unsigned": variant(unsigned), "signed": variant(signed)}
    )
    result.medians = medians_of(result.per_round)
    medians = result.medians
    for name in messages:
        for step in ("dumps", "loads"):
            key = f"{name} {step} us"
            result.ratios[f"signed - unsigned {name} {step} (us)"] = (
                medians["signed"][key] - medians["unsigned"][key]
            )
    result.notes.append(
        "us: microseconds to make one frame (dumps) or read one (loads), best of 15 batches"
    )
    return result
