"""Case ``logging``: ``DataLoggerHandler`` against ``QueueHandler`` + ``QueueListener``.

Both are the non-blocking way to ship Python log records: the calling thread
puts the record on a queue and a background thread takes it from there.
``ours``: ``logger.info(...)`` through :class:`datalogger.logging.DataLoggerHandler`
on a handle connected to a ``multiprocTCPBase`` node with a JSONL destination,
then ``flush()``. ``queue_handler``: the same calls through
:class:`logging.handlers.QueueHandler`, drained by a ``QueueListener`` into a
list (no I/O at all, so the baseline is the cheapest possible).

``calls_per_s`` is measured around the logging loop only (the caller's cost,
with the background thread running meanwhile); ``seconds_to_stored`` runs
until the records are in the destination (the list for the baseline).
Target: ours >= the baseline's calls/s.
"""

from __future__ import annotations

import logging
import queue
import tempfile
import time
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from typing import Any

import datalogger
from datalogger.logging import DataLoggerHandler

from ._common import Metrics, Mode, Result, Target, alternate, check_count, medians_of, ratio
from ._node import node, unique

TARGET_VS_QUEUE = 1.0


class ListHandler(logging.Handler):
    """Keeps every record in a list."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Append ``record``."""
        self.records.append(record)


def _logger() -> logging.Logger:
    logger = logging.getLogger(unique("bench.logging"))
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def _calls(logger: logging.Logger, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        logger.info("request %d served", i, extra={"status": 200, "path": "/index"})
    return time.perf_counter() - started


def _metrics(count: int, calls: float, stored: float) -> Metrics:
    return {"calls_per_s": count / calls, "seconds_to_stored": stored, "rows_per_s_stored": count / stored}


def queue_handler_round(count: int) -> Metrics:
    """One QueueHandler + QueueListener round."""
    logger = _logger()
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sink = ListHandler()
    listener = QueueListener(records, sink)
    handler = QueueHandler(records)
    logger.addHandler(handler)
    listener.start()
    started = time.perf_counter()
    calls = _calls(logger, count)
    listener.stop()
    stored = time.perf_counter() - started
    logger.removeHandler(handler)
    check_count("queue_handler list", count, len(sink.records))
    return _metrics(count, calls, stored)


def ours_round(dl: datalogger.DataLogger, topic: str, count: int) -> Metrics:
    """One DataLoggerHandler round, to ``topic``."""
    logger = _logger()
    handler = DataLoggerHandler(topic=topic, handle=dl)
    logger.addHandler(handler)
    started = time.perf_counter()
    calls = _calls(logger, count)
    dl.flush(600.0)
    stored = time.perf_counter() - started
    logger.removeHandler(handler)
    if handler.dropped:
        raise RuntimeError(f"DataLoggerHandler dropped {handler.dropped} records")
    return _metrics(count, calls, stored)


def run(mode: Mode) -> Result:
    """Alternate ours and the QueueHandler baseline; target: ours >= its calls/s."""
    count = int(mode.pick(100_000, 20_000, 500))
    rounds = mode.rounds_or(5, 3, 1)
    result = Result("logging", mode.name, {"records": count, "rounds": rounds})
    result.notes.append("the baseline drains into a list in memory; ours stores into JSONL files")
    with tempfile.TemporaryDirectory(prefix="dl-bench-logs-") as out:
        with node({"files": {"type": "jsonl", "directory": out}}) as dl:
            ours_round(dl, "warm", 100)
            result.per_round = alternate(rounds, {
                "ours": lambda r: ours_round(dl, f"logs_r{r}", count),
                "queue_handler": lambda r: queue_handler_round(count),
            })
        for r in range(rounds):
            path = Path(out) / f"logs_r{r}.jsonl"
            with open(path, encoding="utf-8") as handle:
                result.verified[f"logs_r{r}"] = check_count(f"logs_r{r}", count, sum(1 for _ in handle))
    result.medians = medians_of(result.per_round)
    vs_queue = ratio(result.medians["ours"]["calls_per_s"], result.medians["queue_handler"]["calls_per_s"])
    result.ratios["ours/queue_handler calls/s"] = vs_queue
    result.ratios["ours/queue_handler seconds_to_stored"] = ratio(
        result.medians["ours"]["seconds_to_stored"], result.medians["queue_handler"]["seconds_to_stored"]
    )
    result.targets.append(Target("ours/queue_handler calls/s", vs_queue, ">=", TARGET_VS_QUEUE))
    return result
