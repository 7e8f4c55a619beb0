"""TopicState without an actor system: a fake host records what it sends and schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datalogger.config import Config, load_config
from datalogger.core.topic_state import TopicState
from datalogger.messages import (
    AttemptFailed,
    ChunkSettled,
    DeliverChunk,
    DeliverChunks,
    ItemsProcessed,
    LogAccepted,
    LogRejected,
    ProcessStatusSync,
    TopicChunk,
    TopicTimer,
    WatermarksRequest,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeHost:
    """Stands in for the TopicSupervisor."""

    def __init__(self, process_status: Any = None) -> None:
        self.address = "supervisor"
        self.process_status = process_status
        self.root = None
        self.sent: list[tuple[Any, Any]] = []
        self.timers: list[tuple[float, TopicTimer]] = []
        self.tokens = 0
        self.done: list[tuple[str, int, str | None]] = []
        self.down: set[str] = set()

    def send(self, address: Any, message: Any) -> None:
        self.sent.append((address, message))

    def schedule(self, seconds: float, timer: TopicTimer) -> None:
        self.timers.append((seconds, timer))

    def worker(self, name: str, owner: str | None) -> Any:
        return None if name in self.down else f"worker-{name}"

    def token(self, topic: str) -> int:
        self.tokens += 1
        return self.tokens

    def report(self, items: Any) -> None:
        self.sent.append((self.process_status, ItemsProcessed(items)))

    def sync_status(self, topic: str, items: Any) -> int:
        token = self.token(topic)
        self.sent.append((self.process_status, ProcessStatusSync(items, token)))
        return token

    def flushed(self, topic: str, key: int, error: str | None) -> None:
        self.done.append((topic, key, error))

    def of(self, kind: type, to: Any = None) -> list[Any]:
        return [m for a, m in self.sent if isinstance(m, kind) and (to is None or a == to)]

    def fire(self, state: TopicState, kind: str) -> None:
        due = [t for _, t in self.timers if t.kind == kind and t.topic == state.topic]
        self.timers = [(s, t) for s, t in self.timers if t not in due]
        for timer in due:
            state.on_timer(timer.kind, timer.value)


def config(tmp_path: Path, **dest: Any) -> Config:
    return load_config(
        {
            "data_dir": str(tmp_path / "state"),
            "destinations": {"d": {"type": "jsonl", "directory": str(tmp_path / "out"), **dest}},
        }
    )


def started(tmp_path: Path, topic: str = "t", host: FakeHost | None = None, **dest: Any) -> Any:
    host = host or FakeHost()
    clock = FakeClock()
    state = TopicState(topic, config(tmp_path, **dest), host, clock=clock, wall_ns=lambda: 7)
    state.start()
    return state, host, clock


def chunk(topic: str, n: int, ref: int = 0) -> TopicChunk:
    return TopicChunk(topic, [{"n": i} for i in range(n)], "client", ref)


def settle(state: TopicState, *seqs: int, rows: int = 1) -> None:
    state.settled(ChunkSettled(state.topic, "d", seqs, rows, 0, 1, 0.01))


def test_a_chunk_is_logged_answered_then_handed_to_the_worker(tmp_path: Path) -> None:
    state, host, _ = started(tmp_path)
    state.chunk(chunk("t", 3, ref=9))
    (accepted,) = host.of(LogAccepted, to="client")
    assert (accepted.topic, accepted.seq, accepted.ref, accepted.route) == ("t", 1, 9, "supervisor")
    (deliver,) = host.of(DeliverChunk, to="worker-d")
    assert (deliver.topic, deliver.seq, len(deliver.rows)) == ("t", 1, 3)
    assert state.wal is not None and state.wal.last_seq == 1
    assert [i for i, _ in enumerate(host.sent) if isinstance(host.sent[i][1], LogAccepted)] == [0]


def test_chunks_logged_while_the_worker_is_busy_go_as_one_group_after_the_linger(
    tmp_path: Path,
) -> None:
    state, host, clock = started(tmp_path, linger=0.5)
    state.chunk(chunk("t", 1))
    state.chunk(chunk("t", 1))
    state.chunk(chunk("t", 1))
    assert [m.seq for m in host.of(DeliverChunk)] == [1]  # window of one group
    clock.now += 0.1
    settle(state, 1)
    assert host.of(DeliverChunks) == []  # lingers: the last hand-over was 0.1 s ago
    assert [t.kind for _, t in host.timers].count("linger") == 1
    clock.now += 0.4
    host.fire(state, "linger")
    (group,) = host.of(DeliverChunks)
    assert group.topic == "t" and [seq for seq, _ in group.chunks] == [2, 3]


def test_a_failed_attempt_frees_the_window_and_the_watermark_waits(tmp_path: Path) -> None:
    state, host, _ = started(tmp_path, linger=0)
    state.chunk(chunk("t", 1))
    state.chunk(chunk("t", 1))
    state.attempt_failed(AttemptFailed("t", "d", (1,), 1, "ConnectionError: down", 0.5))
    assert [m.seq for m in host.of(DeliverChunk)] == [1, 2]
    settle(state, 2)
    assert state.lanes["d"].watermark() == 0  # 1 is not settled yet
    settle(state, 1)
    assert state.lanes["d"].watermark() == 2
    assert state.stats()["d"]["retried"] == 1 and state.stats()["d"]["delivered"] == 2


def test_recovery_replays_what_process_status_says_is_unsettled_and_holds_new_chunks(
    tmp_path: Path,
) -> None:
    first, _, _ = started(tmp_path)
    for _ in range(3):
        first.chunk(chunk("t", 2))
    first.close()
    host = FakeHost(process_status="ps")
    state, host, _ = started(tmp_path, host=host)
    (ask,) = host.of(WatermarksRequest, to="ps")
    assert ask.entities == ("t/d",)
    state.chunk(chunk("t", 1, ref=5))  # held until the marks are known
    assert host.of(LogAccepted) == [] and host.of(DeliverChunk) == []
    state.watermarks({"t/d": 1})
    assert [m.seq for m in host.of(DeliverChunk)] == [2]
    assert host.of(LogAccepted)[0].seq == 4
    assert state.stats()["d"]["replayed"] == 4


def test_flush_waits_for_every_chunk_then_reports_the_status_first(tmp_path: Path) -> None:
    host = FakeHost(process_status="ps")
    state, host, _ = started(tmp_path, host=host)
    state.watermarks({})
    state.chunk(chunk("t", 1))
    state.flush(key=42)
    assert host.done == []
    settle(state, 1)
    (sync,) = [m for a, m in host.sent if type(m).__name__ == "ProcessStatusSync"]
    assert sync.items == (("t/d", 1),)
    assert host.done == []
    state.status_synced(sync.token, confirmed=True)
    assert host.done == [("t", 42, None)]


def test_a_topic_idle_and_settled_is_released_and_comes_back_with_its_numbers(tmp_path: Path) -> None:
    host = FakeHost(process_status="ps")
    state, host, clock = started(tmp_path, host=host)
    state.watermarks({})
    state.chunk(chunk("t", 1))
    clock.now += 700
    assert not state.idle(clock.now, 600)  # unsettled
    settle(state, 1)
    assert not state.idle(clock.now, 600)  # active just now
    clock.now += 600
    assert state.idle(clock.now, 600)
    counters = state.release()
    assert counters["d"]["delivered"] == 1 and state.wal is None
    assert host.of(ItemsProcessed)[-1].items == (("t/d", 1),)
    again = TopicState("t", state.config, host, clock=clock)
    again.restore_counters(counters)
    assert again.stats()["d"]["delivered"] == 1  # counting goes on too
    assert again.open_wal()
    again.recover(dict(state.reported))
    again.chunk(chunk("t", 1))
    assert [m.seq for m in host.of(DeliverChunk)] == [1, 2]  # numbering goes on


def test_two_topics_on_one_host_keep_their_own_numbers_and_order(tmp_path: Path) -> None:
    host = FakeHost()
    a, _, _ = started(tmp_path, "a", host=host, linger=0)
    b, _, _ = started(tmp_path, "b", host=host, linger=0)
    a.chunk(chunk("a", 1))
    b.chunk(chunk("b", 1))
    settle(a, 1)
    a.chunk(chunk("a", 1))
    assert [(m.topic, m.seq) for m in host.of(DeliverChunk)] == [("a", 1), ("b", 1), ("a", 2)]
    host.down.add("d")  # b's worker restarts: a is not touched
    b.chunk(chunk("b", 1))
    assert len(host.of(DeliverChunk)) == 3
    host.down.clear()
    settle(b, 1)
    assert [(m.topic, m.seq) for m in host.of(DeliverChunk)][-1] == ("b", 2)


def test_a_full_block_lane_refuses_the_caller_after_block_timeout(tmp_path: Path) -> None:
    state, host, _ = started(tmp_path, overflow="block", max_buffered_rows=2, block_timeout=3.0)
    state.chunk(chunk("t", 2, ref=1))
    state.chunk(chunk("t", 2, ref=2))
    assert [m.ref for m in host.of(LogAccepted)] == [1]
    assert (3.0, TopicTimer("t", "blocked", 1, state.epoch)) in host.timers
    host.fire(state, "blocked")
    (rejected,) = host.of(LogRejected)
    assert rejected.error == "Backpressure" and rejected.ref == 2


def test_a_log_that_cannot_open_refuses_and_tries_again_on_a_timer(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "wal").write_text("not a directory")
    state, host, _ = started(tmp_path)
    assert state.wal is None and state.wal_error
    assert [t.kind for _, t in host.timers] == ["wal-open"]
    state.flush(key=1)
    assert host.done and host.done[0][2]
    (tmp_path / "state" / "wal").unlink()
    host.fire(state, "wal-open")
    assert state.wal is not None
