"""The benchmark harness runs end to end on tiny sizes, so it cannot rot unnoticed.

No timing is asserted: only that each case measures both variants, counts
every row in the destination and writes its JSON result.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.__main__ import main
from tests.services import (
    influxdb_or_skip,
    postgres_dsn_or_skip,
    unavailable,
    victoriametrics_or_skip,
)


def _result(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.timeout(120)
def test_latency_and_postgres_cases_run_through_the_harness(tmp_path: Path) -> None:
    """``python -m bench <case> --smoke`` measures ours and the baseline and verifies the rows."""
    for case, variants in (
        ("latency", {"ours", "ask", "ours_unsigned", "ask_unsigned"}),
        ("postgres", {"ours", "ours_unsigned", "copy", "bulk_copy", "send_data"}),
    ):
        if case == "postgres":
            postgres_dsn_or_skip()  # after the latency case, which needs no server
        out = tmp_path / f"{case}.json"
        assert main([case, "--smoke", "--json", str(out)]) == 0
        data = _result(out)
        assert data["case"] == case
        assert data["mode"] == "smoke"
        medians = data["medians"]
        assert isinstance(medians, dict) and set(medians) == variants
        verified = data["verified"]
        assert isinstance(verified, dict) and verified  # rows were counted in the destination
        targets = data["targets"]
        assert isinstance(targets, list) and targets
        assert all(t["value"] > 0 for t in targets)


@pytest.mark.timeout(180)
def test_influxdb_case_measures_the_baselines_and_the_sequence_after_postgres(tmp_path: Path) -> None:
    """``influxdb --smoke``: ours, the per-chunk and 5,000-line POSTs, send_data in-process, and
    issue 19's sequence (PostgreSQL then InfluxDB through new nodes); every row counted."""
    postgres_dsn_or_skip()
    influxdb_or_skip()
    out = tmp_path / "influxdb.json"
    assert main(["influxdb", "--smoke", "--json", str(out)]) == 0
    data = _result(out)
    medians = data["medians"]
    assert isinstance(medians, dict) and set(medians) == {
        "ours", "http", "http_5000", "send_data", "seq_after_postgres", "seq_alone"
    }
    verified = data["verified"]
    assert isinstance(verified, dict) and len(verified) == 4 + 2 + 1  # one round each
    names = [t["name"] for t in data["targets"]]  # type: ignore[union-attr]
    assert sum(name.startswith("issue 19:") for name in names) == 3
    assert medians["seq_after_postgres"]["pg_spilled"] == 0  # 200 rows: far under the bound


@pytest.mark.timeout(120)
def test_per_row_case_writes_to_victoriametrics(tmp_path: Path) -> None:
    """``per_row``: ours and influxdb-client's batching WriteApi, both counted in VictoriaMetrics."""
    victoriametrics_or_skip()
    out = tmp_path / "per_row.json"
    assert main(["per_row", "--smoke", "--json", str(out)]) == 0
    data = _result(out)
    medians = data["medians"]
    assert isinstance(medians, dict) and set(medians) == {"ours", "influxdb_client", "queue_handler"}
    verified = data["verified"]
    assert isinstance(verified, dict) and sorted(verified.values()) == [200, 200]


@pytest.mark.timeout(180)
def test_peer_vmagent_case_measures_both_shippers_and_the_outage(tmp_path: Path) -> None:
    """``peer_vmagent --smoke``: both sides stored every row, the outage is counted on both."""
    for binary in ("victoria-metrics", "vmagent"):
        if shutil.which(binary) is None:
            unavailable(f"{binary} is not installed (Debian package victoria-metrics)")
    out = tmp_path / "peer.json"
    assert main(["peer_vmagent", "--smoke", "--json", str(out)]) == 0
    data = _result(out)
    medians = data["medians"]
    assert isinstance(medians, dict)
    assert {"datalogger", "vmagent", "datalogger_nowait"} <= set(medians)
    for side in ("datalogger", "vmagent"):
        outage = medians[f"outage:{side}"]
        assert outage["rows_accepted"] > 0
        assert outage["rows_stored"] + outage["rows_lost"] == outage["rows_accepted"]
    assert medians["outage:datalogger"]["rows_lost"] == 0
    ratios = data["ratios"]
    assert isinstance(ratios, dict) and ratios["datalogger/vmagent rows/s until stored"] > 0


