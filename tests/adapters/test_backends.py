"""Behaviour specific to each adapter: warnings, options, reconnection, secrets."""

from __future__ import annotations

import logging
import socket
import sqlite3
import traceback
from pathlib import Path

import pytest

from datalogger.adapters import create_adapter
from datalogger.adapters.base import redact, secrets_in
from datalogger.adapters.none import NoneAdapter
from datalogger.adapters.postgres import PostgresAdapter
from datalogger.exceptions import ConfigError, DataLoggerError
from tests.services import postgres_dsn_or_skip, redis_url_or_skip, unique_name

PASSWORD = "Sup3r-S3cret-pw"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


def test_none_adapter_warns_and_keeps_nothing(caplog: pytest.LogCaptureFixture) -> None:
    adapter = NoneAdapter()
    with caplog.at_level(logging.WARNING), pytest.warns(RuntimeWarning, match="production"):
        adapter.start({})
    assert any(
        r.levelno == logging.WARNING and "not for production" in r.getMessage()
        for r in caplog.records
    )
    adapter.item_processed(("users", 1))
    adapter.item_processed_many([("orders", 2)])
    assert adapter.load() == []
    adapter.reset()
    assert adapter.load() == []


def test_sqlite_uses_wal_and_the_documented_schema(tmp_path: Path) -> None:
    path = tmp_path / "status.db"
    with create_adapter("sqlite", {"path": path}) as adapter:
        adapter.item_processed(("users", 42))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = conn.execute(
            "SELECT entity, timestamp, updated_at FROM datalogger_process_status"
        ).fetchall()
    finally:
        conn.close()
    assert [(e, t) for e, t, _ in rows] == [("users", 42)]
    assert rows[0][2]  # updated_at filled in


def test_sqlite_refuses_a_missing_directory_and_a_foreign_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        create_adapter("sqlite", {"path": str(tmp_path / "nope" / "s.db")})
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE foreign_t (a INTEGER)")
    conn.close()
    with pytest.raises(ConfigError, match="lacks the columns"):
        create_adapter("sqlite", {"path": str(path), "table": "foreign_t"})


def test_postgres_table_schema_and_reconnect_after_backend_killed() -> None:
    import psycopg

    dsn = postgres_dsn_or_skip()
    table = unique_name("ps")
    adapter = create_adapter("postgres", {"dsn": dsn, "table": table})
    try:
        adapter.item_processed(("users", 1))
        with psycopg.connect(dsn, autocommit=True) as admin:
            columns = admin.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            assert columns == [
                ("entity", "text"),
                ("timestamp", "bigint"),
                ("updated_at", "timestamp with time zone"),
            ]
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'datalogger' AND pid <> pg_backend_pid() "
                "AND query LIKE %s",
                (f"%{table}%",),
            ).fetchall()
            assert killed and all(ok for (ok,) in killed)
            adapter.item_processed(("users", 2))  # must reconnect, not fail
            count = admin.execute(f'SELECT "timestamp" FROM "{table}"').fetchall()
        assert count == [(2,)]
        assert adapter.load() == [("users", 2)]
    finally:
        adapter.close()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP TABLE IF EXISTS "{table}"')


def test_postgres_refuses_bad_table_names() -> None:
    for table in ("bad-name", 'x"; drop table y; --', "a.b.c", "1abc"):
        with pytest.raises(ConfigError, match="table"):
            create_adapter("postgres", {"dsn": "postgresql://u@127.0.0.1:1/db", "table": table})


@pytest.mark.parametrize(
    "options",
    [
        {"dsn": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{{port}}/test"},
        {"dsn": f"host=127.0.0.1 port={{port}} user=postgres password={PASSWORD} dbname=test"},
        {"host": "127.0.0.1", "port": "{port}", "user": "postgres", "password": PASSWORD},
    ],
    ids=["url", "keyword-dsn", "options"],
)
def test_postgres_error_does_not_contain_the_password(
    options: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    port = _free_port()
    opts = {key: value.replace("{port}", str(port)) for key, value in options.items()}
    opts["connect_timeout"] = 2  # type: ignore[assignment]
    with caplog.at_level(logging.DEBUG), pytest.raises(DataLoggerError) as info:
        create_adapter("postgres", opts)
    assert not isinstance(info.value, ConfigError)
    assert str(port) in str(info.value)  # the message still says where it failed
    assert PASSWORD not in _full_text(info.value)
    assert PASSWORD not in caplog.text


def test_postgres_masks_a_password_that_psycopg_echoes() -> None:
    # libpq's parser quotes the faulty part of a URL: here, the password itself.
    options = {"dsn": "postgresql://postgres:Sup3r S3cret@127.0.0.1:1/test"}
    for start in (
        lambda: create_adapter("postgres", options),
        lambda: PostgresAdapter().start(options),
    ):
        with pytest.raises(ConfigError, match="unexpected spaces") as info:
            start()
        assert "Sup3r S3cret" not in _full_text(info.value)


def test_postgres_repr_hides_the_password() -> None:
    dsn = postgres_dsn_or_skip()
    table = unique_name("ps")
    adapter = create_adapter("postgres", {"dsn": dsn, "password": PASSWORD, "table": table})
    try:
        assert PASSWORD not in repr(adapter)
        assert table in repr(adapter)
        adapter.reset()
    finally:
        import psycopg

        adapter.close()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP TABLE IF EXISTS "{table}"')


def test_redis_error_and_repr_do_not_contain_the_password() -> None:
    port = _free_port()
    url = f"redis://user:{PASSWORD}@127.0.0.1:{port}/0"
    with pytest.raises(DataLoggerError) as info:
        create_adapter("redis", {"url": url, "socket_timeout": 1})
    assert PASSWORD not in _full_text(info.value)
    assert str(port) in str(info.value)


def test_redis_reports_a_key_of_the_wrong_type() -> None:
    import redis

    url = redis_url_or_skip()
    key = unique_name("datalogger_test:ps")
    client = redis.Redis.from_url(url)
    client.set(key, "a string, not a hash")
    try:
        with create_adapter("redis", {"url": url, "key": key}) as adapter:
            with pytest.raises(DataLoggerError, match="WRONGTYPE"):
                adapter.load()
        client.delete(key)
        client.hset(key, "users", "not-a-number")
        with (
            create_adapter("redis", {"url": url, "key": key}) as adapter,
            pytest.raises(DataLoggerError, match="not an integer"),
        ):
            adapter.load()
    finally:
        client.delete(key)
        client.close()


def test_redact_masks_urls_dsns_and_given_secrets() -> None:
    assert redact("postgresql://bob:pw1@h:5/db") == "postgresql://bob:***@h:5/db"
    assert redact("host=h password='a b\\'c' user=x") == "host=h password=*** user=x"
    assert redact("failed for tok3n here", {"tok3n"}) == "failed for *** here"
    found = secrets_in({"dsn": "postgresql://u:p%40ss@h/db", "api_token": "T0K", "port": 5})
    assert found == {"p%40ss", "p@ss", "T0K"}
