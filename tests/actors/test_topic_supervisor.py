"""A TopicSupervisor hosting several topics, its handlers driven without an actor system."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from thespian.actors import ActorAddress, ActorExitRequest, WakeupMessage

from datalogger.actors import topic_supervisor
from datalogger.actors.topic_supervisor import TopicSupervisor
from datalogger.config import load_config
from datalogger.messages import (
    ChunkSettled,
    DeliverChunk,
    HostTopics,
    StartSupervisor,
    SupervisorIdle,
    SupervisorStay,
    SupervisorTimer,
    TopicChunk,
    TopicFlushed,
    TopicFlushRequest,
    TopicStatsReply,
    TopicStatsRequest,
    TopicTimer,
)
from tests.actors.harness import Harness


def supervisor(tmp_path: Path, shared: bool = False, **options: Any) -> Harness:
    config = load_config(
        {
            "data_dir": str(tmp_path / "data"),
            "destinations": {"f": {"type": "jsonl", "directory": str(tmp_path / "out"), "linger": 0}},
            **options,
        }
    )
    h = Harness(TopicSupervisor)
    h.deliver(StartSupervisor(config, None, None, shared, "test"), ActorAddress("root"))
    return h


def log(h: Harness, topic: str, n: int = 1) -> None:
    h.deliver(TopicChunk(topic, [{"n": n}], ActorAddress("client"), n), ActorAddress("root"))


def test_chunks_of_several_topics_go_to_one_worker_per_destination_with_their_topic(
    tmp_path: Path,
) -> None:
    h = supervisor(tmp_path)
    for topic in ("a", "b", "a"):
        log(h, topic)
    worker = h.created("DestinationWorker")
    assert len(worker) == 1
    assert [(m.topic, m.seq) for m in h.sent(DeliverChunk)] == [("a", 1), ("b", 1)]
    h.deliver(ChunkSettled("a", "f", (1,), 1, 0, 1, 0.0), worker[0])
    assert [(m.topic, m.seq) for m in h.sent(DeliverChunk)][-1] == ("a", 2)
    h.deliver(TopicStatsRequest(7, detail=True), ActorAddress("root"))
    (reply,) = h.sent(TopicStatsReply)
    assert set(reply.topics) == {"a", "b"} and reply.summary["destinations"]["f"]["delivered"] == 1


def test_a_flush_is_answered_once_for_all_topics_when_all_are_settled(tmp_path: Path) -> None:
    h = supervisor(tmp_path)
    log(h, "a")
    log(h, "b")
    h.deliver(TopicFlushRequest(3, False), ActorAddress("root"))
    assert h.sent(TopicFlushed) == []
    worker = h.created("DestinationWorker")[0]
    h.deliver(ChunkSettled("a", "f", (1,), 1, 0, 1, 0.0), worker)
    assert h.sent(TopicFlushed) == []
    h.deliver(ChunkSettled("b", "f", (1,), 1, 0, 1, 0.0), worker)
    assert h.sent(TopicFlushed) == [TopicFlushed(3, {})]


def test_log_files_beyond_the_limit_are_closed_least_recently_used_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(topic_supervisor, "MAX_OPEN_LOGS", 2)
    h = supervisor(tmp_path)
    h.deliver(HostTopics(("a", "b", "c")))
    for topic in ("a", "b", "c"):
        log(h, topic, 1)
    states = h.actor.states
    assert sorted(t for t, s in states.items() if s.wal.has_handle) == ["b", "c"]
    log(h, "a", 2)  # opens a's file again, closes the least recently used
    assert sorted(t for t, s in states.items() if s.wal.has_handle) == ["a", "c"]
    assert states["a"].wal.last_seq == 2
    assert [rows for _, rows in states["a"].wal.read_from(0)] == [[{"n": 1}], [{"n": 2}]]


def test_an_idle_dedicated_supervisor_releases_its_topic_and_asks_the_root_to_exit(
    tmp_path: Path,
) -> None:
    h = supervisor(tmp_path, idle_after=0.05)
    log(h, "a")
    worker = h.created("DestinationWorker")[0]
    time.sleep(0.1)
    h.deliver(WakeupMessage(timedelta(seconds=0), SupervisorTimer("idle")))
    assert "a" in h.actor.states and h.sent(SupervisorIdle) == []  # unsettled: kept
    h.deliver(ChunkSettled("a", "f", (1,), 1, 0, 1, 0.0), worker)
    time.sleep(0.1)
    h.deliver(WakeupMessage(timedelta(seconds=0), SupervisorTimer("idle")))
    assert h.actor.states == {}
    (idle,) = h.sent(SupervisorIdle)
    assert idle.received == 1 and idle.released["a"]["f"]["delivered"] == 1
    assert worker in h.sent_to(ActorExitRequest)
    h.deliver(SupervisorStay())  # the root forwarded a chunk meanwhile
    log(h, "a", 2)
    assert h.actor.states["a"].wal.last_seq == 2  # back, numbering where it stopped


def test_a_shared_supervisor_keeps_its_workers_and_takes_released_topics_back_directly(
    tmp_path: Path,
) -> None:
    h = supervisor(tmp_path, shared=True, idle_after=0.05)
    log(h, "a")
    worker = h.created("DestinationWorker")[0]
    h.deliver(ChunkSettled("a", "f", (1,), 1, 0, 1, 0.0), worker)
    time.sleep(0.1)
    h.deliver(WakeupMessage(timedelta(seconds=0), SupervisorTimer("idle")))
    assert h.actor.states == {} and h.sent(SupervisorIdle) == []
    assert worker not in h.sent_to(ActorExitRequest)
    log(h, "a", 2)
    state = h.actor.states["a"]
    assert state.wal.last_seq == 2 and state.stats()["f"]["delivered"] == 1


def test_a_released_topics_timers_do_not_reach_the_state_that_takes_it_back(tmp_path: Path) -> None:
    h = supervisor(tmp_path, shared=True, idle_after=0.05)
    log(h, "a")
    old = h.actor.states["a"]
    h.deliver(ChunkSettled("a", "f", (1,), 1, 0, 1, 0.0), h.created("DestinationWorker")[0])
    time.sleep(0.1)
    h.deliver(WakeupMessage(timedelta(seconds=0), SupervisorTimer("idle")))
    log(h, "a", 2)
    new = h.actor.states["a"]
    assert new is not old and new.epoch != old.epoch
    new.recovering = True  # as if it waited for ProcessStatus
    h.actor._topic_timer(TopicTimer("a", "recovery", 0, old.epoch))
    assert new.recovering  # the old state's timer was ignored
