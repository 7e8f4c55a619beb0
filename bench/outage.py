"""Case 6: a destination down under steady load, then recovered.

A steady load (chunks of 100 rows at a fixed rate, blocking ``dl.log()``)
goes to :class:`bench.dests.FlagDestination`, which fails while a flag file
exists. Phases: ``up`` (a few seconds), ``down`` (flag present: ~30 s, quick
~8 s), then the flag is removed and the load stops; ``drain`` lasts until
``dl.flush()`` returns. The node holds at most ``max_buffered_rows`` in
memory; the rest stays only in the write-ahead log and is read back from it,
so its RSS must stay bounded and flat while the backlog grows. The baseline
(``steady``) is the same load for the same time with the destination up
throughout, on its own node.

Reported: the node's RSS series (min, median, max per phase and the growth
from the first to the last third of the outage), the largest ``wal_only_rows``
(rows held only in the write-ahead log) seen in ``dl.stats()``, and the
seconds to drain after recovery.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

import datalogger

from ._common import Mode, Result, RssSampler, Target, check_count
from ._node import node, unique
from .dests import recorded

RATE_ROWS = 5000
CHUNK = 100


def _destination(out: str, flag: str, max_buffered: int) -> dict[str, Any]:
    return {
        "type": "bench.dests:FlagDestination",
        "directory": out,
        "flag": flag,
        "max_buffered_rows": max_buffered,
        "overflow": "spill",
        "retry": {"max_attempts": 1_000_000, "initial_delay": 0.2, "max_delay": 1.0,
                  "jitter": 0.05},
    }


def _load(dl: datalogger.DataLogger, topic: str, seconds: float, first: int,
          stats: dict[str, Any]) -> int:
    """Log chunks at :data:`RATE_ROWS` rows/s for ``seconds``; return the next ``i``."""
    started = time.monotonic()
    next_stats = started
    i = first
    while (now := time.monotonic()) - started < seconds:
        dl.log(topic, [{"i": k, "value": k * 0.5, "sensor": "s1"} for k in range(i, i + CHUNK)])
        i += CHUNK
        if now >= next_stats:
            entry = dl.stats()["topics"].get(topic, {}).get("flag", {})
            stats["wal_only_rows"] = max(stats.get("wal_only_rows", 0), entry.get("wal_only_rows", 0))
            stats["buffered"] = max(stats.get("buffered", 0), entry.get("buffered", 0))
            next_stats = now + 1.0
        delay = started + (i - first) / RATE_ROWS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return i


def _summary(series: list[float]) -> dict[str, float]:
    if not series:
        return {}
    third = max(1, len(series) // 3)
    return {
        "min": round(min(series), 1),
        "median": round(statistics.median(series), 1),
        "max": round(max(series), 1),
        "first_third_median": round(statistics.median(series[:third]), 1),
        "last_third_median": round(statistics.median(series[-third:]), 1),
        "samples": len(series),
    }


def run(mode: Mode) -> Result:
    """Run ``steady`` then ``outage`` (one round each); report RSS, spill and drain time."""
    up = float(mode.pick(5.0, 3.0, 0.5))
    down = float(mode.pick(30.0, 8.0, 1.0))
    max_buffered = int(mode.pick(5000, 5000, 500))
    result = Result("outage", mode.name, {"rate_rows_per_s": RATE_ROWS, "chunk": CHUNK,
                                         "up_s": up, "down_s": down,
                                         "max_buffered_rows": max_buffered})
    with tempfile.TemporaryDirectory(prefix="dl-bench-outage-") as out, RssSampler(0.5) as sampler:
        flag = os.path.join(out, "down.flag")
        figures: dict[str, dict[str, Any]] = {}
        for variant in ("steady", "outage"):
            topic = unique(f"bench_{variant}")
            stats: dict[str, Any] = {}
            with node({"flag": _destination(out, flag, max_buffered)}, sampler=sampler) as dl:
                dl.log(topic, [{"i": -1}])
                dl.flush(60.0)
                with sampler.labelled(f"{variant}:up"):
                    i = _load(dl, topic, up, 0, stats)
                if variant == "outage":
                    open(flag, "w").close()
                with sampler.labelled(f"{variant}:down"):
                    i = _load(dl, topic, down, i, stats)
                with sampler.labelled(f"{variant}:drain"):
                    if os.path.exists(flag):
                        os.remove(flag)
                    started = time.perf_counter()
                    dl.flush(600.0)
                    drain = time.perf_counter() - started
                final = dl.stats()["topics"][topic]["flag"]
            got = [v for v in recorded(out, topic) if v != -1]
            check_count(f"{topic} rows", i, len(got))
            check_count(f"{topic} distinct rows", i, len(set(got)))
            result.verified[topic] = i
            figures[variant] = {"drain_s": drain, "max_wal_only_rows": stats.get("wal_only_rows", 0),
                                "max_buffered_rows_seen": stats.get("buffered", 0),
                                "rows": i, "spilled_rows": final.get("spilled", 0)}
    series: dict[str, list[float]] = {}
    pss: dict[str, list[float]] = {}
    for _, phase, node_mb, _caller, _procs, node_pss in sampler.series:
        series.setdefault(phase, []).append(node_mb)
        pss.setdefault(phase, []).append(node_pss)
    result.extra["rss_series_mb"] = {p: [round(v, 1) for v in s] for p, s in series.items()}
    result.memory = {p: _summary(s) for p, s in series.items() if p != "idle"}
    result.extra["pss_summary_mb"] = {p: _summary(s) for p, s in pss.items() if p != "idle"}
    result.per_round = {v: [{k: float(x) for k, x in f.items()}] for v, f in figures.items()}
    result.medians = {v: r[0] for v, r in result.per_round.items()}
    down_rss = result.memory.get("outage:down", {})
    steady_rss = result.memory.get("steady:down", {})
    if down_rss and steady_rss:
        result.ratios["outage/steady peak node RSS"] = down_rss["max"] / steady_rss["max"]
        growth = down_rss["last_third_median"] / down_rss["first_third_median"]
        result.ratios["outage RSS last third / first third"] = growth
        result.targets.append(Target("RSS growth over the outage (flat)", growth, "<=", 1.10))
    if figures["outage"]["max_wal_only_rows"] <= 0:
        result.notes.append("nothing was spilled: the backlog stayed within max_buffered_rows")
    result.notes.append("the 1.10 flatness bound is ours; the issue asks for bounded and flat")
    return result
