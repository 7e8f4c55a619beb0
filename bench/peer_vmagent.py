"""Case: datalogger against vmagent, a real peer shipper, on one job in one run.

The job: N rows, as InfluxDB line protocol, from an application to
VictoriaMetrics, stored and counted there. Both shippers write to the same
private VictoriaMetrics (its own port and data dir, as it is stopped below).

``vmagent`` (Debian package ``victoria-metrics``): the application encodes each
batch of rows as line protocol (:func:`datalogger.lineprotocol.encode_rows`) and
POSTs it to vmagent's ``/write``; vmagent forwards to VictoriaMetrics with its
persistent queue on (``-remoteWrite.tmpDataPath``), defaults otherwise.
``datalogger``: the application calls ``dl.log(topic, batch)``; the node writes
to VictoriaMetrics with the InfluxDB destination, ``protocol = "v2"``.
``datalogger_nowait``: the caller's view, ``dl.log_nowait(topic, row)`` per row
(batched in the caller's process), against vmagent's POST per batch; at most
:data:`NOWAIT_ROWS` rows a run.

Every clock stops when VictoriaMetrics counts all N rows (``count_over_time``
after a flush of its buffers), the same test for both sides. Reported per
variant: rows/s until stored, the caller's calls/s and rows/s (time in the
calling loop only), and the peak PSS of the shipper's processes (the node's
process group; vmagent's process).

Outage (one run per side): a steady load of :data:`RATE_ROWS` rows/s in
batches of :data:`OUTAGE_BATCH`; VictoriaMetrics is stopped (SIGTERM) for 30 s
(quick: 8 s) mid-load and started again; the load goes on for as long as
before the stop, then ends. Reported: rows accepted by each shipper, rows lost
(accepted but not stored once the backlog drained or the wait ended: distinct
timestamps read back with ``/api/v1/export``), duplicates, seconds from the
restart until the backlog from before it is stored and until everything is,
and PSS while the server was down. Our destination retries for as long as it
takes (``retry.max_attempts`` 1,000,000, ``max_delay`` 5 s), as vmagent does by
default; with the default retry policy (5 attempts) rows would go to the
dead-letter store during a 30 s outage instead.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import datalogger
from datalogger.lineprotocol import encode_rows

from ._common import Metrics, Mode, Result, RssSampler, Target, check_count, medians_of, ratio
from ._node import chunked, node, unique
from ._victoria import (
    PrivateVictoriaMetrics,
    Row,
    VmAgent,
    metric_rows,
    vm_destination,
    vm_distinct,
    wait_count,
)

BATCH = 1000
"""Rows per ``log()`` call and per POST to vmagent."""
RATE_ROWS = 10_000
"""Rows per second of the outage's steady load."""
NOWAIT_ROWS = 100_000
"""Rows of a ``log_nowait()`` run at most: its in-process queue holds ``client_buffer_rows``
(100,000 by default), and a caller faster than the pipeline would see rows beyond that dropped
(counted)."""
OUTAGE_BATCH = 500
"""Rows per call in the outage's steady load."""
RETRY = {"max_attempts": 1_000_000, "initial_delay": 0.2, "max_delay": 5.0, "jitter": 0.1}
"""Our destination's retry policy here: retry as long as it takes, as vmagent does."""
OUTAGE_FIRST = 100_000_000
"""Row number (ms after ``BASE_MS``) of the outage's first row, after every throughput run."""
WARM_ROW = OUTAGE_FIRST - 1
"""Row number of the one row each side writes before the clocks run."""
TARGET_STORED = 1.0
TARGET_LOST = 0


