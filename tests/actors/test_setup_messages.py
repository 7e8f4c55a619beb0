"""Each actor's setup message, fed twice and fed with a failing step.

Thespian delivers a message again after its handler raised, so a handler that
sets state and then fails part way would be seen again with that state half
made (a RootSupervisor once answered NodeReady on the retry of a ConfigureNode
whose ``os.makedirs`` had failed). Every setup handler must leave its actor as
it found it when a step fails, and a repeated setup message must change
nothing. :class:`tests.actors.harness.Harness` plays Thespian's part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from thespian.actors import ActorAddress, ActorExitRequest, WakeupMessage

from datalogger.actors import destination_worker
from datalogger.actors.buffer_actor import BufferActor
from datalogger.actors.cluster_registry import ClusterRegistry
from datalogger.actors.destination_worker import DestinationWorker
from datalogger.actors.process_status import ProcessStatus
from datalogger.actors.pubsub import PubSub
from datalogger.actors.root_supervisor import RootSupervisor
from datalogger.actors.topic_supervisor import TopicSupervisor
from datalogger.config import Config, load_config
from datalogger.messages import (
    BufferStart,
    BufferStarted,
    ConfigureNode,
    HostTopics,
    ItemsProcessed,
    LogRejected,
    MembershipRefused,
    NodeHeartbeat,
    NodeReady,
    NodeStartFailed,
    ProcessStatusStart,
    ProcessStatusStarted,
    PubSubStats,
    PubSubStatsReply,
    PubSubSubscribe,
    PubSubSubscribed,
    RegistryStart,
    StartSupervisor,
    StartWorker,
    TopicChunk,
    WatermarksReply,
    WatermarksRequest,
)
from tests.actors.harness import Harness
from tests.conftest import free_port


def node_config(tmp_path: Path, data_dir: Path | None = None) -> Config:
    return load_config(
        {
            "data_dir": str(data_dir or tmp_path / "data"),
            "destinations": {"f": {"type": "jsonl", "directory": str(tmp_path / "out")}},
        }
    )


def blocked_path(tmp_path: Path) -> Path:
    """A path under a regular file: nothing can be created there."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "data"


# --------------------------------------------------------------------------- RootSupervisor


def start_root(h: Harness, message: ConfigureNode) -> ActorAddress:
    """Take a root through its start; return the ProcessStatus it created."""
    h.deliver(message)
    status = h.created("ProcessStatus")[-1]
    h.deliver(ProcessStatusStarted(), status)
    h.deliver(WatermarksReply(-1, {}), status)
    return status


def test_root_configure_node_twice_starts_once(tmp_path: Path) -> None:
    h = Harness(RootSupervisor)
    message = ConfigureNode(node_config(tmp_path))
    h.deliver(message)
    h.deliver(message)  # while starting: no second ProcessStatus, no answer yet
    assert len(h.created("ProcessStatus")) == 1
    assert h.sent(NodeReady) == []
    status = h.created("ProcessStatus")[0]
    h.deliver(ProcessStatusStarted(), status)
    assert len(h.sent(WatermarksRequest, to=status)) == 1
    h.deliver(WatermarksReply(-1, {}), status)
    h.deliver(message)  # once ready: answered, nothing started again
    assert len(h.sent(NodeReady)) == 2
    assert len(h.created("ProcessStatus")) == 1
    assert h.poisoned == []


def test_root_configure_node_of_a_tcp_node_twice_starts_its_actors_once(tmp_path: Path) -> None:
    h = Harness(RootSupervisor)
    message = ConfigureNode(node_config(tmp_path), f"127.0.0.1:{free_port()}", None, ())
    h.deliver(message)
    h.deliver(message)
    assert [len(h.created(n)) for n in ("ProcessStatus", "PubSub", "ClusterRegistry")] == [1, 1, 1]
    assert len(h.sent(RegistryStart)) == 1


def test_root_data_dir_failure_leaves_it_unconfigured(tmp_path: Path) -> None:
    h = Harness(RootSupervisor)
    h.deliver(ConfigureNode(node_config(tmp_path, blocked_path(tmp_path))))
    (failed,) = h.sent(NodeStartFailed)
    assert "cannot be created: Not a directory" in failed.reason
    assert h.sent(NodeReady) == [] and h.ref.created == [] and h.actor.config is None
    start_root(h, ConfigureNode(node_config(tmp_path)))  # a good one afterwards works
    assert len(h.sent(NodeReady)) == 1


