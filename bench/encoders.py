"""Case: the destinations' encoders alone, in this process (no node), against their baselines.

Line protocol, chunks of 1,000 rows of two shapes (``metric``: a tag, a float,
an int and a time, as in ``influxdb`` and ``peer_vmagent``; ``wide``: two
tags, a string with quotes, a bool, a float, an int, a value that is None in
one row of three, and a time), each chunk encoded into a request body:

* ``lp_compiled``: :func:`datalogger.lineprotocol.rows_encoder` (a function
  compiled per set of row keys) and :func:`~datalogger.lineprotocol.join_lines`,
  as the InfluxDB destination does;
* ``lp_generic``: :func:`~datalogger.lineprotocol.encode_row` row by row, value by
  value, then one join and encode: the encoder as it was before (and still the
  fallback for rows a compiled shape does not take);
* ``lp_point``: ``influxdb_client.Point`` per row, ``to_line_protocol()``, joined.

The three bodies are checked equal before the clocks run.

PostgreSQL binary COPY, chunks of 10,000 rows (the size of a merged hand-over)
of the ``postgres`` case's rows into a temporary table, client CPU time:

* ``pg_copy_rows``: :func:`datalogger.destinations._pg_copy.copy_rows`, psycopg's
  binary row formatter called straight into one buffer;
* ``pg_write_row``: ``Copy.write_row`` per row with the same types, as before.

Each figure is the median over rounds; the variants alternate within a round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from datalogger.destinations import _pg_copy
from datalogger.lineprotocol import ROW_ERRORS, encode_row, join_lines, rows_encoder

from ._common import POSTGRES_DSN, Metrics, Mode, Result, Target, alternate, medians_of, ratio
from ._node import Chunk, chunked, influx_rows, pg_rows

MEASUREMENT = "bench enc"
TARGET_COMPILED_VS_GENERIC = 2.0
TARGET_COMPILED_VS_POINT = 1.0
TARGET_PG_CPU = 1.0
#: Column types of the PostgreSQL rows (as the destination reads them from the catalog).
PG_TYPES = {
    "i": "bigint",
    "sensor": "text",
    "value": "double precision",
    "ts": "timestamp with time zone",
}


def wide_rows(count: int) -> list[dict[str, Any]]:
    """Rows of two tags, a quoted string, a bool, a float, an int, a sometimes-None and a time."""
    base = 1_767_225_600_000_000_000
    return [
        {
            "host": f"web {i % 7}",
            "dc": "eu,1",
            "msg": f'ok "{i}"',
            "up": i % 2 == 0,
            "load": i / 7,
            "n": i,
            "spare": None if i % 3 == 0 else i * 0.5,
            "time": base + i,
        }
        for i in range(count)
    ]


SHAPES: dict[str, tuple[Callable[[int], list[dict[str, Any]]], list[str]]] = {
    "metric": (influx_rows, ["sensor"]),
    "wide": (wide_rows, ["host", "dc"]),
}


def compiled(chunks: list[Chunk], tags: list[str]) -> list[bytes]:
    """Bodies by the destination's path: the compiled encoder, then one join per request."""
    encoder = rows_encoder(MEASUREMENT, tags, "time", "ns")
    return [join_lines(encoder.encode(chunk)[0])[0] for chunk in chunks]


def generic(chunks: list[Chunk], tags: list[str]) -> list[bytes]:
    """Bodies by the generic path, row by row and value by value (the encoder before)."""
    escaped = rows_encoder(MEASUREMENT, tags, "time", "ns").measurement
    tag_set = frozenset(tags)
    bodies = []
    for chunk in chunks:
        lines = []
        for row in chunk:
            try:
                lines.append(encode_row(row, escaped, tag_set, "time", "ns"))
            except ROW_ERRORS:
                continue
        bodies.append("\n".join(lines).encode("utf-8"))
    return bodies


def points(chunks: list[Chunk], tags: list[str]) -> list[bytes]:
    """Bodies by ``influxdb_client.Point``, one per row."""
    from influxdb_client import Point, WritePrecision

    bodies = []
    for chunk in chunks:
        lines = []
        for row in chunk:
            point = Point(MEASUREMENT)
            for key, value in row.items():
                if key == "time":
                    point.time(value, WritePrecision.NS)
                elif key in tags:
                    point.tag(key, value)
                else:
                    point.field(key, value)
            lines.append(point.to_line_protocol())
        bodies.append("\n".join(lines).encode("utf-8"))
    return bodies


