"""Unit tests of the DataBuffer plain logic: settings, key placement, and Partition.

No actor system here: a Partition is driven directly, its timers fired by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from datalogger.buffer import DataBuffer, buffer_class_path
from datalogger.buffer_partition import Partition, as_rows, partition_for, safe_key_name
from datalogger.config import RetrySettings
from datalogger.deadletters import DeadLetterStore
from datalogger.exceptions import ConfigError, InvalidInput, NotRunning, PermanentError
from datalogger.messages import BufferSyncFlushed
from datalogger.validation import validate_topic

NO_JITTER = {"initial_delay": 0.5, "multiplier": 2.0, "jitter": 0.0, "max_attempts": 3}


class MemoryBuffer(DataBuffer):
    """Keeps flushes in memory; fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0, **settings: Any) -> None:
        super().__init__(**settings)
        self.failures = failures
        self.flushes: list[tuple[Any, list[Any], Any]] = []
        self.errors: list[tuple[Any, list[Any], Any]] = []

    def handle_flush(self, key: Any, data: list[Any], meta: Any = None) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("down")
        self.flushes.append((key, data, meta))
        return f"{key}:{len(data)}"

    def handle_error(self, key: Any, data: list[Any], meta: Any = None) -> None:
        self.errors.append((key, data, meta))


class Harness:
    """A Partition with a hand-driven clock: ``timers`` holds (delay, payload)."""

    def __init__(self, buffer: DataBuffer) -> None:
        self.timers: list[tuple[float, Any]] = []
        self.sent: list[tuple[Any, Any]] = []
        self.partition = Partition(
            buffer,
            0,
            lambda delay, payload: self.timers.append((delay, payload)),
            lambda to, message: self.sent.append((to, message)),
        )

    def fire(self, index: int = 0) -> None:
        """Let timer ``index`` go off."""
        _, payload = self.timers.pop(index)
        self.partition.on_timer(payload)

    def retries(self) -> list[float]:
        """The delays of the retry timers pending."""
        return [delay for delay, payload in self.timers if payload[0] == "retry"]

    def fire_retry(self) -> None:
        """Let the first retry timer go off."""
        self.fire(next(i for i, (_, payload) in enumerate(self.timers) if payload[0] == "retry"))


# --------------------------------------------------------------------------- settings


def test_class_attributes_are_defaults_and_constructor_overrides() -> None:
    class Tuned(DataBuffer):
        partitions = 4
        interval = 10.0

    tuned = Tuned()
    assert (tuned.partitions, tuned.interval, tuned.max_size) == (4, 10.0, 5000)
    other = Tuned(partitions=2, interval=0.25, max_size=10, flush_timeout=None, flush_meta={"a": 1})
    assert (other.partitions, other.interval, other.max_size) == (2, 0.25, 10)
    assert other.flush_timeout is None and other.flush_meta == {"a": 1}
    assert isinstance(other.retry, RetrySettings)


def test_retry_from_dict_or_settings() -> None:
    assert DataBuffer(retry={"max_attempts": 2}).retry == RetrySettings(max_attempts=2)
    settings = RetrySettings(initial_delay=0.1)
    assert DataBuffer(retry=settings).retry is settings
    with pytest.raises(ConfigError, match="max_attempts"):
        DataBuffer(retry={"max_attempt": 2})


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("partitions", 0),
        ("partitions", 1.5),
        ("interval", 0),
        ("interval", "1"),
        ("jitter", -1),
        ("max_size", 0),
        ("flush_timeout", -1),
        ("partitions", True),
    ],
)
def test_bad_settings_are_config_errors(option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=option):
        DataBuffer(**{option: value})


