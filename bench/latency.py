"""Case 4: round trip of a blocking ``dl.log()`` of one row vs a raw Thespian ``ask``.

``ours``: ``dl.log(topic, [row])``, which returns once the topic's
TopicSupervisor has appended the chunk to its write-ahead log (default
``fsync = "interval"``), JSON-lines destination. ``ask``: ``ActorSystem.ask``
of the same row to :class:`bench.actors.Echo`, created in the same
``multiprocTCPBase`` node through a second system handle (as
``datalogger.connect`` makes one). Per round, p50 and p99 of the per-call
latency; the report gives the medians over rounds and ours / ask.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from thespian.actors import ActorSystem

from datalogger._thespian import log_defs

from ._common import Metrics, Mode, Result, RssSampler, Target, alternate, check_count, medians_of, ratio
from ._node import node, unique

TARGET = 1.5


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def summarize(latencies: list[float]) -> Metrics:
    """p50, p99 and mean (ms) of latencies given in seconds."""
    values = sorted(x * 1000.0 for x in latencies)
    return {
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "mean_ms": sum(values) / len(values),
    }


def time_calls(call: Any, count: int) -> list[float]:
    """Seconds taken by each of ``count`` calls of ``call(i)``."""
    out: list[float] = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - started)
    return out


def run(mode: Mode) -> Result:
    """Alternate ``ours`` and ``ask``; target: ours <= 1.5 x ask at p50 and p99."""
    count = int(mode.pick(3000, 500, 20))
    rounds = mode.rounds_or(7, 4, 1)
    result = Result("latency", mode.name, {"calls_per_round": count, "rounds": rounds,
                                          "rows_per_call": 1, "destination": "jsonl"})
    topic = unique("bench_latency")
    with tempfile.TemporaryDirectory(prefix="dl-bench-jsonl-") as out, RssSampler() as sampler:
        with node({"j": {"type": "jsonl", "directory": out}}, sampler=sampler) as dl:
            assert dl.admin_port is not None
            system = ActorSystem("multiprocTCPBase", {"Admin Port": dl.admin_port},
                                 logDefs=log_defs(), transientUnique=True)
            echo = system.createActor("bench.actors.Echo")
            row: dict[str, Any] = {"sensor": "s1", "value": 0.5, "i": 0}
            if system.ask(echo, row, 10.0) != row:
                raise RuntimeError("the Echo actor did not answer")
            dl.log(topic, [row])  # warm up
            logged = 1

            def ours(r: int) -> Metrics:
                nonlocal logged
                latencies = time_calls(lambda i: dl.log(topic, [{**row, "i": i}]), count)
                logged += count
                return summarize(latencies)

            def ask(r: int) -> Metrics:
                def one(i: int) -> None:
                    if system.ask(echo, row, 10.0) is None:
                        raise RuntimeError("ask timed out")

                return summarize(time_calls(one, count))

            result.per_round = alternate(rounds, {"ours": ours, "ask": ask}, sampler)
            dl.flush(60.0)
            with open(f"{out}/{topic}.jsonl", encoding="utf-8") as handle:
                result.verified[topic] = check_count(topic, logged, sum(1 for _ in handle))
            system.tell(echo, _exit_request())
    result.memory = sampler.peaks()
    result.medians = medians_of(result.per_round)
    for q in ("p50_ms", "p99_ms"):
        value = ratio(result.medians["ours"][q], result.medians["ask"][q])
        result.ratios[f"ours/ask {q}"] = value
        result.targets.append(Target(f"ours/ask {q}", value, "<=", TARGET))
    return result


def _exit_request() -> Any:
    from thespian.actors import ActorExitRequest

    return ActorExitRequest()