@pytest.mark.timeout(120)
def test_encoders_case_checks_the_bodies_and_measures_every_encoder(tmp_path: Path) -> None:
    """``encoders --smoke``: the three line-protocol encoders agree; each variant is measured."""
    postgres_dsn_or_skip()
    out = tmp_path / "encoders.json"
    assert main(["encoders", "--smoke", "--json", str(out)]) == 0
    data = _result(out)
    medians = data["medians"]
    assert isinstance(medians, dict)
    encoders = ("compiled", "generic", "point")
    expected = {f"lp_{name}:{shape}" for name in encoders for shape in ("metric", "wide")}
    assert set(medians) == expected | {"pg_copy_rows", "pg_write_row"}
    verified = data["verified"]
    assert isinstance(verified, dict)
    assert verified["metric: compiled == generic == Point bodies"] == 2
    assert verified["postgres rows in the last round"] == 2000
    targets = data["targets"]
    assert isinstance(targets, list) and len(targets) == 5 and all(t["value"] > 0 for t in targets)


@pytest.mark.timeout(180)
def test_logging_and_middleware_cases_run_through_the_harness(tmp_path: Path) -> None:
    """``logging``: the handler against QueueHandler; ``middleware``: bare and wrapped apps
    through uvicorn and gunicorn, every request of the wrapped ones counted in the destination."""
    out = tmp_path / "logging.json"
    assert main(["logging", "--smoke", "--json", str(out)]) == 0
    data = _result(out)
    assert set(data["medians"]) == {"ours", "queue_handler"}  # type: ignore[arg-type]
    assert data["verified"] == {"logs_r0": 500}
    out = tmp_path / "middleware.json"
    assert main(["middleware", "--smoke", "--json", str(out)]) == 0
    data = _result(out)
    assert set(data["medians"]) == {  # type: ignore[arg-type]
        "uvicorn_bare", "uvicorn_datalogger", "gunicorn_bare", "gunicorn_datalogger"
    }
    stored = data["verified"]["requests stored"]  # type: ignore[index]
    assert stored >= 2 * (50 + 50)  # warm-up and sequential requests of both wrapped apps
    assert {t["name"] for t in data["targets"]} == {  # type: ignore[union-attr]
        "uvicorn added p99 ms", "gunicorn added p99 ms"
    }


@pytest.mark.timeout(180)
def test_pubsub_case_measures_every_subscriber_kind(tmp_path: Path) -> None:
    """``pubsub``: the per-event baseline, batches (alone and beside a slow one), a Subscription."""
    out = tmp_path / "pubsub.json"
    assert main(["pubsub", "--smoke", "--json", str(out)]) == 0
    data = _result(out)
    medians = data["medians"]
    assert isinstance(medians, dict)
    assert set(medians) == {"per_event", "batched", "batched_beside_slow", "subscription"}
    assert all(m["events_per_s"] > 0 for m in medians.values())
    ratios = data["ratios"]
    assert isinstance(ratios, dict) and "batched/per_event events/s" in ratios


@pytest.mark.timeout(120)
def test_topics_many_case_counts_every_row_and_reports_memory_and_calls(tmp_path: Path) -> None:
    """``topics_many``: rows counted in both destinations, PSS target, call times."""
    out = tmp_path / "topics_many.json"
    assert main(["topics_many", "--smoke", "--json", str(out)]) == 0
    data = _result(out)
    medians = data["medians"]
    assert isinstance(medians, dict)
    assert {"first_delivery_s", "stats_s", "flush_s", "shutdown_s"} <= set(medians["ours"])
    assert data["verified"] == {"jsonl rows": 550, "sqlite rows": 550}
    targets = data["targets"]
    assert isinstance(targets, list) and targets[0]["name"] == "node PSS MB"
