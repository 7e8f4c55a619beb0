"""The analytics middleware, driven directly: WSGI with wsgiref environs, ASGI with asyncio.

The handle is a fake recording ``log`` calls; the end-to-end test through a
running datalogger lives with the actor system tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from datalogger.analytics import (
    AnalyticsASGIMiddleware,
    AnalyticsWSGIMiddleware,
    DataLoggerMiddleware,
    RequestLog,
    SessionTracker,
    hash_ip,
)
from datalogger.exceptions import ConfigError, InvalidTopic

CLIENT_IP = "198.51.100.23"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 Safari/604.1"


class Boom(Exception):
    """The application's own failure."""


class FakeHandle:
    """Records what the middleware logs and broadcasts."""

    def __init__(self, fail_log: bool = False, fail_broadcast: bool = False) -> None:
        self.logged: list[tuple[str, dict[str, Any]]] = []
        self.broadcasts: list[RequestLog] = []
        self.fail_log = fail_log
        self.fail_broadcast = fail_broadcast

    def log(self, topic: str, data: dict[str, Any]) -> None:
        if self.fail_log:
            raise ConnectionError("datalogger is down")
        self.logged.append((topic, data))

    def broadcast(self, event: RequestLog) -> None:
        if self.fail_broadcast:
            raise RuntimeError("pubsub is down")
        self.broadcasts.append(event)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [row for _, row in self.logged]


def session_cookie(headers: list[tuple[str, str]]) -> str | None:
    """The dl_session value from Set-Cookie headers, or None."""
    for name, value in headers:
        if name.lower() == "set-cookie" and value.startswith("dl_session="):
            return value.split(";", 1)[0].split("=", 1)[1]
    return None


# --------------------------------------------------------------------------- WSGI


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise Boom("application failed")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part{i}\n".encode() for i in range(3))
    if path == "/stream-boom":

        def failing() -> Iterator[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"first"
            raise Boom("failed mid-body")

        return failing()
    status = "404 Not Found" if path == "/missing" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"hello ", path.encode()]


def wsgi_call(
    app: AnalyticsWSGIMiddleware, path: str = "/", cookie: str | None = None, **extra: str
) -> tuple[str, list[tuple[str, str]], bytes]:
    environ: dict[str, Any] = {
        "PATH_INFO": path,
        "REMOTE_ADDR": CLIENT_IP,
        "HTTP_USER_AGENT": IPHONE,
        **extra,
    }
    if cookie:
        environ["HTTP_COOKIE"] = f"theme=dark; dl_session={cookie}"
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, headers
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return seen["status"], seen["headers"], body


def test_wsgi_records_every_request() -> None:
    handle = FakeHandle()
    app = AnalyticsWSGIMiddleware(wsgi_app, handle, ip_salt="salt")
    cookie = None
    for i in range(1000):
        path = "/missing" if i % 10 == 0 else f"/page/{i % 7}"
        status, headers, body = wsgi_call(
            app, path, cookie=cookie, HTTP_REFERER="https://ref.test/"
        )
        assert body == b"hello " + path.encode()
        assert status == ("404 Not Found" if i % 10 == 0 else "200 OK")
        cookie = session_cookie(headers)  # the browser keeps the newest
    assert len(handle.logged) == 1000
    assert {topic for topic, _ in handle.logged} == {"requests"}
    rows = handle.rows
    assert [row["session_page_views"] for row in rows] == list(range(1, 1001))
    assert cookie is not None and cookie.endswith(".1000")
    assert {row["session_id"] for row in rows} == {cookie.rsplit(".", 1)[0]}
    assert sum(row["status_code"] == 404 for row in rows) == 100
    assert sum(row["status_code"] == 200 for row in rows) == 900
    assert len({row["request_id"] for row in rows}) == 1000
    for i, row in enumerate(rows):
        assert row["path"] == ("/missing" if i % 10 == 0 else f"/page/{i % 7}")
        assert row["method"] == "GET"
        assert row["remote_ip"] == hash_ip(CLIENT_IP, "salt")
        assert row["device_type"] == "mobile"
        assert row["user_agent"] == IPHONE
        assert row["referer"] == "https://ref.test/"
        assert row["duration_ms"] >= 0
        assert RequestLog.from_row(row).to_row() == row
    assert CLIENT_IP not in repr(rows)
    assert app.errors == 0


