"""RequestLog: fields, immutability, IP hashing, device detection, row round trips."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import attrs
import pytest

import datalogger.analytics as analytics
from datalogger.analytics import (
    RequestLog,
    coerce_datetime,
    detect_device,
    hash_ip,
    resolve_salt,
)
from datalogger.validation import pack, unpack

RAW_IP = "203.0.113.77"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"


def make(**overrides: object) -> RequestLog:
    values: dict[str, object] = {
        "method": "get",
        "path": "/articles/1",
        "status_code": 200,
        "duration_ms": 12.5,
        "session_id": "s" * 32,
        "session_page_views": 3,
        "user_agent": FIREFOX,
        "ip": RAW_IP,
        "salt": "pepper",
        "referer": "https://example.org/",
    }
    values.update(overrides)
    return RequestLog.create(**values)  # type: ignore[arg-type]


def test_create_fills_every_field() -> None:
    event = make()
    assert uuid.UUID(event.request_id).version == 4
    assert event.method == "GET"
    assert event.path == "/articles/1"
    assert event.status_code == 200
    assert event.duration_ms == 12.5
    assert event.user_agent == FIREFOX
    assert event.remote_ip == hash_ip(RAW_IP, "pepper")
    assert event.referer == "https://example.org/"
    assert event.device_type == "desktop"
    assert event.session_id == "s" * 32
    assert event.session_page_views == 3
    assert event.inserted_at.tzinfo is not None
    assert event.inserted_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - event.inserted_at) < timedelta(minutes=1)


def test_request_ids_are_unique() -> None:
    assert len({make().request_id for _ in range(100)}) == 100


def test_is_frozen() -> None:
    event = make()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.status_code = 404  # type: ignore[misc]


def test_raw_ip_never_stored() -> None:
    event = make()
    row = event.to_row()
    assert RAW_IP not in repr(row)
    assert RAW_IP not in repr(event)
    assert RAW_IP not in pack(row).decode("latin-1")
    assert len(row["remote_ip"]) == 32


def test_constructor_rejects_a_raw_ip() -> None:
    row = make().to_row()
    row["remote_ip"] = RAW_IP
    with pytest.raises(ValueError, match="never a raw address"):
        RequestLog.from_row(row)


def test_hash_depends_on_salt_and_is_stable() -> None:
    assert hash_ip(RAW_IP, "a") == hash_ip(RAW_IP, b"a")
    assert hash_ip(RAW_IP, "a") != hash_ip(RAW_IP, "b")
    assert hash_ip(RAW_IP, "a") != hash_ip("203.0.113.78", "a")
    assert len(hash_ip(RAW_IP, "x" * 500)) == 32
    with pytest.raises(ValueError):
        hash_ip(RAW_IP, "")


def test_salt_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATALOGGER_IP_SALT", raising=False)
    random_salt = resolve_salt(None)
    assert len(random_salt) >= 16
    assert resolve_salt(None) == random_salt  # one per process
    assert resolve_salt("") == random_salt
    monkeypatch.setenv("DATALOGGER_IP_SALT", "from-env")
    assert resolve_salt(None) == b"from-env"
    assert resolve_salt("option") == b"option"
    assert make(salt=None).remote_ip == hash_ip(RAW_IP, "from-env")


def test_no_ip_gives_none() -> None:
    assert make(ip=None).remote_ip is None


@pytest.mark.parametrize(
    ("user_agent", "device"),
    [
        (None, "desktop"),
        ("", "desktop"),
        (FIREFOX, "desktop"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15",
            "desktop",
        ),
        ("curl/8.5.0", "desktop"),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 Safari/604.1",
            "mobile",
        ),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/124.0 Mobile Safari/537.36", "mobile"),
        ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) Mobile/15E148 Safari/604.1", "tablet"),
        ("Mozilla/5.0 (Linux; Android 13; SM-X700) Chrome/124.0 Safari/537.36", "tablet"),
        ("Mozilla/5.0 (Linux; Tablet; rv:68.0) Gecko/68.0 Firefox/68.0", "tablet"),
        ("Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Lumia 950) Mobile Edge/15", "mobile"),
    ],
)
def test_detect_device(user_agent: str | None, device: str) -> None:
    assert detect_device(user_agent) == device
    assert make(user_agent=user_agent).device_type == device


def test_row_round_trip_through_msgpack() -> None:
    event = make()
    row = unpack(pack(event.to_row()))
    assert RequestLog.from_row(row) == event
    assert set(row) == {field.name for field in attrs.fields(RequestLog)}


def test_from_row_accepts_stored_timestamps_and_extra_columns() -> None:
    event = make(inserted_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    row = event.to_row()
    for stored in (
        "2024-05-01T12:00:00+00:00",
        "2024-05-01 12:00:00",
        "2024-05-01T14:00:00+02:00",
        "2024-05-01T12:00:00Z",
        1714564800,
        1714564800.0,
        "1714564800",
    ):
        loaded = RequestLog.from_row({**row, "inserted_at": stored, "id": 7})
        assert loaded == event, stored


def test_from_row_reports_missing_columns() -> None:
    row = make().to_row()
    del row["session_id"], row["path"]
    with pytest.raises(ValueError, match="lacks RequestLog columns: path, session_id"):
        RequestLog.from_row(row)


def test_coerce_datetime_rejects_garbage() -> None:
    for bad in ("yesterday", None, [1]):
        with pytest.raises(ValueError):
            coerce_datetime(bad)


def test_overlong_client_values_are_cut() -> None:
    event = make(path="/" + "a" * 10_000, user_agent="b" * 10_000, referer="c" * 10_000)
    assert len(event.path) == len(event.user_agent or "") == len(event.referer or "") == 2048


def test_package_exports() -> None:
    for name in analytics.__all__:
        assert getattr(analytics, name) is not None
    assert len(set(analytics.__all__)) == len(analytics.__all__)
