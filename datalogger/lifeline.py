"""A node's tie to the process that started it.

Thespian detaches a node's admin and actor processes into a session of their
own, so nothing stops them when the process that started the node (``datalogger
run``, or an application calling ``datalogger.start()``) is killed with
SIGKILL: they would keep the admin port, and the next start on it would fail.
The RootSupervisor therefore watches its starter (:func:`alive`) and, when it is
gone, stops the node's whole process group (:func:`stop_node_processes`).

A process is known by its pid and its start time (``/proc/<pid>/stat``), so a
new process that happens to get the same pid is not taken for the starter.
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["alive", "group_of", "identity", "stop_node_processes"]


def _start_time(pid: int) -> float | None:
    """The start time of ``pid`` in clock ticks since boot, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat.rsplit(b")", 1)[-1].split()
    try:
        return float(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def identity(pid: int | None = None) -> tuple[int, float | None]:
    """``(pid, start time)`` of this process (or of ``pid``)."""
    pid = os.getpid() if pid is None else pid
    return pid, _start_time(pid)


def alive(who: tuple[int, float | None]) -> bool:
    """True while the process ``who`` (from :func:`identity`) runs."""
    pid, started = who
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if started is None:
        return True
    now = _start_time(pid)
    return now is None or now == started


def group_of(pid: int) -> int | None:
    """The process group of ``pid``, or None when it is gone."""
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def stop_node_processes(starter_group: int | None, grace: float = 2.0) -> None:
    """Stop every process of this node's process group: SIGTERM, then SIGKILL after ``grace`` s.

    Called from an actor of the node. When the node's group is its starter's
    (``starter_group``: the node was not detached), no group is signalled; only
    this process is told to stop.
    """
    group = os.getpgrp()
    if starter_group is None or group == starter_group:
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if os.fork() == 0:  # a watchdog for processes that do not exit on SIGTERM
        try:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(grace)
            os.killpg(group, signal.SIGKILL)
        finally:
            os._exit(0)
    os.killpg(group, signal.SIGTERM)