def test_wsgi_session_cookie_carries_the_count() -> None:
    handle = FakeHandle()
    app = AnalyticsWSGIMiddleware(wsgi_app, handle)
    _, headers, _ = wsgi_call(app)
    set_cookie = [value for name, value in headers if name == "Set-Cookie"]
    assert len(set_cookie) == 1
    attributes = {part.strip() for part in set_cookie[0].split(";")}
    assert {"HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=1800"} <= attributes
    assert "Secure" not in attributes
    cookie = session_cookie(headers)
    assert cookie and cookie.endswith(".1")
    session_id = cookie.rsplit(".", 1)[0]

    for views in (2, 3):
        _, headers, _ = wsgi_call(app, cookie=cookie)
        cookie = session_cookie(headers)
        assert cookie == f"{session_id}.{views}"  # set again: the session stays alive
    _, other_headers, _ = wsgi_call(app)  # a second visitor
    assert [row["session_page_views"] for row in handle.rows] == [1, 2, 3, 1]
    assert [row["session_id"] for row in handle.rows][:3] == [session_id] * 3
    other = session_cookie(other_headers)
    assert other is not None and handle.rows[3]["session_id"] == other.rsplit(".", 1)[0] != session_id


def test_session_counts_in_another_process_continue_from_the_cookie() -> None:
    """Two middleware instances stand for two worker processes: neither keeps the count."""
    first, second = FakeHandle(), FakeHandle()
    workers = [AnalyticsWSGIMiddleware(wsgi_app, first), AnalyticsWSGIMiddleware(wsgi_app, second)]
    cookie = None
    for i in range(10):
        _, headers, _ = wsgi_call(workers[i % 2], cookie=cookie)
        cookie = session_cookie(headers)
    views = sorted(row["session_page_views"] for row in first.rows + second.rows)
    assert views == list(range(1, 11))
    # an old-style cookie (the id alone) is taken as a session seen before, counted from 1
    _, headers, _ = wsgi_call(workers[0], cookie="A" * 32)
    assert session_cookie(headers) == "A" * 32 + ".1"
    # a forged count that is not a number starts a new session
    _, headers, _ = wsgi_call(workers[0], cookie="A" * 32 + ".x")
    assert not (session_cookie(headers) or "").startswith("A" * 32)


def test_wsgi_secure_cookie_over_https_and_forged_cookie_replaced() -> None:
    app = AnalyticsWSGIMiddleware(wsgi_app, FakeHandle())
    _, headers, _ = wsgi_call(app, cookie="bad value;<script>", **{"wsgi.url_scheme": "https"})
    new = session_cookie(headers)
    assert new and new != "bad value"
    assert any("Secure" in value for name, value in headers if name == "Set-Cookie")


def test_wsgi_log_failure_does_not_fail_the_request(caplog: pytest.LogCaptureFixture) -> None:
    handle = FakeHandle(fail_log=True)
    app = AnalyticsWSGIMiddleware(wsgi_app, handle)
    with caplog.at_level(logging.WARNING, logger="datalogger.analytics"):
        status, _, body = wsgi_call(app, "/page")
        wsgi_call(app, "/page")
    assert (status, body) == ("200 OK", b"hello /page")
    assert app.errors == 2
    assert handle.broadcasts and handle.broadcasts[0].path == "/page"
    warnings = [r for r in caplog.records if r.name == "datalogger.analytics"]
    assert len(warnings) == 1  # the same failure is warned about at most once a minute
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert "datalogger is down" in warnings[0].getMessage()
    assert CLIENT_IP not in caplog.text


def test_wsgi_broadcast_failure_still_logs() -> None:
    handle = FakeHandle(fail_broadcast=True)
    app = AnalyticsWSGIMiddleware(wsgi_app, handle)
    wsgi_call(app)
    assert len(handle.logged) == 1
    assert app.errors == 1