class VmAgentClient:
    """The application's side of the vmagent path: encode a batch, POST it to ``/write``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, measurement: str, rows: list[Row]) -> bool:
        """Encode ``rows`` and POST them; True when vmagent accepted them (2xx)."""
        body, bad = encode_rows(rows, measurement, ["sensor"], "time", "ms")
        if bad:
            raise ValueError(f"{len(bad)} rows cannot be encoded")
        try:
            self._conn.request("POST", "/write?precision=ms", body.encode("utf-8"))
            answer = self._conn.getresponse()
            answer.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return False
        return 200 <= answer.status < 300

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


@contextmanager
def _labelled(samplers: dict[str, RssSampler], phase: str) -> Iterator[None]:
    """Label the samples of every sampler with ``phase``."""
    with ExitStack() as stack:
        for sampler in samplers.values():
            stack.enter_context(sampler.labelled(phase))
        yield


def _pss(samplers: dict[str, RssSampler], side: str, phase: str) -> float:
    """Peak PSS (MB) of ``side``'s processes in ``phase``."""
    values = [s[5] for s in samplers[side].series if s[1] == phase]
    return max(values) if values else 0.0


def _processes(samplers: dict[str, RssSampler], side: str, phase: str) -> int:
    """Most processes of ``side`` seen in ``phase``."""
    return max((s[4] for s in samplers[side].series if s[1] == phase), default=0)


def _throughput(
    mode: Mode,
    vm: PrivateVictoriaMetrics,
    dl: datalogger.DataLogger,
    agent: VmAgentClient,
    names: dict[str, str],
    samplers: dict[str, RssSampler],
    result: Result,
) -> None:
    """Rounds of the three variants, alternating; fills ``result`` (medians, ratios, target).

    Each side writes one topic (one measurement) throughout, as an application
    would; every run takes the next range of row numbers, so of timestamps, and
    is counted in that range.
    """
    count = int(mode.pick(500_000, 100_000, 2_000))
    nowait_count = min(count, NOWAIT_ROWS)
    rounds = mode.rounds_or(3, 3, 1)
    wait = float(mode.pick(300.0, 120.0, 30.0))
    result.params.update(
        {"rows": count, "rows_nowait": nowait_count, "batch": BATCH, "rounds": rounds}
    )
    ranges = iter(range(0, WARM_ROW - count, count))

    def finish(
        what: str, name: str, first: int, started: float, called: float, calls: int, rows: int
    ) -> Metrics:
        found = wait_count(vm.url, name, rows, wait, first=first)
        stored = time.perf_counter()
        result.verified[what] = check_count(what, rows, found)
        return {
            "rows_per_s_stored": rows / (stored - started),
            "seconds_to_stored": stored - started,
            "caller_calls_per_s": calls / (called - started),
            "caller_rows_per_s": rows / (called - started),
        }

    def ours(r: int) -> Metrics:
        first = next(ranges)
        batches = chunked(metric_rows(count, first), BATCH)
        started = time.perf_counter()
        for batch in batches:
            dl.log(names["datalogger"], batch)
        called = time.perf_counter()
        return finish(
            f"datalogger r{r}", names["datalogger"], first, started, called, len(batches), count
        )

    def ours_nowait(r: int) -> Metrics:
        first = next(ranges)
        rows = metric_rows(nowait_count, first)
        started = time.perf_counter()
        for row in rows:
            dl.log_nowait(names["datalogger"], row)
        called = time.perf_counter()
        return finish(
            f"datalogger_nowait r{r}", names["datalogger"], first, started, called,
            nowait_count, nowait_count,
        )

    def vmagent(r: int) -> Metrics:
        first = next(ranges)
        batches = chunked(metric_rows(count, first), BATCH)
        started = time.perf_counter()
        for batch in batches:
            if not agent.post(names["vmagent"], batch):
                raise RuntimeError("vmagent refused a batch")
        called = time.perf_counter()
        return finish(
            f"vmagent r{r}", names["vmagent"], first, started, called, len(batches), count
        )

    variants: dict[str, Callable[[int], Metrics]] = {
        "datalogger": ours,
        "vmagent": vmagent,
        "datalogger_nowait": ours_nowait,
    }
    order = list(variants)
    result.per_round = {name: [] for name in order}
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            with _labelled(samplers, name):
                result.per_round[name].append(variants[name](r))
    dropped = dl.stats().get("client", {}).get("dropped", 0)
    if dropped:
        raise RuntimeError(f"log_nowait dropped {dropped} rows")
    result.medians = medians_of(result.per_round)
    for name in order:
        side = "vmagent" if name == "vmagent" else "datalogger"
        result.medians[name]["peak_pss_mb"] = _pss(samplers, side, name)
        result.medians[name]["processes"] = _processes(samplers, side, name)
    med = result.medians
    stored = ratio(med["datalogger"]["rows_per_s_stored"], med["vmagent"]["rows_per_s_stored"])
    result.ratios["datalogger/vmagent rows/s until stored"] = stored
    result.ratios["datalogger_nowait/vmagent rows/s until stored"] = ratio(
        med["datalogger_nowait"]["rows_per_s_stored"], med["vmagent"]["rows_per_s_stored"]
    )
    result.ratios["datalogger/vmagent caller calls/s (log() vs POST, a batch each)"] = ratio(
        med["datalogger"]["caller_calls_per_s"], med["vmagent"]["caller_calls_per_s"]
    )
    result.ratios["datalogger_nowait/vmagent caller rows/s (log_nowait() vs POST)"] = ratio(
        med["datalogger_nowait"]["caller_rows_per_s"], med["vmagent"]["caller_rows_per_s"]
    )
    result.ratios["datalogger/vmagent peak PSS"] = ratio(
        med["datalogger"]["peak_pss_mb"], med["vmagent"]["peak_pss_mb"]
    )
    result.targets.append(
        Target("datalogger/vmagent rows/s until stored", stored, ">=", TARGET_STORED)
    )


