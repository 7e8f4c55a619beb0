"""The applications the middleware benchmark serves: bare, and wrapped in ``DataLoggerMiddleware``.

``bench.web_apps:asgi_bare`` / ``asgi_datalogger`` for uvicorn and
``wsgi_bare`` / ``wsgi_datalogger`` for gunicorn. The wrapped ones connect
lazily (``connect={...}``) to the node on ``$DATALOGGER_BENCH_ADMIN_PORT`` and
publish every request (``publish=True``, the default).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from datalogger.analytics import DataLoggerMiddleware

BODY = b"hello world"
CONNECT = {"admin_port": int(os.environ.get("DATALOGGER_BENCH_ADMIN_PORT", "1900"))}


async def asgi_bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A fixed small response; a complete lifespan."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": BODY})


def wsgi_bare(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A fixed small response."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [BODY]


asgi_datalogger = DataLoggerMiddleware(asgi_bare, connect=CONNECT, ip_salt="bench")
wsgi_datalogger = DataLoggerMiddleware(wsgi_bare, connect=CONNECT, ip_salt="bench")
