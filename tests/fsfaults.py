"""Real disk faults for tests: a small tmpfs (fills up), mounted read-only or read-write.

Mounting needs root (the tests run as root in CI); elsewhere the tests that need it
skip with the reason. Each mount is unmounted when its context ends.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["Tmpfs", "tmpfs"]


class Tmpfs:
    """A mounted tmpfs: make it read-only or writable again, fill it, empty it."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size

    def remount(self, *, writable: bool) -> None:
        """Switch between read-only and read-write, keeping the files."""
        mode = "rw" if writable else "ro"
        subprocess.run(
            ["mount", "-o", f"remount,{mode},size={self.size}", str(self.path)],
            check=True,
            capture_output=True,
        )

    def fill(self, leave: int = 0) -> Path:
        """Write a file that takes all the free space but ``leave`` bytes; return it."""
        ballast = self.path / "ballast"
        free = os.statvfs(self.path).f_bavail * os.statvfs(self.path).f_frsize
        with open(ballast, "ab") as handle:
            try:
                handle.write(b"\0" * max(0, free - leave))
            except OSError:
                pass
        return ballast


@contextmanager
def tmpfs(path: Path, size: str = "1m", *, read_only: bool = False) -> Iterator[Tmpfs]:
    """Mount a tmpfs of ``size`` on ``path`` (created), for the duration of the block."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield Tmpfs(path, size)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
