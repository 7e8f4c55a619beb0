"""Nodes, rows and server helpers shared by the benchmark cases."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import psutil
from thespian.actors import InvalidActorAddress

import datalogger
from datalogger.destinations.influx_client import InfluxHTTP, series_rows

from ._common import INFLUX_HOST, INFLUX_PORT, POSTGRES_DSN, RssSampler, free_port

Row = dict[str, Any]
Chunk = list[Row]

#: Column types of the PostgreSQL tables, ours and the baseline's alike.
PG_COLUMNS = {
    "i": "bigint",
    "sensor": "text",
    "value": "double precision",
    "ts": "timestamptz",
}
_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)  # noqa: UP017 - keeps Python 3.10 support


def unique(prefix: str) -> str:
    """``prefix_<12 hex>``: a fresh topic, table or database name."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def pg_rows(count: int, offset: int = 0) -> list[Row]:
    """Rows for PostgreSQL: an int, a short text, a float and a timestamp."""
    return [
        {
            "i": i,
            "sensor": f"s{i % 16}",
            "value": i * 0.25,
            "ts": _EPOCH + timedelta(milliseconds=i),
        }
        for i in range(offset, offset + count)
    ]


def influx_rows(count: int, offset: int = 0) -> list[Row]:
    """Rows for InfluxDB: a tag (``sensor``), two fields and a distinct ns timestamp."""
    base = 1_767_225_600_000_000_000  # 2026-01-01
    return [
        {"sensor": f"s{i % 16}", "value": i * 0.25, "i": i, "time": base + i}
        for i in range(offset, offset + count)
    ]


def chunked(rows: list[Row], size: int) -> list[Chunk]:
    """``rows`` cut into lists of ``size``."""
    return [rows[k : k + size] for k in range(0, len(rows), size)]


@contextmanager
def node(
    destinations: Mapping[str, Any],
    wal: Mapping[str, Any] | None = None,
    sampler: RssSampler | None = None,
    **settings: Any,
) -> Iterator[datalogger.DataLogger]:
    """A ``multiprocTCPBase`` node on a free admin port and a temporary data_dir.

    With ``sampler``, the node's processes are counted in its RSS samples.
    """
    with tempfile.TemporaryDirectory(prefix="dl-bench-") as state:
        config: dict[str, Any] = {"data_dir": state, "destinations": dict(destinations), **settings}
        if wal is not None:
            config["wal"] = dict(wal)
        dl = _start_on_a_free_port(config)
        if sampler is not None and dl.admin_port is not None:
            sampler.watch(dl.admin_port)
        group = node_group(dl.admin_port)
        try:
            yield dl
        finally:
            dl.shutdown()
            wait_group_gone(group)


def _start_on_a_free_port(config: dict[str, Any], tries: int = 3) -> datalogger.DataLogger:
    """``datalogger.start`` on a free admin port; another free port if one was taken meanwhile.

    ``free_port()`` only finds a port that was free a moment ago: on a busy machine
    another program may bind it before the node's admin does.
    """
    for attempt in range(1, tries + 1):
        try:
            port = free_port()
            return datalogger.start(config, base="multiprocTCPBase", admin_port=port, make_default=False)
        except InvalidActorAddress:
            if attempt == tries:
                raise
    raise AssertionError("unreachable")


def node_group(admin_port: int | None) -> int | None:
    """Process group of the node whose admin listens on ``admin_port`` (None: not found)."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr[1] == admin_port:
            return os.getpgid(conn.pid) if conn.pid else None
    return None


def cpu_seconds(admin_port: int | None) -> float:
    """CPU seconds (user + system) used so far by this process and every process of the node
    on ``admin_port``: what a variant costs, unlike wall time, barely moved by other load."""
    total = sum(psutil.Process().cpu_times()[:2])
    group = node_group(admin_port)
    if group is None:
        return total
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and os.getpgid(proc.pid) == group:
                total += sum(proc.cpu_times()[:2])
        except (psutil.Error, OSError):
            continue
    return total


def wait_group_gone(group: int | None, timeout: float = 15.0) -> None:
    """Wait until the node's processes have exited, so the next round starts clean."""
    if group is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == group and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except (psutil.Error, OSError):
                continue
        if not alive:
            return
        time.sleep(0.1)


def pg_destination(**extra: Any) -> dict[str, Any]:
    """Our PostgreSQL destination: one table per topic with :data:`PG_COLUMNS`."""
    return {"type": "postgres", "dsn": POSTGRES_DSN, "table": "{topic}", "columns": PG_COLUMNS,
            **extra}


def influx_destination(database: str, **extra: Any) -> dict[str, Any]:
    """Our InfluxDB destination (v1 HTTP): measurement per topic, ``sensor`` as tag."""
    return {
        "type": "influxdb",
        "database": database,
        "host": INFLUX_HOST,
        "http_port": INFLUX_PORT,
        "protocol": "http",
        "tags": ["sensor"],
        "time_key": "time",
        **extra,
    }


