"""What a node checks before it starts, and the clean-up of a start that failed.

A node that cannot work must say so at once, not report itself running: the
checks here run in the process that starts it, before any actor process
exists (:func:`check_data_dir`, :func:`datalogger._thespian.check_port_free`),
and the RootSupervisor checks the data directory again and waits for its
process-status adapter before it answers ``NodeReady``.

Thespian's admin and actor processes detach into their own session, so a
start that fails half way would leave them running. :func:`reap_on_failure`
stops every process the failed start created.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from .exceptions import DataLoggerError

__all__ = ["check_data_dir", "reap_on_failure"]

REAP_GRACE = 5.0
"""Seconds the processes of a failed start get to exit on their own before they are killed."""


def check_data_dir(path: str) -> None:
    """Make sure ``path`` exists (creating it) and takes a synced file.

    Raises:
        DataLoggerError: naming the directory and the reason (a file in the
            way, a read-only file system, no permission, a full disk).
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise DataLoggerError(f"data_dir {path} cannot be created: {exc.strerror or exc}") from exc
    if not os.path.isdir(path):
        raise DataLoggerError(f"data_dir {path} is not a directory")
    probe = os.path.join(path, f".datalogger-probe-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"datalogger")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(probe)
        raise DataLoggerError(f"data_dir {path} is not writable: {exc.strerror or exc}") from exc


def _descendants() -> dict[int, object]:
    import psutil

    try:
        return {p.pid: p for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return {}


def reap(before: set[int], grace: float = REAP_GRACE) -> int:
    """Stop the descendants of this process not in ``before``; return how many there were.

    They get ``grace`` seconds to exit (an actor system asked to shut down
    does), then are killed. Exited children are reaped, so none is left as a
    zombie either.
    """
    import psutil

    new = [p for pid, p in _descendants().items() if pid not in before]
    if not new:
        return 0
    _, alive = psutil.wait_procs(new, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5.0)
    return len(new)


@contextlib.contextmanager
def reap_on_failure(grace: float = REAP_GRACE) -> Iterator[None]:
    """Within the block, a raised exception stops the processes the block started.

    Meant for starting an actor system in a process that starts nothing else
    at the same time (``datalogger run``, a program's ``start()``): a process
    another thread starts meanwhile would be stopped as well.
    """
    before = set(_descendants())
    try:
        yield
    except BaseException:
        reap(before, grace)
        raise
