"""Helpers shared by the benchmarks: sizes, alternating rounds, memory, targets, results.

Every case module exposes ``run(mode: Mode) -> Result``; ``python -m bench``
prints the result and writes it as JSON (see :func:`write_result`).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs
import psutil

RESULTS = Path(__file__).resolve().parent / "results"
POSTGRES_DSN = os.environ.get(
    "DATALOGGER_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
INFLUX_HOST = os.environ.get("DATALOGGER_TEST_INFLUXDB_HOST", "127.0.0.1")
INFLUX_PORT = int(os.environ.get("DATALOGGER_TEST_INFLUXDB_HTTP_PORT", "18086"))
MB = 1024.0 * 1024.0

#: Metrics of one variant in one round: name -> number.
Metrics = dict[str, float]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def utc_stamp() -> str:
    """The current UTC time as ``YYYYmmddTHHMMSSZ``."""
    now = datetime.now(timezone.utc)  # noqa: UP017 - keeps Python 3.10 support
    return now.strftime("%Y%m%dT%H%M%SZ")


@attrs.frozen
class Mode:
    """How big a run is: ``full``, ``quick`` (under a minute per case) or ``smoke`` (tests)."""

    name: str = "full"
    """``full``, ``quick`` or ``smoke``."""
    rounds: int | None = None
    """Rounds asked for on the command line; None: the case's default for the mode."""

    def pick(self, full: Any, quick: Any, smoke: Any) -> Any:
        """The value for this mode."""
        return {"full": full, "quick": quick, "smoke": smoke}[self.name]

    def rounds_or(self, full: int, quick: int, smoke: int = 1) -> int:
        """Rounds to run: the command line's, else the mode's default."""
        return self.rounds or int(self.pick(full, quick, smoke))


