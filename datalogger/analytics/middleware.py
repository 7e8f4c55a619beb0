"""ASGI and WSGI middleware that records every HTTP request as a :class:`RequestLog`.

Wrap an application; the middleware finds its datalogger handle lazily, on
first use, so it can be set up before a node runs, in an ASGI lifespan or in
each worker of a pre-fork server::

    app = DataLoggerMiddleware(app, connect={"admin_port": 1900})   # ASGI or WSGI, detected
    app = AnalyticsASGIMiddleware(app, dl)                          # a handle you made
    app = AnalyticsWSGIMiddleware(app, lambda: app_state.dl)        # a zero-argument factory
    app = AnalyticsWSGIMiddleware(app)                              # datalogger.get_default()

With ``connect={...}`` (keyword arguments of :func:`datalogger.connect`) each
process connects on its first request (or at ASGI lifespan start-up) with a
handle of its own, so every worker of gunicorn or ``uvicorn --workers`` has its
own connection; the middleware closes that handle at lifespan shutdown (WSGI:
when the process exits).

For each HTTP request the middleware times the request (until the response body
is finished), builds a :class:`RequestLog`, calls ``handle.broadcast(event)``
when the handle has one and ``publish`` is true, and logs ``event.to_row()`` to
``topic`` with ``handle.log_nowait`` (or ``handle.log`` when there is no
``log_nowait``). With a :class:`~datalogger.DataLogger` both are queue puts of
a few microseconds, sent by the handle's background thread, which keeps them
while the node is away (see :mod:`datalogger.batching`): the request never waits
for the node.

Sessions work as in phoenix_analytics: a cookie (``cookie_name``) holds a random
id and the session's page views so far (``<id>.<views>``); a request without a
valid one starts a new session. Every response sets the cookie again with the
new count (``HttpOnly; SameSite=Lax; Path=/; Max-Age=<session_ttl>``, plus
``Secure`` over HTTPS), so a session ends after ``session_ttl`` seconds without
a request, and ``session_page_views`` is right however many worker processes or
hosts serve the session: the count travels with the browser, not in one
process's memory. A client can alter its own count, as it can its session id.

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

import asyncio
import inspect
import logging
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import attrs

from ..exceptions import ConfigError
from ..validation import validate_topic
from .request_log import RequestLog, resolve_salt

__all__ = ["AnalyticsASGIMiddleware", "AnalyticsWSGIMiddleware", "DataLoggerMiddleware", "SessionTracker"]

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
_MAX_VIEWS_DIGITS = 9
_WARN_EVERY = 60.0


def _parse_session(value: str | None) -> tuple[str, int] | None:
    """``(session id, page views so far)`` from a cookie value, or None when it is not valid."""
    if not value:
        return None
    session_id, dot, views = value.rpartition(".")
    if not dot:  # a cookie from before the count travelled in it
        session_id, views = value, "0"
    if not _SESSION_ID.match(session_id) or not views.isdigit() or len(views) > _MAX_VIEWS_DIGITS:
        return None
    return session_id, int(views)


class SessionTracker:
    """Page views per session kept in one process: a thread-safe LRU of at most ``max_sessions``.

    The middleware no longer uses it (the count travels in the session cookie,
    so it is right across worker processes); kept for code counting sessions
    itself.

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
    set_cookie: str
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
        handle: Any = None,
        *,
        connect: Mapping[str, Any] | None = None,
        topic: str = "requests",
        cookie_name: str = "dl_session",
        ip_salt: str | bytes | None = None,
        publish: bool = True,
        session_ttl: float = 1800.0,
    ) -> None:
        self.app = app
        self.topic = validate_topic(topic)
        if not _COOKIE_NAME.match(cookie_name):
            raise ConfigError(f"cookie_name {cookie_name!r} is not a valid cookie name")
        if session_ttl <= 0:
            raise ConfigError(f"session_ttl must be positive, not {session_ttl}")
        if handle is not None and connect is not None:
            raise ConfigError("give the middleware a handle or connect options, not both")
        if connect is not None and not isinstance(connect, Mapping):
            raise ConfigError(f"connect must be a dict of datalogger.connect() options, not {connect!r}")
        is_handle = handle is not None and (hasattr(handle, "log") or hasattr(handle, "log_nowait"))
        if handle is not None and not is_handle and not callable(handle):
            raise ConfigError(
                "handle must be a datalogger handle (with log or log_nowait) or a zero-argument "
                f"function returning one, not {type(handle).__name__}"
            )
        self.cookie_name = cookie_name
        self.publish = publish
        self.session_ttl = float(session_ttl)
        #: Number of errors the middleware caught in its own work.
        self.errors = 0
        self._salt = resolve_salt(ip_salt)
        self._errors_lock = threading.Lock()
        self._warned: dict[str, tuple[float, int]] = {}
        self._resolve_lock = threading.Lock()
        self._factory: Callable[[], Any] | None = None if is_handle else handle
        self._connect = dict(connect) if connect is not None else None
        self._owned = False
        self._handle: Any = None
        self._log: Callable[[str, Any], Any] = _unset
        self._broadcast: Callable[[Any], Any] | None = None
        if is_handle:
            self._use(handle)

    @property
    def handle(self) -> Any:
        """The datalogger handle, found (or connected) on first use.

        Raises:
            NotRunning: there is no default handle (no ``handle``/``connect`` given
                and no node started or connected in this process).
        """
        handle = self._handle
        if handle is None:
            with self._resolve_lock:
                handle = self._handle
                if handle is None:
                    handle = self._find_handle()
                    self._use(handle)
        return handle

    def _find_handle(self) -> Any:
        if self._factory is not None:
            return self._factory()
        import datalogger  # a late import: the analytics package does not need a node to load

        if self._connect is not None:
            options = {"make_default": False, "require_node": False, **self._connect}
            handle = datalogger.connect(**options)
            self._owned = True
            return handle
        return datalogger.get_default()

    def _use(self, handle: Any) -> None:
        self._log = (
            getattr(handle, "_put_trusted", None) or getattr(handle, "log_nowait", None) or handle.log
        )
        self._broadcast = getattr(handle, "broadcast", None)
        self._handle = handle

    def close(self, timeout: float = 10.0) -> None:
        """Close the handle the middleware connected itself (``connect={...}``); else nothing."""
        with self._resolve_lock:
            handle, owned = self._handle, self._owned
            if owned:
                self._handle, self._owned, self._log = None, False, _unset
        if owned and handle is not None:
            handle.close(timeout)

    def _failed(self, what: str, exc: BaseException) -> None:
        """Count an error of the middleware's own; warn about each kind at most once a minute."""
        now = time.monotonic()
        with self._errors_lock:
            self.errors += 1
            last, missed = self._warned.get(what, (-_WARN_EVERY, 0))
            if now - last < _WARN_EVERY:
                self._warned[what] = (last, missed + 1)
                return
            self._warned[what] = (now, 0)
        logger.warning(
            "request analytics: %s failed (%s: %s); the request is not affected%s",
            what,
            type(exc).__name__,
            exc,
            f" ({missed} more such failures in the last minute)" if missed else "",
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
            session = _parse_session(_cookie_value(cookie_header, self.cookie_name))
            session_id, views = session if session is not None else (secrets.token_urlsafe(24), 0)
            views += 1
            set_cookie = (
                f"{self.cookie_name}={session_id}.{views}; Max-Age={int(self.session_ttl)}; "
                "Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
            )
            return _Request(
                method=method,
                path=path,
                user_agent=user_agent,
                ip=ip,
                referer=referer,
                session_id=session_id,
                page_views=views,
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
        if self._handle is None:
            try:
                self.handle  # noqa: B018 - finds (or connects) the handle
            except Exception as exc:
                self._failed("finding the datalogger handle", exc)
                return
        broadcast = self._broadcast if self.publish else None
        if broadcast is not None:
            try:
                broadcast(event)
            except Exception as exc:
                self._failed("broadcasting the request log", exc)
        try:
            self._log(self.topic, event.to_row())
        except Exception as exc:
            self._failed(f"logging the request to topic {self.topic!r}", exc)


def _unset(topic: str, data: Any) -> Any:
    raise RuntimeError("the middleware has no datalogger handle")


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
        handle: a datalogger handle (anything with ``log(topic, data)`` or
            ``log_nowait``, and optionally ``broadcast(event)``), or a
            zero-argument function returning one, called on first use; None:
            ``connect`` if given, else :func:`datalogger.get_default`.
        connect: keyword arguments of :func:`datalogger.connect`; each process
            connects on first use, with ``require_node=False`` and
            ``make_default=False`` unless given.
        topic: the datalogger topic the rows go to.
        cookie_name: name of the session cookie.
        ip_salt: salt for hashing client addresses (see ``resolve_salt``).
        publish: call ``handle.broadcast(event)`` when the handle has it.
        session_ttl: seconds without a request after which a session ends
            (the cookie's ``Max-Age``).

    Raises:
        InvalidTopic: ``topic`` is not a valid topic name.
        ConfigError: ``cookie_name``, ``session_ttl``, ``handle`` or ``connect`` is invalid.
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
        kind = scope.get("type")
        if kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        request = self._begin_scope(scope)
        status: list[int] = []

        async def send_wrapper(message: Message) -> None:
            if message.get("type") == "http.response.start":
                try:
                    status.append(int(message["status"]))
                    if request is not None:
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

    def _lifespan_send(self, send: Send) -> Send:
        """Find the handle when the app has started; close the one we connected when it stops."""

        async def lifespan_send(message: Message) -> None:
            kind = message.get("type")
            if kind == "lifespan.startup.complete":
                try:
                    await asyncio.get_running_loop().run_in_executor(None, lambda: self.handle)
                except Exception as exc:
                    self._failed("finding the datalogger handle at start-up", exc)
            elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.close)
                except Exception as exc:
                    self._failed("closing the datalogger handle", exc)
            await send(message)

        return lifespan_send


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
                if request is not None:
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


def DataLoggerMiddleware(app: Any, handle: Any = None, *, asgi: bool | None = None, **options: Any) -> Any:
    """Wrap ``app`` in :class:`AnalyticsASGIMiddleware` or :class:`AnalyticsWSGIMiddleware`.

    An app that is a coroutine function, or whose ``__call__`` is one, is taken
    for ASGI (Starlette, FastAPI, Django's ASGI handler), any other callable for
    WSGI (Flask, Django's WSGI handler); ``asgi=True``/``False`` decides instead.
    Works with Starlette's ``app.add_middleware(DataLoggerMiddleware, connect={...})``.
    Takes the arguments of the two classes.
    """
    if asgi is None:
        call = getattr(app, "__call__", None)  # noqa: B004 - a class instance's __call__
        asgi = inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call)
    if asgi:
        return AnalyticsASGIMiddleware(app, handle, **options)
    return AnalyticsWSGIMiddleware(app, handle, **options)
