"""An ASGI web app recording its requests, with the datalogger dashboard mounted under /dashboard/.

Run it and open http://127.0.0.1:8000/ and http://127.0.0.1:8000/dashboard/ (Ctrl-C stops)::

    python examples/dashboard_app.py

or let it fire requests at itself, read them back from its dashboard and exit
(what the tests do)::

    python examples/dashboard_app.py --requests 50 --port 0 --admin-port 1901

The site is a small Starlette app wrapped in ``AnalyticsASGIMiddleware``; the
dashboard is mounted beside it, not inside it, so that the page's own requests
(its event stream, its script) are not recorded as traffic. The node runs the
embedded default configuration: SQLite and JSONL files under ``./datalogger-demo``;
the dashboard reads the request history from that SQLite file.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Mount, Route

import datalogger
import datalogger.dashboard
from datalogger.analytics import AnalyticsASGIMiddleware

PAGES = {"/": "home", "/about": "about us", "/products": "our products"}


async def page(request: Request) -> PlainTextResponse:
    """The site: three pages."""
    return PlainTextResponse(PAGES[request.url.path])


async def not_found(request: Request, exc: Exception) -> PlainTextResponse:
    """Anything else: 404."""
    return PlainTextResponse("not found", status_code=404)


def build_app(dl: datalogger.DataLogger, **dashboard_options: Any) -> Starlette:
    """The site, recorded by the analytics middleware, with the dashboard under /dashboard/."""
    site = Starlette(
        routes=[Route(path, page) for path in PAGES], exception_handlers={404: not_found}
    )
    return Starlette(
        routes=[
            # "/dashboard" without its slash would go to the site's catch-all mount:
            Route("/dashboard", lambda request: RedirectResponse(request.url.path + "/")),
            Mount("/dashboard", app=datalogger.dashboard.app(dl, **dashboard_options)),
            Mount("/", app=AnalyticsASGIMiddleware(site, dl)),
        ]
    )


def fire(base_url: str, count: int) -> int:
    """Send ``count`` GET requests to the site; return how many got an answer."""
    paths = [*PAGES, "/missing"]
    answered = 0
    for i in range(count):
        request = urllib.request.Request(
            base_url + paths[i % len(paths)], headers={"User-Agent": "dashboard-example"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.read()
        answered += 1
    return answered


def dashboard_count(base_url: str) -> int:
    """The request count the dashboard shows (its ``snapshot.json``)."""
    with urllib.request.urlopen(base_url + "/dashboard/snapshot.json", timeout=30) as response:
        return int(json.load(response)["analytics"]["requests"])


def main(argv: list[str] | None = None) -> int:
    """Run the example; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (0: any free port)")
    parser.add_argument("--admin-port", type=int, default=1900, help="datalogger admin port")
    parser.add_argument(
        "--requests", type=int, metavar="N", help="fire N requests at itself and exit"
    )
    args = parser.parse_args(argv)
    dl = datalogger.start(admin_port=args.admin_port)
    try:
        app = build_app(dl)
        sock = socket.socket()
        sock.bind(("127.0.0.1", args.port))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        if args.requests is None:
            print(f"site on {url}/, dashboard on {url}/dashboard/ (Ctrl-C to stop)", flush=True)
            server.run(sockets=[sock])
            return 0
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        answered = fire(url, args.requests)
        print(f"answered {answered} requests")
        deadline = time.monotonic() + 20.0  # the page's numbers arrive live, through pubsub
        seen = dashboard_count(url)
        while seen < answered and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = dashboard_count(url)
        print(f"the dashboard counts {seen} requests")
        server.should_exit = True
        thread.join(10)
        return 0 if seen >= answered else 1
    finally:
        dl.shutdown()


if __name__ == "__main__":
    sys.exit(main())