@attrs.frozen
class Target:
    """A goal from the issue, checked against a measured figure."""

    name: str
    """What is compared, e.g. ``ours/baseline rows/s``."""
    value: float
    """The measured figure."""
    op: str
    """``>=`` or ``<=``."""
    limit: float
    """The goal."""

    @property
    def passed(self) -> bool:
        """True when the figure meets the goal."""
        return self.value >= self.limit if self.op == ">=" else self.value <= self.limit

    @property
    def margin(self) -> float:
        """How far past (> 0) or short of (< 0) the goal, as a fraction of it."""
        if not self.limit:
            return 0.0
        diff = (self.value - self.limit) if self.op == ">=" else (self.limit - self.value)
        return diff / self.limit

    def line(self) -> str:
        """``name: value (target op limit) PASS/MISS by x%``."""
        verdict = "PASS" if self.passed else "MISS"
        if not self.limit:  # a count that must stay 0: the margin is the count itself
            return f"target {self.name}: {self.value:,.0f} (target {self.op} 0) {verdict}" + (
                "" if self.passed else f" by {abs(self.value):,.0f}"
            )
        return (
            f"target {self.name}: {self.value:.3g} (target {self.op} {self.limit:g}) "
            f"{verdict} by {abs(self.margin) * 100:.0f}%"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {**attrs.asdict(self), "passed": self.passed, "margin": self.margin}


@attrs.define
class Result:
    """What one case measured."""

    case: str
    """The case name (``postgres``, ``latency``...)."""
    mode: str
    """``full``, ``quick`` or ``smoke``."""
    params: dict[str, Any]
    """Sizes and settings."""
    per_round: dict[str, list[Metrics]] = attrs.field(factory=dict)
    """Variant -> one metrics dict per round."""
    medians: dict[str, Metrics] = attrs.field(factory=dict)
    """Variant -> median over rounds of each metric."""
    ratios: dict[str, float] = attrs.field(factory=dict)
    """Named ratios of medians (ours / baseline)."""
    targets: list[Target] = attrs.field(factory=list)
    """Goals checked."""
    memory: dict[str, Any] = attrs.field(factory=dict)
    """Peak RSS (MB) per variant: ``node`` (our node's processes) and ``caller``."""
    verified: dict[str, Any] = attrs.field(factory=dict)
    """Rows counted in the destinations after the runs."""
    notes: list[str] = attrs.field(factory=list)
    """Caveats printed with the figures."""
    extra: dict[str, Any] = attrs.field(factory=dict)
    """Anything else worth keeping (series, profiles...)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON form, with the machine and the time."""
        data = attrs.asdict(self, recurse=False)
        data["targets"] = [t.as_dict() for t in self.targets]
        data["machine"] = machine_info()
        data["when"] = utc_stamp()
        return data


def medians_of(per_round: Mapping[str, list[Metrics]]) -> dict[str, Metrics]:
    """Median of every metric over the rounds, per variant."""
    out: dict[str, Metrics] = {}
    for name, rounds in per_round.items():
        keys = rounds[0].keys() if rounds else ()
        out[name] = {k: statistics.median(r[k] for r in rounds) for k in keys}
    return out


class RssSampler:
    """Samples, in a thread, the RSS of this process and of our node's processes.

    A ``multiprocTCPBase`` admin detaches from the benchmark process (it is not
    a child), so the node is found by its admin port: :meth:`watch` looks up the
    process listening there and from then on every process of its process
    group (the admin and all actors) is summed. ``phase`` labels the samples so
    each variant gets its own peaks.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.phase = "idle"
        self.series: list[tuple[float, str, float, float, int, float]] = []
        """(seconds, phase, node RSS MB, caller RSS MB, node processes, node PSS MB)."""
        self._groups: set[int] = set()
        self._me = psutil.Process(os.getpid())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._started = time.monotonic()

    def watch(self, admin_port: int) -> None:
        """Count the processes of the node whose admin listens on ``admin_port``."""
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr[1] == admin_port:
                if conn.pid:
                    self._groups.add(os.getpgid(conn.pid))
                return

    def sample(self) -> tuple[float, float, int, float]:
        """(node RSS MB, caller RSS MB, node processes, node PSS MB) now.

        RSS counts the pages forked processes share once per process; PSS
        splits them among the sharers, so the PSS sum is the memory really used.
        """
        node = procs = pss = 0
        if self._groups:
            for proc in psutil.process_iter():
                try:
                    if os.getpgid(proc.pid) in self._groups and proc.pid != self._me.pid:
                        info = proc.memory_full_info()
                        node += info.rss
                        pss += getattr(info, "pss", info.rss)
                        procs += 1
                except (psutil.Error, OSError):
                    continue
        return node / MB, self._me.memory_info().rss / MB, procs, pss / MB

    def _run(self) -> None:
        while not self._stop.is_set():
            self._record()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @contextmanager
    def labelled(self, phase: str) -> Iterator[None]:
        """Label samples taken inside the block with ``phase``."""
        before, self.phase = self.phase, phase
        self._record()
        try:
            yield
        finally:
            self._record()
            self.phase = before

    def _record(self) -> None:
        node, caller, procs, pss = self.sample()
        self.series.append(
            (time.monotonic() - self._started, self.phase, node, caller, procs, pss)
        )

    def peaks(self) -> dict[str, dict[str, float]]:
        """Phase -> peak MB of ``node`` RSS, ``node_pss``, ``caller`` RSS; most ``node_procs``."""
        out: dict[str, dict[str, float]] = {}
        for _, phase, node, caller, procs, pss in self.series:
            peak = out.setdefault(
                phase, {"node": 0.0, "node_pss": 0.0, "caller": 0.0, "node_procs": 0}
            )
            peak["node"] = max(peak["node"], round(node, 1))
            peak["node_pss"] = max(peak["node_pss"], round(pss, 1))
            peak["caller"] = max(peak["caller"], round(caller, 1))
            peak["node_procs"] = max(peak["node_procs"], procs)
        out.pop("idle", None)
        return out


def alternate(
    rounds: int,
    variants: Mapping[str, Callable[[int], Metrics]],
    sampler: RssSampler | None = None,
) -> dict[str, list[Metrics]]:
    """Run every variant once per round, rotating the order each round.

    Drift in the machine's speed then hits all variants alike. Each callable
    gets the round number and returns its metrics for that round.
    """
    names = list(variants)
    per_round: dict[str, list[Metrics]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            if sampler is not None:
                with sampler.labelled(name):
                    per_round[name].append(variants[name](r))
            else:
                per_round[name].append(variants[name](r))
    return per_round


def ratio(a: float, b: float) -> float:
    """``a / b``, 0 when ``b`` is 0."""
    return a / b if b else 0.0


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout``; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def machine_info() -> dict[str, Any]:
    """CPU, memory, Python and server versions of this machine."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def report(result: Result) -> str:
    """The result as printable text: medians per variant, ratios, memory, targets."""
    lines = [f"== {result.case} ({result.mode}) {json.dumps(result.params, default=str)}"]
    for name, med in result.medians.items():
        rounds = len(result.per_round.get(name, []))
        figures = "  ".join(f"{k}={_fmt(v)}" for k, v in med.items())
        lines.append(f"  {name:<22} median of {rounds}: {figures}")
    for name, value in result.ratios.items():
        lines.append(f"  ratio {name}: {value:.3f}")
    for name, peaks in result.memory.items():
        lines.append(f"  peak RSS {name}: {json.dumps(peaks)}")
    lines.extend(f"  verified: {k} = {v}" for k, v in result.verified.items())
    lines.extend(f"  note: {note}" for note in result.notes)
    lines.extend(f"  {t.line()}" for t in result.targets)
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def write_result(result: Result, path: str | os.PathLike[str] | None = None) -> Path:
    """Write the result as JSON to ``path`` or ``bench/results/<case>-<timestamp>.json``."""
    if path is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        target = RESULTS / f"{result.case}-{utc_stamp()}.json"
    else:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result.as_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    return target


class CountMismatch(AssertionError):
    """The destination does not hold every row that was logged."""


def check_count(what: str, expected: int, found: int) -> int:
    """Raise :class:`CountMismatch` unless ``found == expected``; return ``found``."""
    if found != expected:
        raise CountMismatch(f"{what}: expected {expected} rows, found {found}")
    return found