def test_root_adapter_failure_stops_what_started_and_leaves_it_unconfigured(tmp_path: Path) -> None:
    h = Harness(RootSupervisor)
    h.deliver(ConfigureNode(node_config(tmp_path), f"127.0.0.1:{free_port()}", None, ()))
    status = h.created("ProcessStatus")[0]
    h.deliver(ProcessStatusStarted("ConnectionError: refused"), status)
    (failed,) = h.sent(NodeStartFailed)
    assert "process-status adapter 'sqlite' did not start: ConnectionError: refused" in failed.reason
    stopped = h.sent_to(ActorExitRequest)
    for name in ("ProcessStatus", "PubSub", "ClusterRegistry"):
        assert h.created(name)[0] in stopped, f"{name} was left running"
    assert h.actor.config is None and h.actor.supervisors == {} and h.actor.process_status is None
    # a stale timer of the failed start is ignored; a new start works
    for payload in list(h.ref.timers):
        h.deliver(WakeupMessage(1, payload))
    assert h.poisoned == []
    start_root(h, ConfigureNode(node_config(tmp_path)))
    assert len(h.sent(NodeReady)) == 1


def test_root_create_failure_part_way_is_answered_and_undone(tmp_path: Path) -> None:
    h = Harness(RootSupervisor)
    h.ref.fail_create.add("PubSub")  # after ProcessStatus was created
    h.deliver(ConfigureNode(node_config(tmp_path), f"127.0.0.1:{free_port()}", None, ()))
    (failed,) = h.sent(NodeStartFailed)
    assert "cannot create PubSub" in failed.reason
    assert h.created("ProcessStatus")[0] in h.sent_to(ActorExitRequest)
    assert h.actor.config is None and h.poisoned == []


def test_root_refused_by_its_leader_says_so_in_stats_and_nodes(tmp_path: Path) -> None:
    from datalogger.messages import NodesReply, NodesRequest, StatsReply, StatsRequest

    h = Harness(RootSupervisor)
    start_root(h, ConfigureNode(node_config(tmp_path), "10.8.0.3:1900", "10.8.0.1:1900", ()))
    h.deliver(MembershipRefused("10.8.0.3:1900", "not in cluster.allowed_members of the leader"))
    h.deliver(StatsRequest(7))
    (stats,) = h.sent(StatsReply)
    assert stats.stats["cluster"]["refused"] == "not in cluster.allowed_members of the leader"
    h.deliver(NodesRequest(8))
    (nodes,) = h.sent(NodesReply)
    assert nodes.nodes[0]["node"] == "10.8.0.3:1900" and nodes.nodes[0]["state"] == "refused"


# --------------------------------------------------------------------------- ProcessStatus


def test_process_status_start_twice_keeps_its_adapter_and_cache() -> None:
    h = Harness(ProcessStatus)
    h.deliver(ProcessStatusStart("memory", {}))
    adapter = h.actor.adapter
    h.deliver(ItemsProcessed((("t/f", 5),)))
    h.deliver(ProcessStatusStart("memory", {}))
    assert h.actor.adapter is adapter and h.actor.cache == {"t/f": 5}
    assert [m.error for m in h.sent(ProcessStatusStarted)] == [None, None]


def test_process_status_adapter_failure_leaves_it_without_one_and_a_retry_works() -> None:
    pytest.importorskip("psycopg")
    h = Harness(ProcessStatus)
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    h.deliver(ProcessStatusStart("postgres", {"dsn": dead, "connect_timeout": 2}))
    (failed,) = h.sent(ProcessStatusStarted)
    assert failed.error is not None and "postgres" in failed.error
    assert h.actor.adapter is None and h.poisoned == []
    h.deliver(ItemsProcessed((("t/f", 3),)))  # kept until an adapter takes it
    h.deliver(ProcessStatusStart("memory", {}))
    assert h.sent(ProcessStatusStarted)[-1].error is None
    assert dict(h.actor.adapter.load()) == {"t/f": 3}


# --------------------------------------------------------------------------- TopicSupervisor


def test_topic_start_twice_starts_its_workers_once(tmp_path: Path) -> None:
    h = Harness(TopicSupervisor)
    message = StartSupervisor(node_config(tmp_path), None, None)
    h.deliver(message)
    h.deliver(HostTopics(("green",)))
    state = h.actor.states["green"]
    wal = state.wal
    h.deliver(message)
    h.deliver(HostTopics(("green",)))
    client = ActorAddress("client")
    h.deliver(TopicChunk("green", [{"id": 1}], client, 4))
    h.deliver(TopicChunk("green", [{"id": 2}], client, 5))
    assert len(h.created("DestinationWorker")) == 1 and len(h.sent(StartWorker)) == 1
    assert h.actor.states["green"] is state and state.wal is wal


