"""Latency the analytics middleware adds to a WSGI request.

::

    python -m bench middleware                     # 10 rounds of 2,000 requests per variant
    python -m bench middleware --quick            # 4 rounds of 200

Variants, each calling the WSGI app directly (no server, no network):

``bare``
    the app alone;
``middleware``
    ``AnalyticsWSGIMiddleware`` with a handle whose ``log``/``broadcast`` do
    nothing: the middleware's own work (session, hashing, RequestLog);
``datalogger``
    the middleware on a real ``multiprocTCPBase`` node (memory destination):
    a blocking ``log`` and a pubsub ``broadcast`` per request.

Rounds alternate the variants (the order rotates each round) so drift in the
machine's speed hits all of them alike. Per round, p50 and p99 of the
per-request latency are taken; the report gives the median over rounds, the
latency added over ``bare`` and the ratio to ``bare``, and writes everything
as JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.util import setup_testing_defaults

import datalogger
from datalogger import pubsub
from datalogger.analytics import AnalyticsWSGIMiddleware, percentile

from ._common import RESULTS, free_port, utc_stamp

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The benchmarked application: a fixed small response."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello world"]


class NullHandle:
    """A handle that stores nothing: isolates the middleware's own cost."""

    def log(self, topic: str, data: Any) -> None:
        """Do nothing."""

    def broadcast(self, event: Any) -> None:
        """Do nothing."""


class NodeHandle:
    """``log`` and ``broadcast`` on a running DataLogger."""

    def __init__(self, dl: datalogger.DataLogger) -> None:
        self.dl = dl

    def log(self, topic: str, data: Any) -> int:
        """Log one row (blocking until accepted)."""
        return self.dl.log(topic, data)

    def broadcast(self, event: Any) -> None:
        """Broadcast to live subscribers."""
        pubsub.broadcast(self.dl, event)


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def time_requests(wsgi: WSGIApp, count: int) -> list[float]:
    """Latency in ms of ``count`` requests through ``wsgi`` (body read and closed)."""
    latencies: list[float] = []
    for i in range(count):
        environ: dict[str, Any] = {}
        setup_testing_defaults(environ)
        environ["PATH_INFO"] = f"/page/{i % 20}"
        environ["HTTP_USER_AGENT"] = "bench"
        environ["REMOTE_ADDR"] = "198.51.100.1"
        started = time.perf_counter()
        body = wsgi(environ, _start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        latencies.append((time.perf_counter() - started) * 1000.0)
    return latencies


def measure(rounds: int, count: int) -> dict[str, Any]:
    """Run the alternating rounds; return per-round and median p50/p99 per variant."""
    with tempfile.TemporaryDirectory() as state:
        dl = datalogger.start(
            {"data_dir": state, "destinations": {"m": {"type": "memory"}}},
            admin_port=free_port(),
            make_default=False,
        )
        try:
            variants: dict[str, WSGIApp] = {
                "bare": app,
                "middleware": AnalyticsWSGIMiddleware(app, NullHandle(), ip_salt="bench"),
                "datalogger": AnalyticsWSGIMiddleware(app, NodeHandle(dl), ip_salt="bench"),
            }
            for wsgi in variants.values():  # warm up imports, caches and connections
                time_requests(wsgi, min(50, count))
            names = list(variants)
            per_round: dict[str, list[dict[str, float]]] = {name: [] for name in names}
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    latencies = sorted(time_requests(variants[name], count))
                    per_round[name].append(
                        {
                            "p50": percentile(latencies, 50) or 0.0,
                            "p99": percentile(latencies, 99) or 0.0,
                        }
                    )
        finally:
            dl.shutdown()
    medians = {
        name: {q: statistics.median(r[q] for r in rounds_) for q in ("p50", "p99")}
        for name, rounds_ in per_round.items()
    }
    bare = medians["bare"]
    ratios = {
        name: {q: (m[q] / bare[q] if bare[q] else None) for q in ("p50", "p99")}
        for name, m in medians.items()
    }
    added = {name: {q: m[q] - bare[q] for q in ("p50", "p99")} for name, m in medians.items()}
    return {
        "per_round": per_round,
        "median_ms": medians,
        "added_ms": added,
        "ratio_to_bare": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the medians and ratios, write the JSON; return 0."""
    parser = argparse.ArgumentParser(description="Latency added by the analytics middleware.")
    parser.add_argument("--quick", action="store_true", help="4 rounds of 200 requests")
    parser.add_argument("--rounds", type=int, help="rounds (default 10, quick 4)")
    parser.add_argument(
        "--requests", type=int, help="requests per variant per round (default 2000, quick 200)"
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (4 if args.quick else 10)
    count = args.requests or (200 if args.quick else 2000)
    result = measure(rounds, count)
    print(f"{rounds} rounds x {count} requests per variant, alternating")
    header = ("p50 ms", "p99 ms", "+p50 ms", "+p99 ms")
    print(f"{'variant':<12}" + "".join(f"{h:>10}" for h in header) + f"{'p50 x':>9}{'p99 x':>9}")
    for name, median in result["median_ms"].items():
        ratio, added = result["ratio_to_bare"][name], result["added_ms"][name]
        print(
            f"{name:<12}{median['p50']:>10.4f}{median['p99']:>10.4f}"
            f"{added['p50']:>10.4f}{added['p99']:>10.4f}"
            f"{ratio['p50'] or 0:>9.1f}{ratio['p99'] or 0:>9.1f}"
        )
    stamp = utc_stamp()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"middleware_latency-{stamp}.json"
    payload = {
        "benchmark": "middleware_latency",
        "when": stamp,
        "rounds": rounds,
        "requests_per_round": count,
        "python": platform.python_version(),
        "machine": platform.machine(),
        **result,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
