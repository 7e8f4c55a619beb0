"""A workload with successes, retries and dead letters, shared by the observability tests.

Two destinations take every topic:

- ``flaky`` (tests.dests.Flaky): the first 2 attempts of each topic fail, then all succeed;
- ``switch`` (tests.dests.Switchable): rejects rows marked ``bad`` for good; topic ``red``
  is down for the whole test, so its chunk is retried, then dead-lettered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datalogger
from tests.conftest import recorder

FAST = {"initial_delay": 0.05, "max_delay": 0.1, "jitter": 0.0}
SWITCH_ATTEMPTS = 3


def config(tmp_path: Path) -> dict[str, Any]:
    """The node's configuration; creates ``<tmp>/switch/red.down``."""
    (tmp_path / "switch").mkdir(parents=True, exist_ok=True)
    (tmp_path / "switch" / "red.down").touch()
    return {
        "data_dir": str(tmp_path / "state"),
        "destinations": {
            "flaky": recorder(tmp_path / "flaky", "Flaky", failures=2, retry=FAST),
            "switch": recorder(
                tmp_path / "switch",
                "Switchable",
                retry={**FAST, "max_attempts": SWITCH_ATTEMPTS},
            ),
        },
    }


def run(dl: datalogger.DataLogger) -> None:
    """Log 15 rows (2 bad) to ``green`` and 4 rows to ``red``, and wait until all settled."""
    dl.log("green", [{"n": i} for i in range(10)])
    dl.log("green", [{"n": n, "bad": n in (11, 13)} for n in range(10, 15)])
    dl.log("red", [{"n": i} for i in range(4)])
    dl.flush(timeout=30)


#: (topic, destination) -> counters expected after :func:`run`.
EXPECTED: dict[tuple[str, str], dict[str, int]] = {
    ("green", "flaky"): {"received": 15, "delivered": 15, "retried": 2, "dead_lettered": 0},
    ("red", "flaky"): {"received": 4, "delivered": 4, "retried": 2, "dead_lettered": 0},
    ("green", "switch"): {"received": 15, "delivered": 13, "retried": 0, "dead_lettered": 2},
    ("red", "switch"): {
        "received": 4,
        "delivered": 0,
        "retried": SWITCH_ATTEMPTS - 1,
        "dead_lettered": 4,
    },
}