def pg_connect() -> Any:
    """An autocommit-off psycopg connection to the benchmark database."""
    import psycopg

    return psycopg.connect(POSTGRES_DSN, connect_timeout=5)


def pg_count(table: str) -> int:
    """Rows in ``public.<table>``."""
    with pg_connect() as conn:
        row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    return int(row[0]) if row else 0


def pg_drop(tables: list[str]) -> None:
    """Drop the benchmark's tables."""
    with pg_connect() as conn:
        for table in tables:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.commit()


def influx(database: str = "") -> InfluxHTTP:
    """A client of the local InfluxDB for ``database``."""
    return InfluxHTTP(INFLUX_HOST, INFLUX_PORT, database=database, timeout=60.0)


def influx_create(database: str) -> None:
    """Create ``database``."""
    with influx() as client:
        client.post_query(f'CREATE DATABASE "{database}"')


def influx_drop(database: str) -> None:
    """Drop ``database``."""
    with influx() as client:
        client.post_query(f'DROP DATABASE "{database}"')


def influx_count(database: str, measurement: str, expected: int, wait: float = 10.0) -> int:
    """Points in ``measurement`` (waiting up to ``wait`` s for ``expected`` to show)."""
    deadline = time.monotonic() + wait
    found = 0
    with influx(database) as client:
        while True:
            series = client.query(f'SELECT count("i") FROM "{measurement}"')
            rows = series_rows(series[0]) if series else []
            found = int(rows[0].get("count") or 0) if rows else 0
            if found >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def log_chunks(dl: datalogger.DataLogger, topic: str, chunks: list[Chunk]) -> float:
    """Seconds to log every chunk and flush it into the destination."""
    started = time.perf_counter()
    for chunk in chunks:
        dl.log(topic, chunk)
    dl.flush(timeout=600.0)
    return time.perf_counter() - started


#: Rows the node merges into one hand-over to a worker at most (``MERGE_ROWS`` of the
#: TopicSupervisor): the largest call of ``send_data`` the node makes from 1,000-row chunks.
MERGED_ROWS = 10_000


def send_data_direct(table: Mapping[str, Any], topic: str, rows: list[Row],
                     group: int = MERGED_ROWS) -> float:
    """Seconds to deliver ``rows`` by calling the destination's ``send_data`` in this process.

    No node, no actors, no log: the destination built from ``table`` as a worker builds
    it, called with groups of ``group`` rows (the node's largest hand-over), the way to
    the same server without datalogger's pipeline around it. The ceiling of ``ours``.
    """
    from datalogger.config import load_config
    from datalogger.delivery import DestinationHost

    with tempfile.TemporaryDirectory(prefix="dl-bench-") as state:
        config = load_config({"data_dir": state, "destinations": {"d": dict(table)}})
        (spec,) = config.destinations
        host = DestinationHost(spec, topic)
        try:
            started = time.perf_counter()
            for k in range(0, len(rows), group):
                attempt = host.send(rows[k : k + group])
                if not attempt.ok:
                    raise RuntimeError(f"send_data failed: {attempt.error}")
            return time.perf_counter() - started
        finally:
            host.close()


def bulk_load_sequence(
    pg_chunks: list[Chunk], influx_chunks: list[Chunk], influx_database: str,
    written: dict[str, list[str]], sampler: RssSampler | None = None, postgres_first: bool = True,
) -> dict[str, float]:
    """Issue 19's sequence, in this one process: PostgreSQL through a node, then InfluxDB
    through a new node (default configuration but for the servers).

    Returns the seconds of each part and the rows each lane held only in the
    write-ahead log (``spilled``: read back from it because the lane was over
    ``max_buffered_rows``). With ``postgres_first=False`` only the InfluxDB part runs.
    The tables and measurements written are appended to ``written["postgres"]`` and
    ``written["influxdb"]``.
    """
    out: dict[str, float] = {}
    if postgres_first:
        with node({"pg": pg_destination()}, sampler=sampler) as dl:
            topic = unique("bench_seq_pg")
            written.setdefault("postgres", []).append(topic)
            out["pg_seconds"] = log_chunks(dl, topic, pg_chunks)
            out["pg_spilled"] = float(dl.stats()["topics"][topic]["pg"]["spilled"])
    with node({"influx": influx_destination(influx_database)}, sampler=sampler) as dl:
        dl.log("bench_warm", influx_chunks[0][:10])
        dl.flush(60.0)
        topic = unique("seq")
        written.setdefault("influxdb", []).append(topic)
        out["influx_seconds"] = log_chunks(dl, topic, influx_chunks)
        out["influx_spilled"] = float(dl.stats()["topics"][topic]["influx"]["spilled"])
    return out
