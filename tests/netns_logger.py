"""Log numbered rows to a node until told to stop; record each acknowledged id.

Run inside a host of the test bed::

    python -m tests.netns_logger HOST ACKED_FILE STOP_FILE

It connects to the node on ``HOST`` (admin port 1900), logs 20-row chunks to
topics ``t0``..``t3`` in turn, and appends the ids of each chunk ``log()``
acknowledged to ``ACKED_FILE``. Once ``STOP_FILE`` exists it flushes and prints
one JSON line: rounds, failed calls, and the flush's outcome.
"""

from __future__ import annotations

import json
import os
import sys
import time

import datalogger


def main(host: str, acked_path: str, stop_path: str) -> int:
    """Log until ``stop_path`` exists; see the module docstring."""
    handle = datalogger.connect(1900, host=host)
    failures: list[str] = []
    rounds = 0
    with open(acked_path, "a") as acked:
        while not os.path.exists(stop_path):
            for topic in ("t0", "t1", "t2", "t3"):
                rows = [{"id": f"{topic}-{rounds}-{i}", "n": i} for i in range(20)]
                try:
                    handle.log(topic, rows, timeout=20)
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                acked.write("".join(f"{row['id']}\n" for row in rows))
                acked.flush()
            rounds += 1
            time.sleep(0.02)
    flushed = "ok"
    try:
        handle.flush(timeout=60)
    except Exception as exc:
        flushed = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"rounds": rounds, "failures": failures, "flush": flushed}), flush=True)
    handle.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
