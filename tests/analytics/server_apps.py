"""An ASGI and a WSGI app wrapped in ``DataLoggerMiddleware``, for tests through real servers.

Served by uvicorn (``tests.analytics.server_apps:asgi``) and gunicorn
(``tests.analytics.server_apps:wsgi``) in subprocesses. Each connects lazily
to the node on ``$DATALOGGER_TEST_ADMIN_PORT``, in every worker process. A
response's body is the pid of the worker that served it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from datalogger.analytics import DataLoggerMiddleware

ADMIN_PORT = int(os.environ.get("DATALOGGER_TEST_ADMIN_PORT", "1900"))
CONNECT = {"admin_port": ADMIN_PORT, "connect_timeout": 0.5}


async def bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The application: its pid as text; a complete lifespan."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})


def bare_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The application: its pid as text (``/busy`` first keeps the worker busy for 0.2 s)."""
    if environ.get("PATH_INFO") == "/busy":
        time.sleep(0.2)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


asgi = DataLoggerMiddleware(bare_asgi, connect=CONNECT)
wsgi = DataLoggerMiddleware(bare_wsgi, connect=CONNECT)