def _outage_side(
    side: str,
    send: Callable[[list[Row]], bool],
    name: str,
    vm: PrivateVictoriaMetrics,
    samplers: dict[str, RssSampler],
    seconds: tuple[float, float, float],
    backlog: Callable[[], int],
) -> dict[str, float]:
    """One outage under load for one side (rows from :data:`OUTAGE_FIRST`); its figures."""
    up, down, wait = seconds
    sent = accepted = at_restart = backlog_peak = 0
    caught_up = all_stored = 0.0

    def load(duration: float) -> None:
        nonlocal sent, accepted, backlog_peak
        started = time.monotonic()
        first = sent
        next_probe = started
        while (now := time.monotonic()) - started < duration:
            batch = metric_rows(OUTAGE_BATCH, OUTAGE_FIRST + sent)
            sent += len(batch)
            if send(batch):
                accepted += len(batch)
            if now >= next_probe:
                backlog_peak = max(backlog_peak, backlog())
                next_probe = now + 1.0
            delay = started + (sent - first) / RATE_ROWS - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def watch_backlog() -> None:
        nonlocal caught_up
        if wait_count(vm.url, name, at_restart, wait, 0.2, OUTAGE_FIRST) >= at_restart:
            caught_up = time.monotonic()

    with _labelled(samplers, f"{side}:up"):
        load(up)
    vm.stop()
    with _labelled(samplers, f"{side}:down"):
        load(down)
    vm.start()
    restarted = time.monotonic()
    at_restart = accepted
    watcher = threading.Thread(target=watch_backlog, daemon=True)
    watcher.start()
    with _labelled(samplers, f"{side}:after"):
        load(up)
    with _labelled(samplers, f"{side}:drain"):
        if wait_count(vm.url, name, accepted, wait, 0.2, OUTAGE_FIRST) >= accepted:
            all_stored = time.monotonic()
        watcher.join(wait)
    samples, distinct = vm_distinct(vm.url, name, OUTAGE_FIRST, sent)
    return {
        "rows_sent": sent,
        "rows_accepted": accepted,
        "rows_refused": sent - accepted,
        "rows_stored": distinct,
        "rows_lost": max(0, accepted - distinct),
        "duplicates": samples - distinct,
        "backlog_stored_s_after_restart": (caught_up - restarted) if caught_up else -1.0,
        "all_stored_s_after_restart": (all_stored - restarted) if all_stored else -1.0,
        "peak_pss_mb_up": _pss(samplers, side, f"{side}:up"),
        "peak_pss_mb_down": _pss(samplers, side, f"{side}:down"),
        "peak_backlog_bytes": backlog_peak,
    }


