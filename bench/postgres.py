"""Case 1: chunks through ``datalogger.log()`` into PostgreSQL vs a direct COPY loop.

``ours``: ``dl.log(topic, chunk)`` for every chunk on a ``multiprocTCPBase``
node, then ``dl.flush()``; the clock stops when every row is in the table.
``copy``: the same chunks written by one psycopg connection, one
``COPY ... FROM STDIN`` and one commit per chunk, into a table of the same
shape. Each round uses fresh tables; the table is created inside the timed
region for both (our destination creates it on the first chunk).
"""

from __future__ import annotations

import time
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
from ._node import (
    PG_COLUMNS,
    Chunk,
    chunked,
    log_chunks,
    node,
    pg_connect,
    pg_count,
    pg_destination,
    pg_drop,
    pg_rows,
    unique,
)

TARGET = 0.8


def copy_chunks(conn: Any, table: str, chunks: list[Chunk]) -> float:
    """Seconds to create ``table`` and COPY every chunk into it, one commit per chunk."""
    names = list(PG_COLUMNS)
    columns = ", ".join(f'"{n}"' for n in names)
    statement = f'COPY "{table}" ({columns}) FROM STDIN'
    started = time.perf_counter()
    conn.execute(
        f'CREATE TABLE "{table}" (' + ", ".join(f'"{n}" {t}' for n, t in PG_COLUMNS.items()) + ")"
    )
    conn.commit()
    for chunk in chunks:
        with conn.cursor() as cur, cur.copy(statement) as copy:
            for row in chunk:
                copy.write_row([row[n] for n in names])
        conn.commit()
    return time.perf_counter() - started


def run(mode: Mode, chunk_size: int = 1000, total: int | None = None) -> Result:
    """Alternate ``ours`` and ``copy``; target: ours >= 0.8 x copy rows/s."""
    total = total or int(mode.pick(500_000, 50_000, 200))
    chunk_size = min(chunk_size, total)
    rounds = mode.rounds_or(5, 3, 1)
    chunks = chunked(pg_rows(total), chunk_size)
    tables: list[str] = []
    result = Result("postgres", mode.name, {"rows": total, "chunk_size": chunk_size,
                                           "rounds": rounds, "base": "multiprocTCPBase"})
    try:
        with RssSampler() as sampler, pg_connect() as conn, node(
            {"pg": pg_destination()}, sampler=sampler
        ) as dl:
            dl.log(unique("bench_pg_warm"), chunks[0][:10])  # start the actors
            dl.flush(60.0)

            def ours(r: int) -> Metrics:
                topic = unique(f"bench_pg_r{r}")
                tables.append(topic)
                seconds = log_chunks(dl, topic, chunks)
                return {"rows_per_s": total / seconds, "seconds": seconds}

            def copy(r: int) -> Metrics:
                table = unique(f"bench_copy_r{r}")
                tables.append(table)
                seconds = copy_chunks(conn, table, chunks)
                return {"rows_per_s": total / seconds, "seconds": seconds}

            result.per_round = alternate(rounds, {"ours": ours, "copy": copy}, sampler)
        result.memory = sampler.peaks()
        for table in tables:
            if not table.startswith("bench_pg_warm"):
                result.verified[table] = check_count(table, total, pg_count(table))
    finally:
        pg_drop(tables)
    result.medians = medians_of(result.per_round)
    value = ratio(result.medians["ours"]["rows_per_s"], result.medians["copy"]["rows_per_s"])
    result.ratios["ours/copy rows/s"] = value
    result.targets.append(Target("ours/copy rows/s", value, ">=", TARGET))
    result.notes.append("memory: 'node' = our node's processes; the COPY loop runs in 'caller'")
    return result
