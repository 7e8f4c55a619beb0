"""The benchmark harness runs end to end on tiny sizes, so it cannot rot unnoticed.

No timing is asserted: only that each case measures both variants, counts
every row in the destination and writes its JSON result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main
from tests.services import postgres_dsn_or_skip


def _result(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.timeout(120)
def test_latency_and_postgres_cases_run_through_the_harness(tmp_path: Path) -> None:
    """``python -m bench <case> --smoke`` measures ours and the baseline and verifies the rows."""
    for case, variants in (("latency", {"ours", "ask"}), ("postgres", {"ours", "copy"})):
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