def test_wsgi_app_exception_recorded_as_500_and_reraised() -> None:
    handle = FakeHandle()
    app = AnalyticsWSGIMiddleware(wsgi_app, handle)
    with pytest.raises(Boom, match="application failed"):
        wsgi_call(app, "/boom")
    with pytest.raises(Boom, match="failed mid-body"):
        wsgi_call(app, "/stream-boom")
    assert [(row["path"], row["status_code"]) for row in handle.rows] == [
        ("/boom", 500),
        ("/stream-boom", 500),
    ]
    assert app.errors == 0


def test_wsgi_streaming_body_recorded_when_finished() -> None:
    handle = FakeHandle()
    app = AnalyticsWSGIMiddleware(wsgi_app, handle)
    environ: dict[str, Any] = {"PATH_INFO": "/stream"}
    setup_testing_defaults(environ)
    result = app(environ, lambda status, headers, exc_info=None: None)
    iterator = iter(result)
    assert next(iterator) == b"part0\n"
    assert handle.logged == []  # not finished yet
    assert list(iterator) == [b"part1\n", b"part2\n"]
    result.close()  # type: ignore[attr-defined]
    assert [row["path"] for row in handle.rows] == ["/stream"]


def test_wsgi_closed_early_recorded_once() -> None:
    handle = FakeHandle()
    app = AnalyticsWSGIMiddleware(wsgi_app, handle)
    environ: dict[str, Any] = {"PATH_INFO": "/stream"}
    setup_testing_defaults(environ)
    result = app(environ, lambda status, headers, exc_info=None: None)
    next(iter(result))
    result.close()  # type: ignore[attr-defined]
    result.close()  # type: ignore[attr-defined]
    assert [(row["path"], row["status_code"]) for row in handle.rows] == [("/stream", 200)]


def test_log_nowait_preferred_and_publish_switch() -> None:
    class FastHandle(FakeHandle):
        def __init__(self) -> None:
            super().__init__()
            self.nowait: list[dict[str, Any]] = []

        def log_nowait(self, topic: str, data: dict[str, Any]) -> None:
            self.nowait.append(data)

    handle = FastHandle()
    app = AnalyticsWSGIMiddleware(wsgi_app, handle, topic="web.hits", publish=False)
    wsgi_call(app)
    assert handle.logged == []
    assert [row["path"] for row in handle.nowait] == ["/"]
    assert handle.broadcasts == []


def test_handle_without_broadcast() -> None:
    class LogOnly:
        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []

        def log(self, topic: str, data: dict[str, Any]) -> None:
            self.rows.append(data)

    handle = LogOnly()
    app = AnalyticsWSGIMiddleware(wsgi_app, handle)
    wsgi_call(app)
    assert len(handle.rows) == 1
    assert app.errors == 0


def test_bad_options_rejected() -> None:
    with pytest.raises(InvalidTopic):
        AnalyticsWSGIMiddleware(wsgi_app, FakeHandle(), topic="bad topic")
    with pytest.raises(ConfigError):
        AnalyticsASGIMiddleware(wsgi_app, FakeHandle(), cookie_name="a;b")
    with pytest.raises(ConfigError):
        AnalyticsASGIMiddleware(wsgi_app, FakeHandle(), session_ttl=0)
    with pytest.raises(ConfigError, match="not both"):
        AnalyticsWSGIMiddleware(wsgi_app, FakeHandle(), connect={"admin_port": 1900})
    with pytest.raises(ConfigError, match="zero-argument function"):
        AnalyticsWSGIMiddleware(wsgi_app, 42)


def test_session_tracker_bounded_and_expiring() -> None:
    now = [0.0]
    tracker = SessionTracker(max_sessions=3, ttl=100.0, clock=lambda: now[0])
    assert [tracker.hit(s) for s in ("a", "b", "a", "c")] == [1, 1, 2, 1]
    tracker.hit("d")  # evicts the least recently used: "b"
    assert len(tracker) == 3
    assert tracker.hit("b") == 1  # forgotten, so a new count; evicts "a"
    assert tracker.hit("c") == 2
    assert tracker.hit("a") == 1
    now[0] = 90.0
    assert tracker.hit("c") == 3  # 90 s since the last view: still the same session
    now[0] = 191.0
    assert tracker.hit("c") == 1  # 101 s of inactivity: a new visit
    assert len(tracker) == 1  # the other sessions expired and were dropped


