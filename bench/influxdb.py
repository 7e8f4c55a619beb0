"""Case 2: chunks through ``datalogger.log()`` into InfluxDB 1.x vs direct HTTP writes.

``ours``: ``dl.log(topic, chunk)`` per chunk (InfluxDB destination, v1 HTTP,
``sensor`` as tag), then ``dl.flush()``. ``http``: the same chunks encoded
with :func:`datalogger.lineprotocol.encode_rows` and POSTed to ``/write`` by
:class:`datalogger.influx_client.InfluxHTTP` (one keep-alive connection), one
request per chunk. Each round writes a fresh measurement; the points are
counted with ``SELECT count(i)`` at the end.
"""

from __future__ import annotations

import time

from datalogger.influx_client import InfluxHTTP
from datalogger.lineprotocol import encode_rows

from ._common import Metrics, Mode, Result, RssSampler, Target, alternate, check_count, medians_of, ratio
from ._node import (
    Chunk,
    chunked,
    influx,
    influx_count,
    influx_create,
    influx_destination,
    influx_drop,
    influx_rows,
    log_chunks,
    node,
    unique,
)

TARGET = 0.8


def write_chunks(client: InfluxHTTP, measurement: str, chunks: list[Chunk]) -> float:
    """Seconds to encode and write every chunk, one request each."""
    started = time.perf_counter()
    for chunk in chunks:
        text, bad = encode_rows(chunk, measurement, ["sensor"], "time")
        if bad:
            raise RuntimeError(f"{len(bad)} rows could not be encoded")
        client.write(text)
    return time.perf_counter() - started


def run(mode: Mode, chunk_size: int = 1000) -> Result:
    """Alternate ``ours`` and ``http``; target: ours >= 0.8 x http rows/s."""
    total = int(mode.pick(500_000, 50_000, 200))
    chunk_size = min(chunk_size, total)
    rounds = mode.rounds_or(5, 3, 1)
    chunks = chunked(influx_rows(total), chunk_size)
    database = unique("bench_influx")
    measurements: list[str] = []
    result = Result("influxdb", mode.name, {"rows": total, "chunk_size": chunk_size,
                                           "rounds": rounds, "protocol": "v1 http"})
    influx_create(database)
    try:
        with RssSampler() as sampler, influx(database) as client, node(
            {"influx": influx_destination(database)}, sampler=sampler
        ) as dl:
            dl.log("bench_warm", chunks[0][:10])
            dl.flush(60.0)

            def ours(r: int) -> Metrics:
                topic = f"ours_r{r}"
                measurements.append(topic)
                seconds = log_chunks(dl, topic, chunks)
                return {"rows_per_s": total / seconds, "seconds": seconds}

            def http(r: int) -> Metrics:
                measurement = f"http_r{r}"
                measurements.append(measurement)
                seconds = write_chunks(client, measurement, chunks)
                return {"rows_per_s": total / seconds, "seconds": seconds}

            result.per_round = alternate(rounds, {"ours": ours, "http": http}, sampler)
        result.memory = sampler.peaks()
        for name in measurements:
            result.verified[name] = check_count(name, total, influx_count(database, name, total))
    finally:
        influx_drop(database)
    result.medians = medians_of(result.per_round)
    value = ratio(result.medians["ours"]["rows_per_s"], result.medians["http"]["rows_per_s"])
    result.ratios["ours/http rows/s"] = value
    result.targets.append(Target("ours/http rows/s", value, ">=", TARGET))
    return result