def test_dead_letter_dir_is_made_absolute(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    assert DataBuffer(dead_letter_dir="dl").dead_letter_dir == os.path.join(tmp_path, "dl")


def test_calls_before_start_raise_not_running() -> None:
    buf = MemoryBuffer()
    with pytest.raises(NotRunning):
        buf.insert("k", 1)
    with pytest.raises(NotRunning):
        buf.sync_flush()
    buf.stop()  # not started: nothing to do


def test_state_sent_to_actors_leaves_runtime_out() -> None:
    state = MemoryBuffer(failures=2, interval=3.0).__getstate__()
    assert state["failures"] == 2 and state["interval"] == 3.0
    assert not {"_system", "_addresses", "_lock", "_in_process"} & set(state)


def test_start_rejects_what_is_not_a_system() -> None:
    with pytest.raises(InvalidInput):
        MemoryBuffer().start(object())


# --------------------------------------------------------------------------- keys


def test_partition_for_is_stable_across_processes() -> None:
    keys = ["mykey", ("user", 42), 7, b"raw"]
    here = [partition_for(key, 8) for key in keys]
    code = (
        "from datalogger.buffer_partition import partition_for;"
        "print([partition_for(k, 8) for k in ['mykey', ('user', 42), 7, b'raw']])"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == str(here)


def test_partition_for_spreads_keys() -> None:
    placed = [partition_for(f"key-{n}", 4) for n in range(100)]
    assert set(placed) == {0, 1, 2, 3}
    assert all(placed.count(p) > 10 for p in range(4))


def test_safe_key_name() -> None:
    assert safe_key_name("mykey") == "mykey"
    names = {safe_key_name(key) for key in ["a/b", "a_b", "a b", ("a", "b"), "..", "", 1, "1"]}
    assert len(names) == 8
    for name in names:
        assert validate_topic(name) == name
    assert "/" not in safe_key_name("../../etc/passwd")


def test_buffer_class_path() -> None:
    assert buffer_class_path(MemoryBuffer) == f"{__name__}:MemoryBuffer"

    class Local(DataBuffer):
        pass

    with pytest.raises(ConfigError, match="inside a function"):
        buffer_class_path(Local, in_process=True)
    Main = type("Main", (DataBuffer,), {"__module__": "__main__"})
    with pytest.raises(ConfigError, match="__main__"):
        buffer_class_path(Main)
    assert buffer_class_path(Main, in_process=True) == "__main__:Main"


def test_as_rows() -> None:
    assert as_rows([{"a": 1}, {"b": 2}]) == [{"a": 1}, {"b": 2}]
    assert as_rows(["x", {"a": 1}]) == [{"value": "x"}, {"value": {"a": 1}}]


# --------------------------------------------------------------------------- Partition


def test_interval_timer_flushes_in_insert_order() -> None:
    buf = MemoryBuffer(interval=10.0, flush_meta="meta")
    h = Harness(buf)
    h.partition.insert("k", ["v1"])
    h.partition.insert("k", ["v2", "v3"])
    assert [delay for delay, _ in h.timers] == [10.0]  # one timer, from the first insert
    assert buf.flushes == [] and h.partition.size("k") == 3
    h.fire()
    assert buf.flushes == [("k", ["v1", "v2", "v3"], "meta")]
    assert h.partition.size() == 0 and h.partition.dump() == {}


def test_jitter_is_added_to_the_interval() -> None:
    h = Harness(MemoryBuffer(interval=1.0, jitter=0.5))
    for n in range(20):
        h.partition.insert(n, ["v"])
    assert all(1.0 <= delay <= 1.5 for delay, _ in h.timers)
    assert len({delay for delay, _ in h.timers}) > 1


def test_max_size_flushes_at_once_and_splits_big_batches() -> None:
    buf = MemoryBuffer(max_size=3)
    h = Harness(buf)
    h.partition.insert("k", [1, 2])
    h.partition.insert("k", [3])
    assert buf.flushes == [("k", [1, 2, 3], None)]
    h.partition.insert("k", list(range(10, 18)))
    assert [data for _, data, _ in buf.flushes[1:]] == [[10, 11, 12], [13, 14, 15]]
    assert h.partition.dump() == {"k": [16, 17]}


def test_stale_timer_after_size_flush_is_ignored() -> None:
    buf = MemoryBuffer(max_size=2)
    h = Harness(buf)
    h.partition.insert("k", [1])
    h.partition.insert("k", [2])  # size flush; the first timer is now stale
    h.partition.insert("k", [3])  # a new timer
    assert len(h.timers) == 2
    h.fire(0)
    assert h.partition.dump() == {"k": [3]} and len(buf.flushes) == 1
    h.fire(0)
    assert buf.flushes[-1] == ("k", [3], None)


def test_empty_buffer_schedules_nothing_and_flush_of_nothing_is_harmless() -> None:
    h = Harness(MemoryBuffer())
    h.partition.insert("k", [])
    h.partition.flush()
    assert h.timers == [] and h.partition.info()["keys"] == []


def test_flush_request_flushes_now_and_makes_the_timer_stale() -> None:
    buf = MemoryBuffer()
    h = Harness(buf)
    h.partition.insert("a", [1])
    h.partition.insert("b", [2])
    h.partition.flush("a")
    assert buf.flushes == [("a", [1], None)]
    h.partition.flush()
    assert buf.flushes[-1] == ("b", [2], None)
    for _ in range(2):
        h.fire()
    assert len(buf.flushes) == 2


def test_retry_then_success_flushes_exactly_once() -> None:
    buf = MemoryBuffer(failures=2, retry=NO_JITTER)
    h = Harness(buf)
    h.partition.insert("k", [1, 2])
    h.fire()  # interval: attempt 1 fails
    assert [delay for delay, _ in h.timers] == [0.5]
    h.fire()  # attempt 2 fails
    assert [delay for delay, _ in h.timers] == [1.0]
    assert h.partition.dump() == {"k": [1, 2]}
    h.fire()  # attempt 3 succeeds
    assert buf.flushes == [("k", [1, 2], None)]
    info = h.partition.info()
    assert (info["errors"], info["retried"], info["flushed"], info["failed"]) == (2, 2, 1, 0)


def test_later_data_of_a_retrying_key_waits_its_turn_other_keys_flow() -> None:
    buf = MemoryBuffer(failures=1, retry=NO_JITTER)
    h = Harness(buf)
    h.partition.insert("k", [1])
    h.partition.flush("k")  # fails: retry pending
    h.partition.insert("k", [2])
    h.partition.flush("k")  # queued behind [1]
    h.partition.insert("other", ["x"])
    h.partition.flush("other")
    assert buf.flushes == [("other", ["x"], None)]
    assert h.partition.dump() == {"k": [1, 2]}
    h.fire_retry()
    assert buf.flushes[1:] == [("k", [1], None), ("k", [2], None)]


def test_exhausted_retries_call_handle_error_and_write_dead_letter(tmp_path: Any) -> None:
    buf = MemoryBuffer(failures=99, retry=NO_JITTER, dead_letter_dir=tmp_path, flush_meta="m")
    h = Harness(buf)
    h.partition.insert("user/1", ["a", "b"])
    h.partition.flush()
    h.fire_retry()
    h.fire_retry()  # third attempt: max_attempts reached
    assert h.retries() == []
    assert buf.errors == [("user/1", ["a", "b"], "m")]
    (letter,) = DeadLetterStore(tmp_path).letters()
    assert letter.destination == "MemoryBuffer" and letter.topic == safe_key_name("user/1")
    assert letter.rows == [{"value": "a"}, {"value": "b"}] and letter.attempts == 3
    assert "ConnectionError" in letter.reason
    info = h.partition.info()
    assert (info["failed"], info["failed_values"], info["dead_lettered"], info["lost"]) == (
        1,
        2,
        2,
        0,
    )
    assert h.partition.size() == 0


def test_permanent_error_is_not_retried_and_unpicklable_values_are_dead_lettered(
    tmp_path: Any,
) -> None:
    class Refusing(MemoryBuffer):
        def handle_flush(self, key: Any, data: list[Any], meta: Any = None) -> Any:
            raise PermanentError("never")

    buf = Refusing(dead_letter_dir=tmp_path)
    h = Harness(buf)
    h.partition.insert("k", [object()])
    h.partition.flush()
    (letter,) = DeadLetterStore(tmp_path).letters()
    assert letter.rows[0]["value"].startswith("<object object")
    assert len(buf.errors) == 1 and h.retries() == []


def test_a_permanent_error_gives_up_only_the_values_that_fail_alone(tmp_path: Any) -> None:
    class Picky(MemoryBuffer):
        def handle_flush(self, key: Any, data: list[Any], meta: Any = None) -> Any:
            bad = [value for value in data if value % 7 == 3]
            if bad:
                raise PermanentError(f"{bad[0]} is refused")
            return super().handle_flush(key, data, meta)

    buf = Picky(dead_letter_dir=tmp_path, max_size=1000)
    h = Harness(buf)
    h.partition.insert("k", list(range(100)))
    h.partition.flush()
    refused = [n for n in range(100) if n % 7 == 3]
    assert sorted(n for _, data, _ in buf.flushes for n in data) == [
        n for n in range(100) if n not in refused
    ]
    assert buf.errors == [("k", refused, None)]
    (letter,) = DeadLetterStore(tmp_path).letters()
    assert [row["value"] for row in letter.rows] == refused
    assert letter.row_errors() == [f"PermanentError: {n} is refused" for n in refused]
    info = h.partition.info()
    assert (info["flushed_values"], info["failed_values"], info["dead_lettered"]) == (86, 14, 14)
    assert h.retries() == []


def test_failing_handle_error_is_counted_and_data_still_dead_lettered(tmp_path: Any) -> None:
    class Both(MemoryBuffer):
        def handle_error(self, key: Any, data: list[Any], meta: Any = None) -> None:
            raise RuntimeError("oops")

    h = Harness(Both(failures=9, retry={"max_attempts": 1}, dead_letter_dir=tmp_path))
    h.partition.insert("k", [1])
    h.partition.flush()
    info = h.partition.info()
    assert info["error_handler_failed"] == 1 and info["dead_lettered"] == 1


def test_sync_flush_answers_when_retries_are_settled() -> None:
    buf = MemoryBuffer(failures=1, retry=NO_JITTER)
    h = Harness(buf)
    h.partition.insert("a", [1])
    h.partition.insert("b", [2])
    h.partition.sync_flush(7, "caller")
    assert h.sent == []  # one of the two flushes waits for a retry
    h.fire_retry()
    ((to, reply),) = h.sent
    assert to == "caller" and isinstance(reply, BufferSyncFlushed)
    assert (reply.token, reply.partition, sorted(reply.results)) == (7, 0, ["a:1", "b:1"])


def test_sync_flush_of_nothing_answers_at_once() -> None:
    h = Harness(MemoryBuffer())
    h.partition.sync_flush(1, "caller")
    assert h.sent == [("caller", BufferSyncFlushed(1, 0, [], 0))]


def test_sync_flush_counts_keys_given_up() -> None:
    h = Harness(MemoryBuffer(failures=9, retry={"max_attempts": 1}))
    h.partition.insert("a", [1])
    h.partition.sync_flush(1, "caller", key="a")
    assert h.sent == [("caller", BufferSyncFlushed(1, 0, [], 1))]


def test_slow_flushes_are_counted() -> None:
    class Slow(MemoryBuffer):
        def handle_flush(self, key: Any, data: list[Any], meta: Any = None) -> Any:
            import time

            time.sleep(0.02)
            return None

    h = Harness(Slow(flush_timeout=0.001))
    h.partition.insert("k", [1])
    h.partition.flush()
    assert h.partition.info()["slow"] == 1


def test_close_gives_one_last_attempt_then_gives_up(tmp_path: Any) -> None:
    class BadKey(MemoryBuffer):
        def handle_flush(self, key: Any, data: list[Any], meta: Any = None) -> Any:
            if key == "bad":
                raise ConnectionError("down")
            return super().handle_flush(key, data, meta)

    buf = BadKey(retry=NO_JITTER, dead_letter_dir=tmp_path)
    h = Harness(buf)
    h.partition.insert("bad", [1])
    h.partition.flush()  # fails, waits for a retry
    h.partition.insert("good", [2])
    h.partition.close()
    assert buf.flushes == [("good", [2], None)]
    assert buf.errors == [("bad", [1], None)]
    assert [letter.rows for letter in DeadLetterStore(tmp_path).letters()] == [[{"value": 1}]]
    assert h.partition.size() == 0


def test_dump_size_info() -> None:
    buf = MemoryBuffer(failures=1, retry=NO_JITTER, max_size=100)
    h = Harness(buf)
    h.partition.insert("a", [1, 2])
    h.partition.flush("a")  # fails: [1, 2] wait for a retry
    h.partition.insert("a", [3])
    h.partition.insert(("t", 1), ["x"])
    assert h.partition.dump() == {"a": [1, 2, 3], ("t", 1): ["x"]}
    assert h.partition.dump("a") == {"a": [1, 2, 3]}
    assert (h.partition.size(), h.partition.size("a"), h.partition.size("zz")) == (4, 3, 0)
    info = h.partition.info()
    assert info["partition"] == 0 and set(info["keys"]) == {"a", ("t", 1)}
    assert (info["size"], info["buffered"], info["retrying"], info["inserted"]) == (4, 2, 2, 4)
    assert info["settings"]["max_size"] == 100
    assert info["settings"]["class"] == f"{__name__}:MemoryBuffer"
    assert info["settings"]["retry"]["max_attempts"] == 3