# --------------------------------------------------------------------------- ASGI


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    path = scope["path"]
    await receive()
    if path == "/boom":
        raise Boom("application failed")
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send(
                {"type": "http.response.body", "body": f"part{i}".encode(), "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    status = 404 if path == "/missing" else 200
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello " + path.encode()})


async def asgi_call(
    app: Any,
    path: str = "/",
    cookie: str | None = None,
    scheme: str = "http",
    scope_type: str = "http",
) -> tuple[int | None, list[tuple[bytes, bytes]], bytes]:
    """A tiny ASGI test client: one request, the response collected."""
    headers = [(b"user-agent", IPHONE.encode()), (b"referer", b"https://ref.test/")]
    if cookie:
        headers.append((b"cookie", f"dl_session={cookie}; theme=dark".encode()))
    scope = {
        "type": scope_type,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"q=secret",
        "root_path": "",
        "headers": headers,
        "client": (CLIENT_IP, 51000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return (
        start[0]["status"] if start else None,
        list(start[0]["headers"]) if start else [],
        body,
    )


def asgi_cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    return session_cookie([(k.decode(), v.decode()) for k, v in headers])


def test_asgi_records_every_request() -> None:
    handle = FakeHandle()
    app = AnalyticsASGIMiddleware(asgi_app, handle, ip_salt="salt")

    async def run() -> str | None:
        cookie = None
        for i in range(1000):
            path = "/missing" if i % 10 == 0 else f"/page/{i % 7}"
            status, headers, body = await asgi_call(app, path, cookie)
            assert body == b"hello " + path.encode()
            assert status == (404 if i % 10 == 0 else 200)
            cookie = asgi_cookie(headers)
        return cookie

    cookie = asyncio.run(run())
    rows = handle.rows
    assert len(rows) == 1000
    assert [row["session_page_views"] for row in rows] == list(range(1, 1001))
    assert cookie is not None and cookie.endswith(".1000")
    assert {row["session_id"] for row in rows} == {cookie.rsplit(".", 1)[0]}
    assert sum(row["status_code"] == 404 for row in rows) == 100
    for i, row in enumerate(rows):
        assert row["path"] == ("/missing" if i % 10 == 0 else f"/page/{i % 7}")
        assert row["remote_ip"] == hash_ip(CLIENT_IP, "salt")
        assert row["device_type"] == "mobile"
        assert row["referer"] == "https://ref.test/"
    assert "secret" not in repr(rows)  # the query string is never recorded
    assert [event.to_row() for event in handle.broadcasts] == rows
    assert app.errors == 0


def test_asgi_session_cookie() -> None:
    handle = FakeHandle()
    app = AnalyticsASGIMiddleware(asgi_app, handle)
    status, headers, _ = asyncio.run(asgi_call(app, scheme="https"))
    values = [v.decode() for k, v in headers if k == b"set-cookie"]
    assert status == 200 and len(values) == 1
    attributes = {part.strip() for part in values[0].split(";")}
    assert {"HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=1800", "Secure"} <= attributes
    assert (b"content-type", b"text/plain") in headers  # the app's headers are kept
    cookie = asgi_cookie(headers)
    assert cookie is not None
    _, headers, _ = asyncio.run(asgi_call(app, cookie=cookie))
    assert asgi_cookie(headers) == cookie.replace(".1", ".2")
    assert [row["session_page_views"] for row in handle.rows] == [1, 2]


def test_asgi_streaming_body_passes_through() -> None:
    handle = FakeHandle()
    app = AnalyticsASGIMiddleware(asgi_app, handle)
    status, _, body = asyncio.run(asgi_call(app, "/stream"))
    assert (status, body) == (200, b"part0part1part2")
    assert [(row["path"], row["status_code"]) for row in handle.rows] == [("/stream", 200)]


def test_asgi_log_failure_does_not_fail_the_request(caplog: pytest.LogCaptureFixture) -> None:
    handle = FakeHandle(fail_log=True)
    app = AnalyticsASGIMiddleware(asgi_app, handle)
    with caplog.at_level(logging.WARNING, logger="datalogger.analytics"):
        status, _, body = asyncio.run(asgi_call(app, "/page"))
    assert (status, body) == (200, b"hello /page")
    assert app.errors == 1
    assert "datalogger is down" in caplog.text


def test_asgi_app_exception_recorded_as_500_and_reraised() -> None:
    handle = FakeHandle()
    app = AnalyticsASGIMiddleware(asgi_app, handle)
    with pytest.raises(Boom, match="application failed"):
        asyncio.run(asgi_call(app, "/boom"))
    assert [(row["path"], row["status_code"]) for row in handle.rows] == [("/boom", 500)]
    assert app.errors == 0


def test_asgi_lifespan_passes_through_unrecorded() -> None:
    handle = FakeHandle()
    app = AnalyticsASGIMiddleware(asgi_app, handle)
    asyncio.run(asgi_call(app, scope_type="lifespan"))
    assert handle.logged == []


# --------------------------------------------------------------------------- finding the handle


def test_a_factory_is_called_once_on_first_use() -> None:
    made: list[FakeHandle] = []

    def factory() -> FakeHandle:
        made.append(FakeHandle())
        return made[-1]

    app = AnalyticsWSGIMiddleware(wsgi_app, factory)
    assert made == []  # nothing at set-up time (a pre-fork master, an ASGI lifespan to come)
    for _ in range(3):
        wsgi_call(app)
    assert len(made) == 1 and len(made[0].logged) == 3


def test_without_a_handle_the_default_one_is_used_once_there_is_one(
    tmp_path: Any, start_node: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import datalogger

    if datalogger.system._default is not None:
        pytest.skip("a default node is running in this process")
    app = AnalyticsWSGIMiddleware(wsgi_app)
    with caplog.at_level(logging.WARNING, logger="datalogger.analytics"):
        status, _, _ = wsgi_call(app)  # no node yet: the request is served, the failure counted
    assert status == "200 OK" and app.errors == 1
    assert "finding the datalogger handle failed (NotRunning" in caplog.text
    dl = start_node({"data_dir": str(tmp_path), "destinations": {"m": {"type": "memory"}}},
                    base="simpleSystemBase")
    wsgi_call(app, "/after")
    assert app.handle is dl
    dl.flush(timeout=10)
    assert dl.stats()["topics"]["requests"]["m"]["delivered"] == 1


def test_the_interface_is_detected() -> None:
    class AsgiApp:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await asgi_app(scope, receive, send)

    assert isinstance(DataLoggerMiddleware(asgi_app, FakeHandle()), AnalyticsASGIMiddleware)
    assert isinstance(DataLoggerMiddleware(AsgiApp(), FakeHandle()), AnalyticsASGIMiddleware)
    assert isinstance(DataLoggerMiddleware(wsgi_app, FakeHandle()), AnalyticsWSGIMiddleware)
    assert isinstance(DataLoggerMiddleware(wsgi_app, FakeHandle(), asgi=True), AnalyticsASGIMiddleware)


def test_asgi_lifespan_connects_at_start_up_and_closes_at_shutdown(tmp_path: Any, start_node: Any) -> None:
    dl = start_node({"data_dir": str(tmp_path), "destinations": {"m": {"type": "memory"}}})
    app = DataLoggerMiddleware(asgi_lifespan_app, connect={"admin_port": dl.admin_port})

    async def run() -> None:
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])
            if message["type"] == "lifespan.startup.complete":
                handle = app._handle
                assert handle is not None and handle.admin_port == dl.admin_port
                status, _, _ = await asgi_call(app, "/in-lifespan")
                assert status == 200

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    asyncio.run(run())
    assert app._handle is None  # the handle it connected is closed, its row sent first
    dl.flush(timeout=10)
    assert dl.stats()["topics"]["requests"]["m"]["delivered"] == 1


async def asgi_lifespan_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``asgi_app`` with the lifespan protocol answered."""
    if scope["type"] != "lifespan":
        await asgi_app(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return
