"""`check_health` rules, and `datalogger health` against a running node."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from datalogger.deadletters import DeadLetterSummary
from datalogger.health import check_health
from tests import mixed_workload
from tests.conftest import free_port

NOW = 1_000_000.0
ROOT = Path(__file__).resolve().parent.parent


def lane(failing_since: float | None = None, last_error: str | None = None) -> dict[str, Any]:
    return {"delivered": 1, "failing_since": failing_since, "last_error": last_error}


def letters(topic: str, destination: str, count: int, rows: int) -> DeadLetterSummary:
    return DeadLetterSummary(topic, destination, count, rows, NOW - 50, NOW - 10, "boom")


def test_healthy_when_nothing_fails_and_no_dead_letters() -> None:
    stats = {"topics": {"green": {"db": lane()}, "red": {"db": lane()}}, "rejected": 3}
    assert check_health(stats, [], 60, NOW) == []
    assert check_health({"topics": {}}, None, 60, NOW) == []


def test_failing_longer_than_the_threshold_is_a_problem() -> None:
    stats = {
        "topics": {
            "green": {"db": lane(NOW - 61, "ConnectionError: refused"), "files": lane()},
            "red": {"db": lane(NOW - 59, "ConnectionError: refused")},
        }
    }
    problems = check_health(stats, [], 60, NOW)
    assert problems == [
        "green -> db: failing for 61s (more than 60s); last error: ConnectionError: refused"
    ]
    assert len(check_health(stats, [], 30, NOW)) == 2
    assert check_health(stats, [], 61, NOW) == [], "exactly the threshold is still fine"


def test_dead_letters_are_a_problem_each() -> None:
    summary = [letters("green", "db", 2, 20), letters("red", "db", 1, 4)]
    problems = check_health({"topics": {}}, summary, 60, NOW)
    assert len(problems) == 2
    assert problems[0].startswith("green -> db: 2 dead letters (20 rows) on disk; last reason: boom")
    assert problems[1].startswith("red -> db: 1 dead letters (4 rows)")
    assert check_health({"topics": {}}, [letters("red", "db", 0, 0)], 60, NOW) == []


def health(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datalogger", "health", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_health_command_against_a_running_node(tmp_path: Path, start_node: Any) -> None:
    port = free_port()
    config = mixed_workload.config(tmp_path)
    dl = start_node(config, admin_port=port)
    toml = tmp_path / "node.toml"
    toml.write_text(
        f'data_dir = "{config["data_dir"]}"\nhealth_failing_after = 3600\n\n'
        f'[destinations.switch]\ntype = "tests.dests:Switchable"\ndirectory = "{tmp_path}"\n'
    )

    result = health("--admin-port", str(port), "--failing-after", "0")
    assert (result.returncode, result.stdout.strip()) == (
        0,
        "healthy (dead letters not checked: no --config, --data-dir)",
    ), result.stderr

    mixed_workload.run(dl)  # red -> switch is down and dead-lettered; green has bad rows

    result = health("--admin-port", str(port), "--config", str(toml))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "unhealthy: 2 problem(s)"
    assert lines[1].startswith("- green -> switch: 1 dead letters (2 rows) on disk")
    assert lines[2].startswith("- red -> switch: 1 dead letters (4 rows) on disk")
    assert "ConnectionError: destination is down" in lines[2]

    result = health("--admin-port", str(port), "--failing-after", "0")
    assert result.returncode == 1
    assert "red -> switch: failing for" in result.stdout
    assert "last error: ConnectionError: destination is down" in result.stdout
    assert "flaky" not in result.stdout, "flaky recovered"

    result = health("--admin-port", str(free_port()))
    assert result.returncode == 2
    assert result.stdout.startswith("no node answers on 127.0.0.1:")
