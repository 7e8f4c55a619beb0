"""An application that logs with ``log_nowait`` while the node may be away (run as a subprocess).

``python -m tests.client_app PORT SPOOL_DIR ROWS EXIT [GO]`` logs ROWS rows to the
topic ``green`` (``{"n": i, "pid": ...}``) with ``client_buffer_rows=1000``,
waits until every row is either sent or in the spool, prints the client
counters as JSON, then ends: ``EXIT=close`` closes the handle, ``EXIT=kill``
kills the process with SIGKILL (nothing runs at exit). With GO, a path, it
waits for that file to exist before it ends (so several apps run at once).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import datalogger


def main() -> None:
    """Run the application."""
    port, spool_dir, count, how = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    dl = datalogger.connect(
        port, require_node=False, make_default=False, client_buffer_rows=1000, spool_dir=spool_dir
    )
    dropped = sum(not dl.log_nowait("green", {"n": n, "pid": os.getpid()}) for n in range(count))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = dl.client_stats()
        if stats["queued"] == 0 and stats["spooled"] + stats["sent"] + stats["dropped"] >= count:
            break
        time.sleep(0.05)
    print(json.dumps({**dl.client_stats(), "refused_puts": dropped}), flush=True)
    if len(sys.argv) > 5:
        while not os.path.exists(sys.argv[5]) and time.monotonic() < deadline + 30:
            time.sleep(0.05)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    dl.close()


if __name__ == "__main__":
    main()
