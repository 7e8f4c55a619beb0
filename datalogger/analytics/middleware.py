"""ASGI and WSGI middleware that records every HTTP request as a :class:`RequestLog`.

Wrap an application and give it a datalogger handle::

    app = AnalyticsASGIMiddleware(app, handle)           # Starlette, FastAPI, ...
    app = AnalyticsWSGIMiddleware(app, handle)           # Flask, Django, ...

For each HTTP request the middleware times the request (until the response body
is finished), builds a :class:`RequestLog`, calls ``handle.broadcast(event)``
when the handle has one and ``publish`` is true, and logs ``event.to_row()`` to
``topic`` with ``handle.log_nowait`` (or ``handle.log`` when there is no
``log_nowait``).

Sessions work as in phoenix_analytics: a cookie (``cookie_name``) holds a random
id; a request without one gets a new id and a ``Set-Cookie`` header
(``HttpOnly; SameSite=Lax; Path=/; Max-Age=1800``, plus ``Secure`` over HTTPS).
Page views per session are counted in process memory, in a bounded LRU of at
most ``max_sessions`` sessions that expire after ``session_ttl`` seconds without
a request; a session unknown to this process (expired, or seen by another
worker) starts again at one page view.

The middleware never makes a request fail. Any error in its own work is caught,
counted in :attr:`errors` and logged at WARNING on the ``datalogger.analytics``
logger; the application's response (streaming bodies included) passes through
unchanged apart from the ``Set-Cookie`` header. When the application raises, the
request is recorded with status 500 and the exception re-raised unchanged.

Only ``http`` requests are recorded (ASGI ``websocket`` and ``lifespan`` scopes
pass straight through). ``remote_ip`` is the direct peer's address, hashed: put
a trusted proxy-headers middleware in front when behind a reverse proxy. The
query string is never recorded.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

import attrs

from ..exceptions import ConfigError
from ..validation import validate_topic
from .request_log import RequestLog, resolve_salt

__all__ = ["AnalyticsASGIMiddleware", "AnalyticsWSGIMiddleware", "SessionTracker"]

logger = logging.getLogger("datalogger.analytics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class SessionTracker:
    """Page views per session: a thread-safe LRU of at most ``max_sessions`` entries.

    An entry expires ``ttl`` seconds after its last :meth:`hit`; ``clock`` is a
    monotonic time source in seconds (injectable for tests).
    """

    def __init__(
        self,
        max_sessions: int = 100_000,
        ttl: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1:
            raise ConfigError(f"max_sessions must be at least 1, not {max_sessions}")
        if ttl <= 0:
            raise ConfigError(f"session_ttl must be positive, not {ttl}")
        self.max_sessions = max_sessions
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[int, float]] = {}

    def hit(self, session_id: str) -> int:
        """Count one page view for ``session_id`` and return its total so far."""
        with self._lock:
            now = self._clock()
            entry = self._sessions.pop(session_id, None)
            views = 1 if entry is None or now - entry[1] > self.ttl else entry[0] + 1
            self._sessions[session_id] = (views, now)
            sessions = self._sessions
            while len(sessions) > self.max_sessions:
                del sessions[next(iter(sessions))]
            while sessions:
                oldest = next(iter(sessions))
                if now - sessions[oldest][1] <= self.ttl:
                    break
                del sessions[oldest]
            return views

    def __len__(self) -> int:
        """Number of sessions currently tracked."""
        return len(self._sessions)


@attrs.define
class _Request:
    """What the middleware learned about a request before calling the app."""

    method: str
    path: str
    user_agent: str | None
    ip: str | None
    referer: str | None
    session_id: str
    page_views: int
    set_cookie: str | None
    started: float
    recorded: bool = False


def _cookie_value(cookie_header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, or None."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            return value.strip().strip('"')
    return None


class _AnalyticsBase:
    """The request recording shared by the ASGI and WSGI middleware."""

    def __init__(
        self,
        app: Any,
        handle: Any,
        *,
        topic: str = "requests",
        cookie_name: str = "dl_session",
        ip_salt: str | bytes | None = None,
        publish: bool = True,
        max_sessions: int = 100_000,
        session_ttl: float = 1800.0,
    ) -> None:
        self.app = app
        self.topic = validate_topic(topic)
        if not _COOKIE_NAME.match(cookie_name):
            raise ConfigError(f"cookie_name {cookie_name!r} is not a valid cookie name")
        self.cookie_name = cookie_name
        self.handle = handle
        self.publish = publish
        self.sessions = SessionTracker(max_sessions, session_ttl)
        #: Number of errors the middleware caught in its own work.
        self.errors = 0
        self._salt = resolve_salt(ip_salt)
        self._log: Callable[[str, Any], Any] = getattr(handle, "log_nowait", None) or handle.log
        self._errors_lock = threading.Lock()

    def _failed(self, what: str, exc: BaseException) -> None:
        with self._errors_lock:
            self.errors += 1
        logger.warning(
            "request analytics: %s failed (%s: %s); the request is not affected",
            what,
            type(exc).__name__,
            exc,
        )

    def _begin(
        self,
        *,
        method: str,
        path: str,
        cookie_header: str | None,
        user_agent: str | None,
        ip: str | None,
        referer: str | None,
        secure: bool,
    ) -> _Request | None:
        """Find or start the session; None when that failed (already counted)."""
        try:
            started = time.perf_counter()
            session_id = _cookie_value(cookie_header, self.cookie_name)
            set_cookie = None
            if session_id is None or not _SESSION_ID.match(session_id):
                session_id = secrets.token_urlsafe(24)
                set_cookie = (
                    f"{self.cookie_name}={session_id}; Max-Age={int(self.sessions.ttl)}; "
                    "Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
                )
            return _Request(
                method=method,
                path=path,
                user_agent=user_agent,
                ip=ip,
                referer=referer,
                session_id=session_id,
                page_views=self.sessions.hit(session_id),
                set_cookie=set_cookie,
                started=started,
            )
        except Exception as exc:
            self._failed("reading the request", exc)
            return None

    def _finish(self, request: _Request | None, status_code: int | None) -> None:
        """Record ``request`` once: build the event, broadcast it, log its row."""
        if request is None or request.recorded:
            return
        request.recorded = True
        try:
            event = RequestLog.create(
                method=request.method,
                path=request.path,
                status_code=500 if status_code is None else status_code,
                duration_ms=(time.perf_counter() - request.started) * 1000.0,
                user_agent=request.user_agent,
                ip=request.ip,
                salt=self._salt,
                referer=request.referer,
                session_id=request.session_id,
                session_page_views=request.page_views,
            )
        except Exception as exc:
            self._failed("building the request log", exc)
            return
        broadcast = getattr(self.handle, "broadcast", None) if self.publish else None
        if broadcast is not None:
            try:
                broadcast(event)
            except Exception as exc:
                self._failed("broadcasting the request log", exc)
        try:
            self._log(self.topic, event.to_row())
        except Exception as exc:
            self._failed(f"logging the request to topic {self.topic!r}", exc)


def _asgi_headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = bytes(raw_name).decode("latin-1").lower()
        value = bytes(raw_value).decode("latin-1")
        headers[name] = f"{headers[name]}; {value}" if name in headers else value
    return headers


class AnalyticsASGIMiddleware(_AnalyticsBase):
    """ASGI middleware recording each HTTP request (see the module docstring).

    Args:
        app: the ASGI application to wrap.
        handle: has ``log(topic, data)`` (or ``log_nowait``) and optionally
            ``broadcast(event)``.
        topic: the datalogger topic the rows go to.
        cookie_name: name of the session cookie.
        ip_salt: salt for hashing client addresses (see ``resolve_salt``).
        publish: call ``handle.broadcast(event)`` when the handle has it.
        max_sessions: most sessions whose page views are remembered.
        session_ttl: seconds of inactivity before a session is forgotten;
            also the cookie's ``Max-Age``.

    Raises:
        InvalidTopic: ``topic`` is not a valid topic name.
        ConfigError: ``cookie_name``, ``max_sessions`` or ``session_ttl`` is invalid.
    """

    app: ASGIApp

    def _begin_scope(self, scope: Scope) -> _Request | None:
        try:
            headers = _asgi_headers(scope)
            client = scope.get("client")
            return self._begin(
                method=str(scope.get("method", "GET")),
                path=str(scope.get("path", "/")),
                cookie_header=headers.get("cookie"),
                user_agent=headers.get("user-agent"),
                ip=str(client[0]) if client else None,
                referer=headers.get("referer"),
                secure=scope.get("scheme") == "https",
            )
        except Exception as exc:
            self._failed("reading the request", exc)
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the wrapped app for one connection scope."""
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        request = self._begin_scope(scope)
        status: list[int] = []

        async def send_wrapper(message: Message) -> None:
            if message.get("type") == "http.response.start":
                try:
                    status.append(int(message["status"]))
                    if request is not None and request.set_cookie is not None:
                        cookie = (b"set-cookie", request.set_cookie.encode("latin-1"))
                        message = {**message, "headers": [*message.get("headers", ()), cookie]}
                except Exception as exc:
                    self._failed("adding the session cookie", exc)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            self._finish(request, 500)
            raise
        self._finish(request, status[-1] if status else None)


