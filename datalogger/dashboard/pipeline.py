"""Pipeline health: ``stats()``, dead letters and the health rule, as rows to show.

:func:`pipeline_view` turns a node's ``stats()`` (the data behind ``datalogger
status`` and the Prometheus metrics) and its dead letters on disk into one row per
(topic, destination), each with a ``state``:

- ``"unhealthy"`` when :func:`datalogger.health.find_problems` names the pair (the
  rule behind ``datalogger health``: failing for longer than
  ``health_failing_after``, or dead letters on disk) -- shown red;
- ``"failing"`` while the destination fails but not yet for that long -- amber;
- ``"ok"`` otherwise.

:func:`render_narrow` prints the same rows as text for a narrow terminal or a
pipe (``datalogger status``). Nothing here needs the web extra.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..deadletters import DeadLetterSummary
from ..health import find_problems
from ..lane import COUNTER_NAMES

__all__ = ["CLIENT_KEYS", "LANE_NUMBERS", "OPTIONAL_LANE_KEYS", "per_topic", "pipeline_view", "render_narrow"]

#: Numbers of a lane, in the order they are shown; all from ``stats()``.
LANE_NUMBERS = (*COUNTER_NAMES, "buffered", "wal_only_rows", "wal_bytes", "logged_seq", "settled_seq")
#: Per-lane values some nodes report and others not (newer counters): shown when present.
OPTIONAL_LANE_KEYS = ("wal_corrupt_records",)
#: Keys of ``stats()["client"]`` (rows queued in this process by ``log_nowait``), shown when present.
CLIENT_KEYS = ("queued", "spooled", "sent", "dropped", "errors", "last_error")


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return value


def _lane(
    topic: str, destination: str, lane: Mapping[str, Any], now: float
) -> dict[str, Any]:
    row: dict[str, Any] = {"topic": topic, "destination": destination}
    for key in LANE_NUMBERS:
        row[key] = _number(lane.get(key))
    for key in OPTIONAL_LANE_KEYS:
        if key in lane:
            row[key] = _number(lane.get(key))
    logged, settled = lane.get("logged_seq"), lane.get("settled_seq")
    row["lag"] = (
        max(0, int(logged) - int(settled))
        if isinstance(logged, int) and isinstance(settled, int)
        else None
    )
    since = lane.get("failing_since")
    row["failing_for"] = None if since is None else max(0.0, now - float(since))
    row["last_error"] = lane.get("last_error")
    for key in ("latency_p50", "latency_p99", "last_success_at"):
        row[key] = lane.get(key)
    row["dead_letters"] = 0
    row["dead_letter_rows"] = 0
    row["problems"] = []
    row["state"] = "failing" if since is not None else "ok"
    return row


def per_topic(stats: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    """``stats()["topics"]``; when the node left per-topic detail out (more topics than
    ``stats()`` details by default), one row ``"(N topics)"`` with their sums per destination."""
    topics = stats.get("topics") or {}
    summary = stats.get("summary") or {}
    if not topics and summary.get("topics"):
        return {f"({summary['topics']} topics)": summary.get("destinations") or {}}
    return topics


def pipeline_view(
    stats: Mapping[str, Any],
    dead_letters: Iterable[DeadLetterSummary] | None,
    failing_after: float,
    now: float | None = None,
) -> dict[str, Any]:
    """The rows of the pipeline table, JSON-ready.

    Args:
        stats: a node's ``stats()``.
        dead_letters: ``DeadLetterStore.summary()`` of its data directory, or
            ``None`` when unknown (then not checked, and ``dead_letters_checked``
            is false).
        failing_after: the node's ``health_failing_after``.
        now: the current time (epoch seconds; default: now).

    Returns:
        ``{"lanes": [...], "client": {...} | None, "rejected": n, "problems": [...],
        "healthy": bool, "dead_letters_checked": bool}``; each lane holds the
        numbers of :data:`LANE_NUMBERS`, ``lag`` (``logged_seq - settled_seq``,
        chunks), the dead letters on disk, ``state`` and its ``problems``.
    """
    moment = time.time() if now is None else now
    summary = None if dead_letters is None else list(dead_letters)
    lanes: dict[tuple[str, str], dict[str, Any]] = {}
    for topic, destinations in sorted(per_topic(stats).items()):
        for destination, lane in sorted((destinations or {}).items()):
            lanes[(topic, destination)] = _lane(topic, destination, lane, moment)
    for item in summary or ():
        if item.letters <= 0:
            continue
        row = lanes.get((item.topic, item.destination))
        if row is None:  # dead letters of a topic not active since the node started
            row = _lane(item.topic, item.destination, {}, moment)
            lanes[(item.topic, item.destination)] = row
        row["dead_letters"] = item.letters
        row["dead_letter_rows"] = item.rows
    problems = find_problems(stats, summary, failing_after, moment)
    for problem in problems:
        row = lanes[(problem.topic, problem.destination)]
        row["problems"].append(problem.message)
        row["state"] = "unhealthy"
    messages = [p.message for p in problems]
    failing = [] if stats.get("topics") else list((stats.get("summary") or {}).get("failing") or ())
    if failing:  # summed rows only: the node names the topics failing now
        shown = ", ".join(failing[:10]) + (f" and {len(failing) - 10} more" if len(failing) > 10 else "")
        message = f"topics with a destination failing: {shown} (datalogger health names each)"
        messages.append(message)
        for (topic, _), row in lanes.items():
            if topic.startswith("(") and topic.endswith(" topics)"):
                row["problems"].append(message)
                row["state"] = "unhealthy"
    client = stats.get("client")
    return {
        "lanes": [lanes[key] for key in sorted(lanes)],
        "client": (
            {key: client[key] for key in CLIENT_KEYS if key in client}
            if isinstance(client, Mapping)
            else None
        ),
        "rejected": _number(stats.get("rejected")),
        "problems": messages,
        "healthy": not messages,
        "dead_letters_checked": summary is not None,
    }


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop always returns


def _pack(pairs: Iterable[str], width: int, indent: str) -> list[str]:
    lines: list[str] = []
    line = indent
    for pair in pairs:
        if line.strip() and len(line) + 2 + len(pair) > width:
            lines.append(line)
            line = indent
        line = f"{line}  {pair}" if line.strip() else f"{indent}{pair}"
    if line.strip():
        lines.append(line)
    return lines


def render_narrow(view: Mapping[str, Any], width: int = 80) -> str:
    """The pipeline rows as plain text lines no wider than ``width`` (at least 40).

    One heading per (topic, destination) with its state, then its numbers as
    ``name value`` pairs filling the lines, then its last error and problems.
    """
    width = max(40, int(width))
    out: list[str] = []
    for lane in view.get("lanes", ()):
        state = {"ok": "ok", "failing": "FAILING", "unhealthy": "UNHEALTHY"}[lane["state"]]
        if lane.get("failing_for") is not None:
            state += f" for {lane['failing_for']:.0f}s"
        out.append(f"{lane['topic']} -> {lane['destination']}  [{state}]")
        pairs = [f"{name.replace('_', ' ')} {lane[name]}" for name in COUNTER_NAMES]
        pairs.append(f"buffered {lane['buffered']}")
        if lane.get("lag") is not None:
            pairs.append(f"lag {lane['lag']}")
        pairs.append(f"wal {_size(lane['wal_bytes'])}")
        pairs.append(f"wal only {lane['wal_only_rows']} rows")
        for key in OPTIONAL_LANE_KEYS:
            if key in lane:
                pairs.append(f"{key.replace('_', ' ')} {lane[key]}")
        if lane.get("dead_letters"):
            pairs.append(f"dead letters on disk {lane['dead_letters']} ({lane['dead_letter_rows']} rows)")
        out.extend(_pack(pairs, width, "  "))
        for label, text in [("last error", lane.get("last_error"))] + [
            ("problem", p) for p in lane.get("problems", ())
        ]:
            if text:
                out.extend(
                    textwrap.wrap(
                        f"{label}: {text}", width, initial_indent="  ", subsequent_indent="    "
                    )
                )
    client = view.get("client")
    if client:
        out.append("client (log_nowait in this process)")
        pairs = [f"{k.replace('_', ' ')} {v}" for k, v in client.items() if v is not None]
        out.extend(_pack(pairs, width, "  "))
    out.append(f"rejected calls: {view.get('rejected', 0)}")
    return "\n".join(out)
