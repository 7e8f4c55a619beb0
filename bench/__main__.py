"""``python -m bench <case> [--quick | --smoke] [--rounds N] [--json PATH]``.

Cases: postgres, influxdb, per_row, latency, topics, topics_many, outage, wal_fsync,
peer_vmagent, encoders, signing, middleware, logging, pubsub, all; ``plot`` draws
docs/img/throughput_vs_chunk.png.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from ._common import Mode, Result, report, write_result

#: Case name -> module (each has ``run(mode) -> Result``).
CASES = {
    "postgres": "bench.postgres",
    "influxdb": "bench.influxdb",
    "per_row": "bench.per_row",
    "latency": "bench.latency",
    "topics": "bench.topics",
    "topics_many": "bench.topics_many",
    "outage": "bench.outage",
    "wal_fsync": "bench.wal_fsync",
    "peer_vmagent": "bench.peer_vmagent",
    "encoders": "bench.encoders",
    "middleware": "bench.middleware",
    "logging": "bench.logging_handler",
    "signing": "bench.signing",
    "pubsub": "bench.pubsub",
}
ALL = list(CASES)


def run_case(name: str, mode: Mode, json_path: str | None = None) -> Result:
    """Run one case, print its report and write its JSON; return the result."""
    module = importlib.import_module(CASES[name])
    result: Result = module.run(mode)
    print(report(result), flush=True)
    print(f"  written {write_result(result, json_path)}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the cases; return 0 (a MISS is reported, not an error)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("case", choices=[*ALL, "all", "plot"])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small totals: under a minute a case")
    size.add_argument("--smoke", action="store_true", help="tiny totals, for the test suite")
    parser.add_argument("--rounds", type=int, help="rounds per variant (default per case)")
    parser.add_argument("--json", help="result file (default bench/results/<case>-<time>.json)")
    args = parser.parse_args(argv)
    mode = Mode("smoke" if args.smoke else "quick" if args.quick else "full", args.rounds)
    if args.case == "plot":
        from . import plot

        return plot.main(mode, args.json)
    names = list(CASES) if args.case == "all" else [args.case]
    results = []
    for name in names:
        json_path = args.json
        if json_path and len(names) > 1:
            path = Path(json_path)
            json_path = str(path.with_name(f"{path.stem}-{name}{path.suffix}"))
        results.append(run_case(name, mode, json_path))
    if len(results) > 1:
        print(summary(results), flush=True)
    return 0


def summary(results: list[Result]) -> str:
    """Every target of every case, one line each, with PASS or MISS and its margin."""
    lines = [f"== targets ({results[0].mode if results else ''})"]
    for result in results:
        lines.extend(f"  {result.case}: {target.line()}" for target in result.targets)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
