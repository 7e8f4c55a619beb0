"""The dashboard's web layer: a Starlette application serving one page.

Routes, relative to wherever the application is mounted:

- ``GET /``: the page (static HTML; everything on it is drawn by
  ``static/dashboard.js`` from the snapshots);
- ``GET /static/...``: the page's script, style sheet and uPlot, shipped in the wheel;
- ``GET /events?window=1h``: server-sent events, one ``snapshot`` event per
  ``refresh`` seconds (see :meth:`Dashboard.snapshot`);
- ``GET /snapshot.json?window=1h``: one snapshot;
- ``POST /actions/replay`` and ``POST /actions/shutdown``: only with
  ``allow_actions``, and only with the token in the ``X-Datalogger-Token`` header.

Every response carries a strict Content-Security-Policy (scripts and styles
from this application only, no inline code), ``X-Frame-Options: DENY`` and
``nosniff``; the page writes data with ``textContent`` only. A token in a
header cannot be sent by another site's page without a CORS preflight, which
this application never grants, so the actions are safe from cross-site requests.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..exceptions import DataLoggerError
from .core import Dashboard
from .requests import WINDOWS

__all__ = ["STATIC_DIR", "TOKEN_HEADER", "build_app"]

log = logging.getLogger("datalogger.dashboard")

STATIC_DIR = Path(__file__).resolve().parent / "static"
TOKEN_HEADER = "X-Datalogger-Token"
#: Most pages following the events at once; more get 503.
MAX_STREAMS = 32
MAX_BODY = 4096

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to the response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", ())}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, add_headers)


def _window(request: Request, dashboard: Dashboard) -> str | None:
    window = request.query_params.get("window") or dashboard.window
    return window if window in WINDOWS else None


def _same_origin(request: Request) -> bool:
    """False when the request says it comes from a page of another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def build_app(
    dashboard: Dashboard,
    *,
    allowed_hosts: Sequence[str] | None = None,
    close_on_shutdown: bool = False,
) -> Starlette:
    """The Starlette application serving ``dashboard``.

    Args:
        dashboard: what to show.
        allowed_hosts: ``Host`` header values to accept (against DNS rebinding);
            None accepts any (the mounting application decides).
        close_on_shutdown: close ``dashboard`` when the application's lifespan
            ends (only called when it is the top-level application).
    """
    streams = {"open": 0}

    async def index(request: Request) -> Response:
        if not request.url.path.endswith("/"):
            # the page's links are relative: they need the trailing slash
            return RedirectResponse(request.url.replace(path=request.url.path + "/"), 307)
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def snapshot(request: Request) -> Response:
        window = _window(request, dashboard)
        if window is None:
            return JSONResponse({"error": f"window must be one of {', '.join(WINDOWS)}"}, 400)
        body = await anyio.to_thread.run_sync(dashboard.snapshot, window)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        window = _window(request, dashboard)
        if window is None:
            return JSONResponse({"error": f"window must be one of {', '.join(WINDOWS)}"}, 400)
        if streams["open"] >= MAX_STREAMS:
            return JSONResponse({"error": "too many open dashboard pages"}, 503)

        async def stream() -> AsyncIterator[str]:
            streams["open"] += 1
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        body = await anyio.to_thread.run_sync(dashboard.snapshot, window)
                        yield f"event: snapshot\ndata: {json.dumps(body, default=str)}\n\n"
                    except Exception as exc:  # say it on the page; keep the stream
                        log.exception("dashboard snapshot failed")
                        error = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
                        yield f"event: failure\ndata: {error}\n\n"
                    await anyio.sleep(dashboard.settings.refresh)
            finally:
                streams["open"] -= 1

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def guarded(request: Request) -> Response | None:
        """A refusal, or None when the request may act."""
        if not _same_origin(request):
            return JSONResponse({"error": "cross-origin request refused"}, 403)
        if not dashboard.check_token(request.headers.get(TOKEN_HEADER)):
            return JSONResponse({"error": f"missing or wrong {TOKEN_HEADER} header"}, 403)
        return None

    async def replay(request: Request) -> Response:
        refusal = await guarded(request)
        if refusal is not None:
            return refusal
        raw = b""
        async for part in request.stream():
            raw += part
            if len(raw) > MAX_BODY:
                return JSONResponse({"error": "request body too large"}, 413)
        try:
            body = json.loads(raw or b"{}")
            topic, destination = str(body["topic"]), str(body["destination"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send {"topic": ..., "destination": ...}'}, 400)
        try:
            result = await anyio.to_thread.run_sync(dashboard.replay, topic, destination)
        except DataLoggerError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(result)

    async def shutdown(request: Request) -> Response:
        refusal = await guarded(request)
        if refusal is not None:
            return refusal
        try:
            result = await anyio.to_thread.run_sync(dashboard.shutdown_node)
        except DataLoggerError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse(result)

    routes: list[Any] = [
        Route("/", index),
        Route("/snapshot.json", snapshot),
        Route("/events", events),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    if dashboard.allow_actions:
        routes += [
            Route("/actions/replay", replay, methods=["POST"]),
            Route("/actions/shutdown", shutdown, methods=["POST"]),
        ]
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if close_on_shutdown:
            await anyio.to_thread.run_sync(dashboard.close)

    application = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    application.state.dashboard = dashboard
    return application