def _outage(
    mode: Mode,
    vm: PrivateVictoriaMetrics,
    dl: datalogger.DataLogger,
    agent: VmAgent,
    client: VmAgentClient,
    names: dict[str, str],
    samplers: dict[str, RssSampler],
    result: Result,
) -> None:
    """The outage for vmagent, then for datalogger; fills ``result``."""
    up = float(mode.pick(5.0, 3.0, 0.5))
    down = float(mode.pick(30.0, 8.0, 1.0))
    wait = float(mode.pick(180.0, 90.0, 30.0))
    result.params.update(
        {
            "outage_up_s": up,
            "outage_down_s": down,
            "outage_rate_rows_per_s": RATE_ROWS,
            "outage_batch": OUTAGE_BATCH,
            "datalogger_retry": RETRY,
        }
    )
    topic = names["datalogger"]

    def log(batch: list[Row]) -> bool:
        dl.log(topic, batch)
        return True

    def wal_bytes() -> int:
        return int(dl.stats()["topics"].get(topic, {}).get("vm", {}).get("wal_bytes", 0))

    figures = {
        "vmagent": _outage_side(
            "vmagent",
            lambda batch: client.post(names["vmagent"], batch),
            names["vmagent"],
            vm,
            samplers,
            (up, down, wait),
            agent.queue_bytes,
        ),
        "datalogger": _outage_side(
            "datalogger", log, topic, vm, samplers, (up, down, wait), wal_bytes
        ),
    }
    for side, numbers in figures.items():
        result.per_round[f"outage:{side}"] = [dict(numbers)]
        result.medians[f"outage:{side}"] = dict(numbers)
        result.verified[f"outage {side} rows stored/accepted"] = (
            f"{int(numbers['rows_stored'])}/{int(numbers['rows_accepted'])}"
        )
    ours, theirs = figures["datalogger"], figures["vmagent"]
    result.ratios["outage datalogger/vmagent peak PSS while down"] = ratio(
        ours["peak_pss_mb_down"], theirs["peak_pss_mb_down"]
    )
    result.targets.append(
        Target("datalogger rows lost in the outage", ours["rows_lost"], "<=", TARGET_LOST)
    )
    result.notes.append(
        f"outage: vmagent lost {int(theirs['rows_lost'])} of {int(theirs['rows_accepted'])} "
        f"rows accepted, datalogger {int(ours['rows_lost'])} of {int(ours['rows_accepted'])}; "
        "peak_backlog_bytes: vmagent's queue dir, our write-ahead log (the backlog stays there)"
    )


def run(mode: Mode) -> Result:
    """Throughput rounds, then the outage; both shippers against one private VictoriaMetrics."""
    result = Result("peer_vmagent", mode.name, {})
    run_id = unique("peer")
    names = {"datalogger": f"{run_id}_dl", "vmagent": f"{run_id}_agent"}
    vm = PrivateVictoriaMetrics()
    try:
        agent = VmAgent(vm.url)
        client = VmAgentClient(agent.port)
        try:
            samplers = {"datalogger": RssSampler(), "vmagent": RssSampler()}
            samplers["vmagent"].watch(agent.port)
            with samplers["datalogger"], samplers["vmagent"], node(
                {"vm": vm_destination(vm.url, retry=RETRY)}, sampler=samplers["datalogger"]
            ) as dl:
                warm = metric_rows(1, WARM_ROW)
                dl.log(names["datalogger"], warm)
                client.post(names["vmagent"], warm)
                for name in names.values():
                    wait_count(vm.url, name, 1, 30.0, first=WARM_ROW)
                _throughput(mode, vm, dl, client, names, samplers, result)
                _outage(mode, vm, dl, agent, client, names, samplers, result)
            result.memory = {
                side: {phase: peak["node_pss"] for phase, peak in sampler.peaks().items()}
                for side, sampler in samplers.items()
            }
        finally:
            client.close()
            agent.close()
    finally:
        vm.close()
    result.notes.append(
        "peak RSS lines hold PSS (MB) per phase: datalogger = the node's processes, "
        "vmagent = its process"
    )
    return result