def _timed(work: Callable[[], object], rows: int) -> Metrics:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"rows_per_s": rows / wall, "cpu_us_per_row": cpu / rows * 1e6}


def _line_protocol(mode: Mode, result: Result) -> dict[str, Callable[[int], Metrics]]:
    chunk_count = int(mode.pick(50, 10, 2))
    variants: dict[str, Callable[[int], Metrics]] = {}
    for shape, (make, tags) in SHAPES.items():
        chunks = chunked(make(1000 * chunk_count), 1000)
        rows = 1000 * chunk_count
        ours, old, reference = compiled(chunks, tags), generic(chunks, tags), points(chunks, tags)
        if not ours == old == reference:
            raise AssertionError(f"{shape}: the encoders do not give the same bodies")
        result.verified[f"{shape}: compiled == generic == Point bodies"] = len(ours)
        for name, encode in (("lp_compiled", compiled), ("lp_generic", generic), ("lp_point", points)):
            variants[f"{name}:{shape}"] = (
                lambda r, e=encode, c=chunks, t=tags, n=rows: _timed(lambda: e(c, t), n)
            )
    return variants


def _postgres(mode: Mode, conn: psycopg.Connection[Any]) -> dict[str, Callable[[int], Metrics]]:
    chunks = chunked(pg_rows(int(mode.pick(100_000, 30_000, 2_000))), 10_000)
    rows = sum(len(c) for c in chunks)
    names = list(PG_TYPES)
    conn.execute(
        "create temporary table bench_encoders (i bigint, sensor text, value double precision, "
        "ts timestamptz)"
    )
    statement = "copy bench_encoders (i, sensor, value, ts) from stdin (format binary)"
    adapters, binary = _pg_copy.plan(chunks[0], names, PG_TYPES, True)
    if binary is None:
        raise AssertionError("the postgres rows do not go in binary")

    def ours() -> None:
        with conn.cursor() as cur:
            for chunk in chunks:
                _pg_copy.copy_rows(cur, statement, names, adapters, binary, chunk)

    def write_row() -> None:
        from operator import itemgetter

        get = itemgetter(*names)
        with conn.cursor() as cur:
            for chunk in chunks:
                with cur.copy(statement) as copy:
                    copy.set_types(binary)
                    for row in chunk:
                        copy.write_row(get(row))

    def run(work: Callable[[], None]) -> Callable[[int], Metrics]:
        def measured(r: int) -> Metrics:
            conn.execute("truncate bench_encoders")
            return _timed(work, rows)

        return measured

    return {"pg_copy_rows": run(ours), "pg_write_row": run(write_row)}


def run(mode: Mode) -> Result:
    """Alternate the encoders; targets: compiled >= 2 x generic and >= 1 x Point rows/s."""
    rounds = mode.rounds_or(7, 3, 1)
    result = Result("encoders", mode.name, {"rounds": rounds, "lp_chunk": 1000, "pg_chunk": 10_000})
    variants = _line_protocol(mode, result)
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        variants.update(_postgres(mode, conn))
        result.per_round = alternate(rounds, variants)
        result.verified["postgres rows in the last round"] = conn.execute(
            "select count(*) from bench_encoders"
        ).fetchone()[0]
    result.medians = medians_of(result.per_round)
    med = result.medians
    for shape in SHAPES:
        ours = med[f"lp_compiled:{shape}"]["rows_per_s"]
        for base, limit in (("generic", TARGET_COMPILED_VS_GENERIC), ("point", TARGET_COMPILED_VS_POINT)):
            name = f"{shape}: compiled/{base} rows/s"
            result.ratios[name] = ratio(ours, med[f"lp_{base}:{shape}"]["rows_per_s"])
            result.targets.append(Target(name, result.ratios[name], ">=", limit))
    name = "postgres: write_row/copy_rows client CPU per row"
    result.ratios[name] = ratio(med["pg_write_row"]["cpu_us_per_row"], med["pg_copy_rows"]["cpu_us_per_row"])
    result.targets.append(Target(name, result.ratios[name], ">=", TARGET_PG_CPU))
    result.notes.append("cpu_us_per_row: this process's CPU time (the server's is not counted)")
    return result
