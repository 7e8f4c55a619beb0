"""Request analytics in a small WSGI web app, with a live view and a summary.

Run it and open http://127.0.0.1:8000/ (Ctrl-C prints the summary and stops)::

    python examples/analytics_app.py

or let it fire requests at itself and exit (what the tests do)::

    python examples/analytics_app.py --requests 50 --port 0 --admin-port 1901

It starts datalogger with the embedded default configuration (SQLite and JSONL
files under ``./datalogger-demo``), wraps the app in ``DataLoggerMiddleware``
with the handle (each request costs a queue put: the handle's background
thread sends the rows and the live events, so a request never waits for the
node), prints every request live from a pubsub subscription, and at the end
prints the summary read back from SQLite (the same as ``datalogger analytics``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from rich.console import Console

import datalogger
from datalogger import pubsub
from datalogger.analytics import (
    DataLoggerMiddleware,
    load_rows_sqlite,
    render_summary,
    summarize,
)
from datalogger.analytics.cli import default_db

PAGES = {"/": b"home", "/about": b"about us", "/products": b"our products"}


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The web app: three pages, and 404 for anything else."""
    body = PAGES.get(environ.get("PATH_INFO", "/"))
    if body is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


class QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without its access log (the live view shows requests)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing."""


def fire(base_url: str, count: int) -> int:
    """Send ``count`` GET requests to the app; return how many got an answer."""
    paths = [*PAGES, "/missing"]
    answered = 0
    for i in range(count):
        request = urllib.request.Request(
            base_url + paths[i % len(paths)], headers={"User-Agent": "analytics-example"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.read()
        answered += 1
    return answered


def main(argv: list[str] | None = None) -> int:
    """Run the example; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (0: any free port)")
    parser.add_argument("--admin-port", type=int, default=1900, help="datalogger admin port")
    parser.add_argument(
        "--requests", type=int, metavar="N", help="fire N requests at itself and exit"
    )
    args = parser.parse_args(argv)
    console = Console()

    shown: list[str] = []

    def show(event: Any) -> None:
        line = (
            f"live: {event.method} {event.path} -> {event.status_code} "
            f"({event.duration_ms:.1f} ms, {event.device_type})"
        )
        console.print(line, markup=False, highlight=False)
        shown.append(line)

    dl = datalogger.start(admin_port=args.admin_port)
    try:
        live = pubsub.subscribe(dl, "requests", callback=show)
        server = make_server(
            "127.0.0.1",
            args.port,
            DataLoggerMiddleware(app, dl),
            handler_class=QuietHandler,
        )
        url = f"http://127.0.0.1:{server.server_port}"
        with live, server:
            if args.requests is None:
                console.print(f"serving on {url}/ (Ctrl-C to stop)")
                try:
                    server.serve_forever()
                except KeyboardInterrupt:
                    pass
            else:
                thread = threading.Thread(target=server.serve_forever, daemon=True)
                thread.start()
                answered = fire(url, args.requests)
                server.shutdown()
                thread.join()
                console.print(f"answered {answered} requests")
                deadline = time.monotonic() + 10.0  # let the live view catch up
                while len(shown) < answered and time.monotonic() < deadline:
                    time.sleep(0.05)
            dl.flush(timeout=30)
        live_seen = len(shown)
        rows = load_rows_sqlite(default_db(), "requests")
        console.print(render_summary(summarize(rows)))
        console.print(f"recorded {len(rows)} requests in total; {live_seen} seen live in this run")
    finally:
        dl.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
