"""Case 5: throughput with 1, 4 and 16 topics logged in parallel.

Four threads, each with its own handle (``datalogger.connect`` to the node),
log chunks of 1,000 rows with the blocking ``dl.log()``; thread ``k`` cycles
over the topics ``k, k + 4, ...`` (with one topic all four share it). The clock
stops when ``dl.flush()`` returns. The destination is JSON lines (cheap, so the
core is what is measured). ``direct`` is the baseline: the same four threads
calling :class:`datalogger.destinations.jsonl.JsonlDestination` ``send_data``
in this process, one topic. Every topic is warmed up (its actors started)
before the clock runs; the lines are counted at the end.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable

import datalogger
from datalogger.destinations.jsonl import JsonlDestination

from ._common import Metrics, Mode, Result, RssSampler, alternate, check_count, medians_of, ratio
from ._node import chunked, influx_rows, node

THREADS = 4
SETTINGS = (1, 4, 16)


def parallel(work: list[Callable[[], None]]) -> float:
    """Seconds for the callables to finish, each in its own thread (errors re-raised)."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def go() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        return go

    threads = [threading.Thread(target=wrap(fn)) for fn in work]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def run(mode: Mode) -> Result:
    """Alternate the settings; report rows/s per setting and its ratio to one topic."""
    total = int(mode.pick(200_000, 40_000, 400))
    chunk_size = min(1000, total // THREADS)
    rounds = mode.rounds_or(3, 2, 1)
    chunks = chunked(influx_rows(total), chunk_size)
    share = [chunks[k::THREADS] for k in range(THREADS)]
    result = Result("topics", mode.name, {"rows": total, "chunk_size": chunk_size,
                                         "threads": THREADS, "rounds": rounds,
                                         "destination": "jsonl"})
    expected: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="dl-bench-topics-") as out, RssSampler() as sampler:
        with node({"j": {"type": "jsonl", "directory": out}}, sampler=sampler) as dl:
            assert dl.admin_port is not None
            handles = [datalogger.connect(dl.admin_port, make_default=False)
                       for _ in range(THREADS)]
            topics = {n: [f"bench_s{n}_t{k}" for k in range(n)] for n in SETTINGS}
            for names in topics.values():
                for name in names:
                    dl.log(name, [{"warm": 1}])
                    expected[name] = 1
            dl.flush(60.0)

            def setting(n: int) -> Callable[[int], Metrics]:
                def go(r: int) -> Metrics:
                    def worker(k: int) -> Callable[[], None]:
                        mine = topics[n][k % n :: THREADS] or [topics[n][k % n]]

                        def loop() -> None:
                            for j, chunk in enumerate(share[k]):
                                topic = mine[j % len(mine)]
                                handles[k].log(topic, chunk)
                                expected[topic] += len(chunk)

                        return loop

                    seconds = parallel([worker(k) for k in range(THREADS)])
                    started = time.perf_counter()
                    dl.flush(600.0)
                    seconds += time.perf_counter() - started
                    return {"rows_per_s": total / seconds, "seconds": seconds}

                return go

            def direct(r: int) -> Metrics:
                dest = JsonlDestination(directory=os.path.join(out, "direct"))
                topic = f"direct_r{r}"
                seconds = parallel(
                    [lambda k=k: [dest.send_data(topic, c) for c in share[k]]  # type: ignore[misc]
                     for k in range(THREADS)]
                )
                with open(dest.path_for(topic), encoding="utf-8") as handle:
                    check_count(topic, total, sum(1 for _ in handle))
                return {"rows_per_s": total / seconds, "seconds": seconds}

            variants: dict[str, Callable[[int], Metrics]] = {
                f"topics_{n}": setting(n) for n in SETTINGS
            }
            variants["direct"] = direct
            result.per_round = alternate(rounds, variants, sampler)
            for extra in handles:
                extra.close()
        for topic, count in sorted(expected.items()):
            with open(os.path.join(out, f"{topic}.jsonl"), encoding="utf-8") as handle:
                found = sum(1 for _ in handle)
            result.verified[topic] = check_count(topic, count, found)
    result.memory = sampler.peaks()
    result.medians = medians_of(result.per_round)
    one = result.medians["topics_1"]["rows_per_s"]
    for n in SETTINGS[1:]:
        result.ratios[f"topics_{n}/topics_1 rows/s"] = ratio(
            result.medians[f"topics_{n}"]["rows_per_s"], one
        )
    result.ratios["topics_1/direct rows/s"] = ratio(one, result.medians["direct"]["rows_per_s"])
    result.notes.append("no target in the issue for this case: figures only")
    return result
