"""Prometheus metrics, scraped over HTTP and parsed as Prometheus would."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import datalogger
from datalogger.metrics import serve_metrics
from tests import mixed_workload
from tests.conftest import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def lane(samples: Samples, name: str, topic: str, destination: str) -> float:
    return samples[(name, (("destination", destination), ("topic", topic)))]


@pytest.fixture
def server() -> Iterator[list[Any]]:
    servers: list[Any] = []
    yield servers
    for item in servers:
        item.shutdown()
        item.server_close()


def test_scrape_reports_exact_counters_and_dead_letters(
    tmp_path: Path, start_node: Any, server: list[Any]
) -> None:
    dl = start_node(mixed_workload.config(tmp_path))
    before = time.time()
    mixed_workload.run(dl)
    after = time.time()
    http = serve_metrics(dl.stats, 0, dead_letter_dir=tmp_path / "state" / "dead_letters")
    server.append(http)
    samples = scrape(http.server_port)

    names = {
        "received": "datalogger_rows_received_total",
        "delivered": "datalogger_rows_delivered_total",
        "retried": "datalogger_attempts_retried_total",
        "dead_lettered": "datalogger_rows_dead_lettered_total",
    }
    for (topic, destination), expected in mixed_workload.EXPECTED.items():
        got = {key: lane(samples, names[key], topic, destination) for key in expected}
        assert got == expected, (topic, destination)
        for name in ("datalogger_rows_spilled_total", "datalogger_rows_dropped_total",
                     "datalogger_worker_restarts_total", "datalogger_buffered_rows"):
            assert lane(samples, name, topic, destination) == 0
    assert lane(samples, "datalogger_attempts_failed_total", "green", "flaky") == 2
    assert samples[("datalogger_up", ())] == 1
    assert samples[("datalogger_rejected_calls_total", ())] == 0

    # dead letters on disk: one letter per (topic, destination) that gave up
    letters = {k[1]: v for k, v in samples.items() if k[0] == "datalogger_dead_letters"}
    rows = {k[1]: v for k, v in samples.items() if k[0] == "datalogger_dead_letter_rows"}
    green = (("destination", "switch"), ("topic", "green"))
    red = (("destination", "switch"), ("topic", "red"))
    assert letters == {green: 1, red: 1}
    assert rows == {green: 2, red: 4}

    # failing: only red -> switch, since a time within the test; flaky has recovered
    assert lane(samples, "datalogger_failing", "red", "switch") == 1
    assert lane(samples, "datalogger_failing", "red", "flaky") == 0
    since = lane(samples, "datalogger_failing_since_timestamp_seconds", "red", "switch")
    assert before <= since <= after
    failing_since = [k for k in samples if k[0] == "datalogger_failing_since_timestamp_seconds"]
    assert (("destination", "flaky"), ("topic", "red")) not in {k[1] for k in failing_since}
    stats = dl.stats()["topics"]
    for topic, destination in mixed_workload.EXPECTED:
        at = lane(samples, "datalogger_last_error_timestamp_seconds", topic, destination)
        assert at == stats[topic][destination]["last_error_at"]
        p50, p99 = (
            samples[
                (
                    "datalogger_delivery_latency_seconds",
                    (("destination", destination), ("quantile", q), ("topic", topic)),
                )
            ]
            for q in ("0.5", "0.99")
        )
        assert 0 <= p50 <= p99


def test_scrape_survives_a_node_that_does_not_answer(tmp_path: Path, server: list[Any]) -> None:
    def stats() -> dict[str, Any]:
        raise datalogger.NotRunning("gone")

    http = serve_metrics(stats, 0, dead_letter_dir=tmp_path / "none")
    server.append(http)
    samples = scrape(http.server_port)
    assert samples == {("datalogger_up", ()): 0}


def test_run_serves_metrics_on_loopback(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "state"}"\n\n[destinations.rec]\n'
        f'type = "tests.dests:Recorder"\ndirectory = "{tmp_path / "out"}"\n'
    )
    port, metrics_port = free_port(), free_port()
    root = Path(__file__).resolve().parent.parent
    node = subprocess.Popen(
        [sys.executable, "-m", "datalogger", "run", "--config", str(config),
         "--admin-port", str(port), "--metrics-port", str(metrics_port)],
        cwd=root, stdout=subprocess.PIPE, stderr=(tmp_path / "stderr").open("w"), text=True,
    )
    try:
        assert node.stdout is not None
        assert "running" in node.stdout.readline()
        assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in node.stdout.readline()
        threading.Thread(target=node.stdout.read, daemon=True).start()
        logged = subprocess.run(
            [sys.executable, "-m", "datalogger", "log", "green", "--admin-port", str(port)],
            input='{"n": 1}\n{"n": 2}\n', cwd=root, capture_output=True, text=True, timeout=60,
        )
        assert logged.returncode == 0, logged.stderr
        deadline = time.monotonic() + 20
        while True:
            samples = scrape(metrics_port)
            key = ("datalogger_rows_delivered_total", (("destination", "rec"), ("topic", "green")))
            if samples.get(key) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert samples[key] == 2
        assert not [k for k in samples if k[0].startswith("datalogger_dead_letter")]
    finally:
        subprocess.run(
            [sys.executable, "-m", "datalogger", "shutdown", "--admin-port", str(port)],
            cwd=root, capture_output=True, timeout=60,
        )
        node.wait(timeout=30)


def test_a_node_with_too_many_topics_for_detail_exports_the_sums_per_destination() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from datalogger.metrics import StatsCollector

    stats = {
        "topics": {},
        "summary": {"topics": 5000, "destinations": {"db": {"delivered": 12, "received": 12}}},
    }
    registry = CollectorRegistry()
    registry.register(StatsCollector(lambda: stats))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = [s for s in families["datalogger_rows_delivered"].samples if s.name.endswith("_total")]
    assert sample.labels == {"topic": "*", "destination": "db"} and sample.value == 12