def test_topic_whose_log_cannot_open_refuses_chunks_and_heals(tmp_path: Path) -> None:
    config = node_config(tmp_path)
    wal_dir = Path(config.data_dir) / "wal"
    wal_dir.parent.mkdir(parents=True)
    wal_dir.write_text("a file where the log's directory goes")
    h = Harness(TopicSupervisor)
    start = StartSupervisor(config, None, None)
    h.deliver(start)
    h.deliver(start)  # a second start (or Thespian's retry) changes nothing
    h.deliver(HostTopics(("green",)))
    state = h.actor.states["green"]
    assert state.wal is None and h.poisoned == []
    client = ActorAddress("client")
    h.deliver(TopicChunk("green", [{"id": 1}], client, 4))
    (rejected,) = h.sent(LogRejected, to=client)
    assert rejected.error == "StorageError" and rejected.ref == 4
    assert str(wal_dir) in rejected.message
    wal_dir.unlink()
    h.deliver(TopicChunk("green", [{"id": 2}], client, 5))  # the next chunk opens the log
    assert state.wal is not None and len(h.created("DestinationWorker")) == 1
    assert h.sent(LogRejected, to=client) == [rejected]


# --------------------------------------------------------------------------- DestinationWorker


def worker_spec(tmp_path: Path) -> Any:
    return node_config(tmp_path).destinations[0]


def test_worker_start_twice_takes_the_first_and_one_timer(tmp_path: Path) -> None:
    h = Harness(DestinationWorker)
    message = StartWorker(worker_spec(tmp_path), str(tmp_path / "data"))
    h.deliver(message)
    host = h.actor.host
    h.deliver(message)
    assert h.actor.host is host
    assert len([t for t in h.ref.timers if t[0] == "parent"]) == 1


def test_worker_failing_start_exits_to_be_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise ValueError("bad retry settings")

    monkeypatch.setattr(destination_worker, "RetryPolicy", broken)
    h = Harness(DestinationWorker)
    message = StartWorker(worker_spec(tmp_path), str(tmp_path / "data"))
    h.deliver(message)
    assert h.actor.spec is None and h.actor.host is None
    assert h.ref.address in h.sent_to(ActorExitRequest) and h.poisoned == []
    monkeypatch.undo()
    h.deliver(message)
    assert h.actor.spec is not None


# --------------------------------------------------------------------------- BufferActor


def test_buffer_start_twice_keeps_the_partition(tmp_path: Path) -> None:
    from tests.actors.buffers_for_tests import RecordingBuffer

    h = Harness(BufferActor)
    state = RecordingBuffer(tmp_path).__getstate__()
    message = BufferStart("tests.actors.buffers_for_tests:RecordingBuffer", state, 0, 2, 1)
    h.deliver(message)
    partition = h.actor.partition
    h.deliver(message)
    assert h.actor.partition is partition
    assert [m.error for m in h.sent(BufferStarted)] == [None, None]


def test_buffer_start_that_fails_leaves_no_partition(tmp_path: Path) -> None:
    h = Harness(BufferActor)
    h.deliver(BufferStart("tests.actors.buffers_for_tests:NoSuchBuffer", {}, 0, 1, 1))
    (failed,) = h.sent(BufferStarted)
    assert failed.error is not None and h.actor.partition is None and h.poisoned == []


# --------------------------------------------------------------------------- ClusterRegistry


def test_registry_start_twice_checks_on_one_timer() -> None:
    h = Harness(ClusterRegistry)
    h.deliver(RegistryStart(3.0, "10.8.0.1:1900", ("10.8.0.2",)))
    h.deliver(RegistryStart(3.0, "10.8.0.1:1900", ("10.8.0.2",)))
    assert len(h.ref.timers) == 1


def test_registry_admits_its_own_node_and_refuses_a_stranger_with_the_reason() -> None:
    h = Harness(ClusterRegistry)
    h.deliver(RegistryStart(3.0, "10.8.0.1:1900", ("10.8.0.2",)))
    own, member, stranger = ActorAddress("own"), ActorAddress("member"), ActorAddress("stranger")
    h.deliver(NodeHeartbeat("10.8.0.1:1900", own, (), {}))
    h.deliver(NodeHeartbeat("10.8.0.2:1900", member, (), {}))
    h.deliver(NodeHeartbeat("10.8.0.3:1900", stranger, (), {}))
    assert set(h.actor.members) == {"10.8.0.1:1900", "10.8.0.2:1900"}
    (refused,) = h.sent(MembershipRefused, to=stranger)
    assert "not in cluster.allowed_members of the leader 10.8.0.1:1900" in refused.reason
    assert h.sent(MembershipRefused, to=own) == []


# --------------------------------------------------------------------------- PubSub


def test_pubsub_subscribe_twice_is_one_subscriber_and_a_bad_one_changes_nothing() -> None:
    h = Harness(PubSub)
    watcher = ActorAddress("watcher")
    h.deliver(PubSubSubscribe("requests", watcher, 10), watcher)
    h.deliver(PubSubSubscribe("requests", watcher, 20), watcher)
    h.deliver(PubSubSubscribe("bad topic!", watcher, 20), watcher)
    assert len(h.sent(PubSubSubscribed, to=watcher)) == 2
    h.deliver(PubSubStats(), watcher)
    (stats,) = h.sent(PubSubStatsReply)
    subscribers = stats.stats["subscribers"]
    assert len(subscribers) == 1 and subscribers[0]["max_pending"] == 20
