"""The WAL benchmark: ``dl.log()`` throughput with ``wal.fsync`` always, interval and never.

``log()`` returns once the topic's write-ahead log holds the chunk, so the
fsync policy is on its critical path. Each variant runs on a fresh node (the
policy is a node setting); rounds alternate the variants. One caller logs
chunks of 100 rows with the blocking ``dl.log()``; the clock covers the calls
only (the delivery to the JSON-lines destination is flushed and counted
after it). The baseline is ``fsync = "never"``; ratios are variant / never.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable

from ._common import Metrics, Mode, Result, RssSampler, alternate, check_count, medians_of, ratio
from ._node import chunked, influx_rows, node, unique

POLICIES = ("never", "interval", "always")


def run(mode: Mode, chunk_size: int = 100) -> Result:
    """Alternate the three policies; report chunks/s and rows/s of ``log()`` and the ratios."""
    calls = int(mode.pick(2000, 500, 20))
    rounds = mode.rounds_or(5, 3, 1)
    chunks = chunked(influx_rows(calls * chunk_size), chunk_size)
    result = Result("wal_fsync", mode.name, {"calls": calls, "chunk_size": chunk_size,
                                            "rounds": rounds, "fsync_interval": 0.2,
                                            "destination": "jsonl"})
    with tempfile.TemporaryDirectory(prefix="dl-bench-wal-") as out, RssSampler() as sampler:

        def policy(name: str) -> Callable[[int], Metrics]:
            def go(r: int) -> Metrics:
                topic = unique(f"bench_wal_{name}")
                with node({"j": {"type": "jsonl", "directory": out}},
                          wal={"fsync": name, "fsync_interval": 0.2}, sampler=sampler) as dl:
                    dl.log(topic, [{"warm": 1}])
                    started = time.perf_counter()
                    for chunk in chunks:
                        dl.log(topic, chunk)
                    seconds = time.perf_counter() - started
                    dl.flush(600.0)
                with open(f"{out}/{topic}.jsonl", encoding="utf-8") as handle:
                    found = sum(1 for _ in handle)
                result.verified[topic] = check_count(topic, calls * chunk_size + 1, found)
                return {"calls_per_s": calls / seconds, "rows_per_s": calls * chunk_size / seconds,
                        "ms_per_call": seconds / calls * 1000.0}

            return go

        result.per_round = alternate(rounds, {name: policy(name) for name in POLICIES}, sampler)
    result.memory = sampler.peaks()
    result.medians = medians_of(result.per_round)
    never = result.medians["never"]["calls_per_s"]
    for name in POLICIES[1:]:
        result.ratios[f"{name}/never calls/s"] = ratio(result.medians[name]["calls_per_s"], never)
    result.notes.append("no target in the issue for this case: figures only")
    return result
