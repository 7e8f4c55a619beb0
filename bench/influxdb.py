"""Case 2: chunks through ``datalogger.log()`` into InfluxDB 1.x vs direct HTTP writes.

``ours``: ``dl.log(topic, chunk)`` per chunk (InfluxDB destination, v1 HTTP,
``sensor`` as tag), then ``dl.flush()``. ``http``: the same chunks encoded
with :func:`datalogger.lineprotocol.encode_rows` and POSTed to ``/write`` by
:class:`datalogger.destinations.influx_client.InfluxHTTP` (one keep-alive connection), one
request per chunk. Each round writes a fresh measurement; the points are
counted with ``SELECT count(i)`` at the end.

Baselines a user who wants the points stored fast would pick (issue 19):
``http_5000``, the same rows POSTed 5,000 lines a request; and ``send_data``,
the ceiling of our path: the InfluxDB destination's ``send_data`` called in
this process with no node and no actors, on groups of 10,000 rows (the node's
largest hand-over). influxdb-client's batching ``WriteApi`` needs the v2 write
API (``/api/v2/write``), which InfluxDB 1.6 does not have (it answers 404): that
baseline runs against VictoriaMetrics in the ``per_row`` case.

The sequence of issue 19, in this one process: 200,000 rows (``--smoke``: 200)
into PostgreSQL through a node, then as many into InfluxDB through a new node
(``seq_after_postgres``), against the InfluxDB part alone on a new node
(``seq_alone``). It also checks that a bulk load into servers that keep up,
with the default configuration, leaves no rows over the memory bound
(``spilled``: rows held only in the write-ahead log and read back from it).
"""

from __future__ import annotations

import time

from datalogger.destinations.influx_client import InfluxHTTP
from datalogger.lineprotocol import encode_rows

from ._common import Metrics, Mode, Result, RssSampler, Target, alternate, check_count, medians_of, ratio
from ._node import (
    Chunk,
    bulk_load_sequence,
    chunked,
    influx,
    influx_count,
    influx_create,
    influx_destination,
    influx_drop,
    influx_rows,
    log_chunks,
    node,
    pg_count,
    pg_drop,
    pg_rows,
    send_data_direct,
    unique,
)

TARGET = 0.8
TARGET_VS_LOOP = 1.2
"""Issue 19: we merge chunks, the per-chunk loop cannot."""
TARGET_VS_5000 = 0.6
"""Issue 19: against POSTs of 5,000 lines."""
TARGET_SEQUENCE = 1.5
"""Ours: the InfluxDB part after a PostgreSQL load takes at most 1.5 x as long as alone."""
BIG_POST = 5_000


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
    """Alternate the variants; targets: ours >= 0.8 x http rows/s and issue 19's."""
    total = int(mode.pick(500_000, 50_000, 200))
    chunk_size = min(chunk_size, total)
    rounds = mode.rounds_or(5, 3, 1)
    rows = influx_rows(total)
    chunks = chunked(rows, chunk_size)
    big = chunked(rows, BIG_POST)
    seq_total = int(mode.pick(200_000, 200_000, 200))
    seq_pg = chunked(pg_rows(seq_total), min(chunk_size, seq_total))
    seq_influx = chunked(influx_rows(seq_total), min(chunk_size, seq_total))
    database = unique("bench_influx")
    measurements: list[str] = []
    written: dict[str, list[str]] = {}
    result = Result("influxdb", mode.name, {"rows": total, "chunk_size": chunk_size,
                                           "rounds": rounds, "protocol": "v1 http",
                                           "sequence_rows": seq_total})
    influx_create(database)
    try:
        with RssSampler() as sampler, influx(database) as client:
            with node({"influx": influx_destination(database)}, sampler=sampler) as dl:
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

                def http_5000(r: int) -> Metrics:
                    measurement = f"http5000_r{r}"
                    measurements.append(measurement)
                    seconds = write_chunks(client, measurement, big)
                    return {"rows_per_s": total / seconds, "seconds": seconds}

                def direct(r: int) -> Metrics:
                    measurement = f"direct_r{r}"
                    measurements.append(measurement)
                    seconds = send_data_direct(influx_destination(database), measurement, rows)
                    return {"rows_per_s": total / seconds, "seconds": seconds}

                result.per_round = alternate(
                    rounds,
                    {"ours": ours, "http": http, "http_5000": http_5000, "send_data": direct},
                    sampler,
                )

            def sequence(postgres_first: bool) -> Metrics:
                figures = bulk_load_sequence(
                    seq_pg, seq_influx, database, written, sampler, postgres_first
                )
                figures["influx_rows_per_s"] = seq_total / figures["influx_seconds"]
                return figures

            result.per_round.update(alternate(
                rounds,
                {"seq_after_postgres": lambda r: sequence(True),
                 "seq_alone": lambda r: sequence(False)},
                sampler,
            ))
        result.memory = sampler.peaks()
        for name in measurements:
            result.verified[name] = check_count(name, total, influx_count(database, name, total))
        for name in written.get("influxdb", []):
            result.verified[name] = check_count(name, seq_total, influx_count(database, name, seq_total))
        for name in written.get("postgres", []):
            result.verified[name] = check_count(name, seq_total, pg_count(name))
    finally:
        influx_drop(database)
        pg_drop(written.get("postgres", []))
    result.medians = medians_of(result.per_round)
    _targets(result, chunk_size, seq_total)
    return result


def _targets(result: Result, chunk_size: int, seq_total: int) -> None:
    medians = result.medians
    ours = medians["ours"]["rows_per_s"]
    value = ratio(ours, medians["http"]["rows_per_s"])
    result.ratios["ours/http rows/s"] = value
    result.targets.append(Target("ours/http rows/s", value, ">=", TARGET))
    vs_5000 = ratio(ours, medians["http_5000"]["rows_per_s"])
    result.ratios["ours/http_5000 rows/s"] = vs_5000
    result.ratios["ours/send_data (in-process ceiling) rows/s"] = ratio(
        ours, medians["send_data"]["rows_per_s"]
    )
    result.targets.append(Target(
        f"issue 19: InfluxDB v1 HTTP {chunk_size:,}-row chunks, ours/per-chunk POST loop rows/s",
        value, ">=", TARGET_VS_LOOP))
    result.targets.append(Target(
        f"issue 19: InfluxDB v1 HTTP {chunk_size:,}-row chunks, ours/5,000-line POSTs rows/s",
        vs_5000, ">=", TARGET_VS_5000))
    after = medians["seq_after_postgres"]["influx_seconds"]
    alone = medians["seq_alone"]["influx_seconds"]
    slower = ratio(after, alone)
    result.ratios["InfluxDB part after a PostgreSQL load / alone, seconds"] = slower
    result.targets.append(Target(
        "InfluxDB after PostgreSQL in one process / alone, seconds", slower, "<=", TARGET_SEQUENCE))
    # Every round, not the median: one round over the bound is a miss.
    spilled = max(
        figures.get(key, 0.0)
        for variant in ("seq_after_postgres", "seq_alone")
        for figures in result.per_round[variant]
        for key in ("pg_spilled", "influx_spilled")
    )
    result.targets.append(Target(
        f"issue 19: bulk load of {seq_total:,} rows, default config, rows read back from the WAL "
        "(PostgreSQL and InfluxDB, most of any round)",
        spilled, "<=", 0))
    result.notes.append(
        "influxdb-client's batching WriteApi: InfluxDB 1.6 has no /api/v2/write (404); "
        "it is measured against VictoriaMetrics in the per_row case"
    )
