"""Case 3: one row per call, the caller's cost and the time until every row is stored.

Both writers send the InfluxDB v2 write API (``/api/v2/write``) to the same
server, the shared VictoriaMetrics of ``.ci/start-victoriametrics``, and the
rows are counted there. ``ours``: ``dl.log_nowait(topic, row)`` in a tight loop
(client-side batching, :mod:`datalogger.batching`), InfluxDB destination with
``protocol = "v2"``, then ``dl.flush()``. ``influxdb_client``:
``WriteApi.write(bucket, record=point_dict)`` with ``WriteOptions`` batch mode
(batch_size 1,000), then ``close()``. ``queue_handler``:
``logger.info("point %s", row)`` through :class:`logging.handlers.QueueHandler`,
drained by a ``QueueListener`` into a list (no I/O at all).

``calls_per_s`` is measured around the loop only; ``seconds_to_stored``
runs until the rows are in the destination.
"""

from __future__ import annotations

import logging
import queue
import time
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from ._common import (
    Metrics,
    Mode,
    Result,
    RssSampler,
    Target,
    alternate,
    check_count,
    medians_of,
    ratio,
)
from ._node import node, unique
from ._victoria import VM_URL, healthy, metric_rows, vm_count, vm_destination, wait_count

TARGET_VS_CLIENT = 1.5
TARGET_VS_QUEUE = 1.0
TARGET_STORED_VS_CLIENT = 2.0
"""Issue 19: rows stored per second, one row per ``log_nowait()``, vs the batching WriteApi."""


class ListHandler(logging.Handler):
    """Keeps every record in a list."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Append ``record``."""
        self.records.append(record)


def queue_handler_round(rows: list[dict[str, Any]]) -> Metrics:
    """A QueueHandler round: calls/s of ``logger.info`` and seconds until the list holds all."""
    logger = logging.getLogger(unique("bench.per_row"))
    logger.propagate = False
    logger.setLevel(logging.INFO)
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sink = ListHandler()
    listener = QueueListener(q, sink)
    handler = QueueHandler(q)
    logger.addHandler(handler)
    listener.start()
    started = time.perf_counter()
    for row in rows:
        logger.info("point %s", row)
    called = time.perf_counter()
    listener.stop()
    stored = time.perf_counter()
    logger.removeHandler(handler)
    check_count("queue_handler list", len(rows), len(sink.records))
    return _metrics(len(rows), started, called, stored)


def _metrics(count: int, started: float, called: float, stored: float) -> Metrics:
    return {
        "calls_per_s": count / (called - started),
        "seconds_to_stored": stored - started,
        "rows_per_s_stored": count / (stored - started),
    }


def run(mode: Mode) -> Result:
    """Alternate the three; targets: ours >= 1.5 x influxdb_client and >= QueueHandler calls/s."""
    from influxdb_client import InfluxDBClient, WriteOptions, WritePrecision

    if not healthy(VM_URL):
        raise RuntimeError(f"no VictoriaMetrics at {VM_URL}: run .ci/start-victoriametrics")
    count = int(mode.pick(100_000, 20_000, 200))
    rounds = mode.rounds_or(5, 3, 1)
    rows = metric_rows(count)
    run_id = unique("per_row")
    result = Result("per_row", mode.name, {"rows": count, "rounds": rounds,
                                          "influxdb_client_batch_size": 1000,
                                          "server": f"VictoriaMetrics at {VM_URL}"})
    client = InfluxDBClient(url=VM_URL, token="unused", org="bench")
    with RssSampler() as sampler, node(
        {"influx": vm_destination()}, sampler=sampler
    ) as dl:
        dl.log_nowait(f"{run_id}_warm", rows[0])
        dl.flush(60.0)

        def ours(r: int) -> Metrics:
            topic = f"{run_id}_ours_r{r}"
            started = time.perf_counter()
            for row in rows:
                dl.log_nowait(topic, row)
            called = time.perf_counter()
            dl.flush(600.0)
            wait_count(VM_URL, topic, count, 30.0)
            return _metrics(count, started, called, time.perf_counter())

        def influxdb_client(r: int) -> Metrics:
            measurement = f"{run_id}_client_r{r}"
            points = [
                {"measurement": measurement, "tags": {"sensor": row["sensor"]},
                 "fields": {"value": row["value"], "i": row["i"]}, "time": row["time"]}
                for row in rows
            ]
            write_api = client.write_api(
                write_options=WriteOptions(batch_size=1000, flush_interval=1000)
            )
            started = time.perf_counter()
            for point in points:
                write_api.write(bucket="bench", record=point, write_precision=WritePrecision.MS)
            called = time.perf_counter()
            write_api.close()
            wait_count(VM_URL, measurement, count, 30.0)
            return _metrics(count, started, called, time.perf_counter())

        variants = {"ours": ours, "influxdb_client": influxdb_client,
                    "queue_handler": lambda r: queue_handler_round(rows)}
        result.per_round = alternate(rounds, variants, sampler)
        client_stats = dl.stats().get("client", {})
    client.close()
    result.memory = sampler.peaks()
    if client_stats.get("dropped"):
        raise RuntimeError(f"log_nowait dropped {client_stats['dropped']} rows")
    for r in range(rounds):
        for name in (f"{run_id}_ours_r{r}", f"{run_id}_client_r{r}"):
            result.verified[name] = check_count(name, count, vm_count(VM_URL, name))
    result.medians = medians_of(result.per_round)
    ours_calls = result.medians["ours"]["calls_per_s"]
    vs_client = ratio(ours_calls, result.medians["influxdb_client"]["calls_per_s"])
    vs_queue = ratio(ours_calls, result.medians["queue_handler"]["calls_per_s"])
    result.ratios["ours/influxdb_client calls/s"] = vs_client
    result.ratios["ours/queue_handler calls/s"] = vs_queue
    result.ratios["ours/influxdb_client seconds_to_stored"] = ratio(
        result.medians["ours"]["seconds_to_stored"],
        result.medians["influxdb_client"]["seconds_to_stored"],
    )
    result.targets.append(Target("ours/influxdb_client calls/s", vs_client, ">=", TARGET_VS_CLIENT))
    result.targets.append(Target("ours/queue_handler calls/s", vs_queue, ">=", TARGET_VS_QUEUE))
    stored = ratio(
        result.medians["influxdb_client"]["seconds_to_stored"],
        result.medians["ours"]["seconds_to_stored"],
    )
    result.targets.append(Target(
        "issue 19: one row per log_nowait(), influxdb_client/ours seconds until stored",
        stored, ">=", TARGET_STORED_VS_CLIENT))
    return result
