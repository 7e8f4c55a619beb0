"""DataBuffer: the ``data_buffer`` (Elixir) getting-started example, in Python.

Run it from a checkout::

    python examples/data_buffer_example.py                 # actors in their own processes
    python examples/data_buffer_example.py --base simpleSystemBase

``handle_flush`` runs inside a BufferActor, in another process on
``multiprocTCPBase``: that process must be able to import ``Buffer``, so it
cannot live in ``__main__``. Run as a script, this file therefore imports
itself as the module ``data_buffer_example`` (its folder is on ``sys.path``)
and runs :func:`main` from there; in your own code, put your DataBuffer
subclasses in a module and import them.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from typing import Any

import datalogger
from datalogger.buffer import DataBuffer


class Buffer(DataBuffer):
    """The buffer of the example: prints what it flushes."""

    partitions = 4
    interval = 10.0

    def handle_flush(self, key: Any, data: list[Any], meta: Any = None) -> Any:
        """Do database stuff... here, print the key and the data."""
        print(f"handle_flush key={key!r} data={data!r}", flush=True)
        return "ok"

    def handle_error(self, key: Any, data: list[Any], meta: Any = None) -> None:
        """Put the data back into the buffer, or on local disk... here, print it."""
        print(f"handle_error key={key!r} data={data!r}", flush=True)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    """Start a node, buffer two values under one key, watch them flushed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="multiprocTCPBase", choices=datalogger.system.BASES)
    parser.add_argument("--admin-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds (the class says 10)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "data_dir": f"{tmp}/state",
            "destinations": {"files": {"type": "jsonl", "directory": f"{tmp}/jsonl"}},
        }
        port = args.admin_port or free_port()
        with datalogger.start(config, base=args.base, admin_port=port, make_default=False) as dl:
            buf = Buffer(interval=args.interval).start(dl)
            buf.insert("mykey", "myval1")  # Adds myval1 to mykey
            buf.insert("mykey", "myval2")  # Adds myval2 to mykey
            print(f"buffered {buf.dump()!r}", flush=True)

            started = time.monotonic()  # flushed by handle_flush after the interval
            while buf.size() and time.monotonic() - started < args.interval + 10:
                time.sleep(0.05)
            print(f"after the interval: {buf.size()} values buffered", flush=True)

            buf.insert_batch("otherkey", ["a", "b", "c"])
            print(f"sync_flush returned {buf.sync_flush()!r}", flush=True)
            info = buf.info()
            print(f"flushed {sum(p['flushed'] for p in info)} times over {len(info)} partitions")
            buf.stop()
    return 0


if __name__ == "__main__":
    import data_buffer_example  # this file as an importable module; see the docstring

    raise SystemExit(data_buffer_example.main())