class _ResponseBody:
    """Iterates a WSGI app's body and records the request when it ends or is closed."""

    def __init__(self, body: Iterable[bytes], on_done: Callable[[bool], None]) -> None:
        self._body = body
        self._iterator: Iterator[bytes] | None = None
        self._on_done = on_done

    def __iter__(self) -> _ResponseBody:
        return self

    def __next__(self) -> bytes:
        try:
            if self._iterator is None:
                self._iterator = iter(self._body)
            return next(self._iterator)
        except StopIteration:
            self._on_done(False)
            raise
        except Exception:
            self._on_done(True)
            raise

    def close(self) -> None:
        """Close the app's body (PEP 3333) and record the request if not yet done."""
        close = getattr(self._body, "close", None)
        try:
            if close is not None:
                close()
        except Exception:
            self._on_done(True)
            raise
        self._on_done(False)


class AnalyticsWSGIMiddleware(_AnalyticsBase):
    """WSGI middleware recording each HTTP request (see the module docstring).

    Takes the same arguments as :class:`AnalyticsASGIMiddleware`, with ``app`` a
    WSGI application. The duration runs until the response body is exhausted or
    closed. The body is wrapped, so a server's ``wsgi.file_wrapper`` shortcut
    is not used.
    """

    app: WSGIApp

    def _begin_environ(self, environ: Environ) -> _Request | None:
        try:
            raw_path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
            return self._begin(
                method=str(environ.get("REQUEST_METHOD", "GET")),
                path=raw_path.encode("latin-1").decode("utf-8", "replace") or "/",
                cookie_header=environ.get("HTTP_COOKIE"),
                user_agent=environ.get("HTTP_USER_AGENT"),
                ip=environ.get("REMOTE_ADDR"),
                referer=environ.get("HTTP_REFERER"),
                secure=environ.get("wsgi.url_scheme") == "https",
            )
        except Exception as exc:
            self._failed("reading the request", exc)
            return None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Run the wrapped app for one request."""
        request = self._begin_environ(environ)
        status: list[int] = []

        def start_response_wrapper(
            status_line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            try:
                status.append(int(status_line.split(None, 1)[0]))
                if request is not None and request.set_cookie is not None:
                    headers = [*headers, ("Set-Cookie", request.set_cookie)]
            except Exception as exc:
                self._failed("adding the session cookie", exc)
            return start_response(status_line, headers, exc_info)

        def done(app_failed: bool) -> None:
            self._finish(request, 500 if app_failed or not status else status[-1])

        try:
            body = self.app(environ, start_response_wrapper)
        except Exception:
            done(True)
            raise
        return _ResponseBody(body, done)
