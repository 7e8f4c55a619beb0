"""Case 4: round trip of a blocking ``dl.log()`` of one row vs a raw Thespian ``ask``.

``ours``: ``dl.log(topic, [row])``, which returns once the topic's
TopicSupervisor has appended the chunk to its write-ahead log (default
``fsync = "interval"``), JSON-lines destination. ``ask``: ``ActorSystem.ask``
of the same row to :class:`bench.actors.Echo`, created in the same
``multiprocTCPBase`` node through a second system handle (as
``datalogger.connect`` makes one). Per round, p50 and p99 of the per-call
latency; the report gives the medians over rounds and ours / ask.

Each round runs both on a node that signs its frames (the default) and on one
with ``security.sign = false`` (``*_unsigned``), a fresh node each, in turn:
``ours`` against ``ask_unsigned`` (plain Thespian pickles) is the 1.5x target,
``ours`` against ``ours_unsigned`` the cost of signing (target: under 5% at p50).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from thespian.actors import ActorSystem

from datalogger._thespian import log_defs

from ._common import Metrics, Mode, Result, RssSampler, Target, alternate, check_count, medians_of, ratio
from ._node import cpu_seconds, node, unique

TARGET = 1.5
SIGNING_TARGET = 1.05
"""Signing may cost at most 5% of the blocking ``log()`` p50."""


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
    """Alternate a signing node and an unsigned one; targets: ours <= 1.5 x ask at p50 and p99,
    and signing costs under 5% of ours at p50."""
    count = int(mode.pick(3000, 500, 20))
    rounds = mode.rounds_or(7, 4, 1)
    result = Result("latency", mode.name, {"calls_per_round": count, "rounds": rounds,
                                          "rows_per_call": 1, "destination": "jsonl"})

    def measure(sign: bool) -> Any:
        suffix = "" if sign else "_unsigned"

        def one_node(r: int) -> Metrics:
            topic = unique("bench_latency")
            with tempfile.TemporaryDirectory(prefix="dl-bench-jsonl-") as out, node(
                {"j": {"type": "jsonl", "directory": out}}, sampler=sampler,
                security={"sign": sign},
            ) as dl:
                assert dl.admin_port is not None
                system = ActorSystem("multiprocTCPBase", {"Admin Port": dl.admin_port},
                                     logDefs=log_defs(), transientUnique=True)
                echo = system.createActor("bench.actors.Echo")
                row: dict[str, Any] = {"sensor": "s1", "value": 0.5, "i": 0}
                if system.ask(echo, row, 10.0) != row:
                    raise RuntimeError("the Echo actor did not answer")
                dl.log(topic, [row])  # warm up
                for _ in range(min(count, 100)):
                    system.ask(echo, row, 10.0)

                def ask(i: int) -> None:
                    if system.ask(echo, row, 10.0) is None:
                        raise RuntimeError("ask timed out")

                # ours and ask in turn, in halves, so drift within the node hits both alike
                ours_times: list[float] = []
                ask_times: list[float] = []
                ours_cpu = ask_cpu = 0.0
                for _half in range(2):
                    cpu = cpu_seconds(dl.admin_port)
                    ours_times += time_calls(lambda i: dl.log(topic, [{**row, "i": i}]), count // 2)
                    between = cpu_seconds(dl.admin_port)
                    ask_times += time_calls(ask, count // 2)
                    ours_cpu += between - cpu
                    ask_cpu += cpu_seconds(dl.admin_port) - between
                dl.flush(60.0)
                with open(f"{out}/{topic}.jsonl", encoding="utf-8") as handle:
                    result.verified[topic] = check_count(topic, 1 + 2 * (count // 2), sum(1 for _ in handle))
                system.tell(echo, _exit_request())
            calls = 2 * (count // 2)
            return {
                **{f"ours{suffix} {k}": v for k, v in summarize(ours_times).items()},
                **{f"ask{suffix} {k}": v for k, v in summarize(ask_times).items()},
                f"ours{suffix} cpu_us_per_call": ours_cpu / calls * 1e6,
                f"ask{suffix} cpu_us_per_call": ask_cpu / calls * 1e6,
            }

        return one_node

    with RssSampler() as sampler:
        nodes = alternate(rounds, {"signed": measure(True), "unsigned": measure(False)}, sampler)
    result.per_round = {}
    for per_node in nodes.values():
        for metrics in per_node:
            split: dict[str, Metrics] = {}
            for key, value in metrics.items():
                variant, name = key.split(" ")
                split.setdefault(variant, {})[name] = value
            for variant, values in split.items():
                result.per_round.setdefault(variant, []).append(values)
    result.memory = sampler.peaks()
    result.medians = medians_of(result.per_round)
    med = result.medians
    for q in ("p50_ms", "p99_ms"):
        value = ratio(med["ours"][q], med["ask_unsigned"][q])
        result.ratios[f"ours/ask {q}"] = value
        result.targets.append(Target(f"ours/ask {q}", value, "<=", TARGET))
        result.ratios[f"signed/unsigned ours {q}"] = ratio(med["ours"][q], med["ours_unsigned"][q])
        result.ratios[f"signed/unsigned ask {q}"] = ratio(med["ask"][q], med["ask_unsigned"][q])
    result.targets.append(
        Target("signed/unsigned ours p50_ms", result.ratios["signed/unsigned ours p50_ms"], "<=",
               SIGNING_TARGET)
    )
    for variant in ("ours", "ask"):
        result.ratios[f"signed/unsigned {variant} CPU per call"] = ratio(
            med[variant]["cpu_us_per_call"], med[f"{variant}_unsigned"]["cpu_us_per_call"]
        )
    result.notes.append(
        "ours: dl.log() on a node signing its frames (the default); *_unsigned: security.sign = "
        "false in the same round; ask: a raw Thespian ask on the unsigned node (plain pickles)"
    )
    return result


def _exit_request() -> Any:
    from thespian.actors import ActorExitRequest

    return ActorExitRequest()
