"""The Lane, without actors: bounds, overflow policies, hand-over windows, watermarks."""

from __future__ import annotations

from typing import Any

from datalogger.config import DestinationSpec
from datalogger.exceptions import StorageError
from datalogger.lane import Lane


class FakeLog:
    """The write-ahead log as a lane sees it: every chunk offered, readable by number."""

    def __init__(self) -> None:
        self.chunks: dict[int, list[Any]] = {}
        self.reads: list[list[int]] = []
        self.fail: OSError | None = None

    def read_back(self, seqs: list[int]) -> list[tuple[int, list[Any]]]:
        if self.fail is not None:
            raise StorageError(str(self.fail))
        self.reads.append(seqs)
        return [(seq, self.chunks[seq]) for seq in seqs if seq in self.chunks]


def lane(log: FakeLog | None = None, **options: Any) -> Lane:
    return Lane(DestinationSpec(name="d", type="x:Y", options={}, **options), (log or FakeLog()).read_back)


def offer(ln: Lane, log: FakeLog, seq: int, chunk: list[Any]) -> list[tuple[int, list[Any]]]:
    log.chunks[seq] = chunk  # in the log first, as the supervisor does
    return ln.offer(seq, chunk)


def rows(n: int) -> list[dict[str, int]]:
    return [{"i": i} for i in range(n)]


def test_over_the_bound_only_numbers_are_kept_and_rows_are_read_back_in_order():
    log = FakeLog()
    ln = lane(log, max_buffered_rows=10)
    assert offer(ln, log, 1, rows(6)) == [(1, rows(6))]
    assert offer(ln, log, 2, rows(6)) == [(2, rows(6))]  # room was left: in memory (one chunk may overshoot)
    assert offer(ln, log, 3, rows(5)) == []  # over the bound: left in the log
    assert offer(ln, log, 4, rows(1)) == []  # behind what is in the log only, to keep order
    assert 3 not in ln.inflight and 4 not in ln.inflight  # no copy of their rows in memory
    assert ln.counters.values["spilled"] == 5 + 1
    assert ln.buffered_rows() == 18
    assert ln.snapshot()["wal_only_rows"] == 6
    assert log.reads == []  # nothing read back while there is no room
    assert [seq for seq, _ in ln.settle((1,))] == [3]
    assert ln.settle((2,)) == [(4, rows(1))]
    assert log.reads == [[3], [4]]
    assert ln.watermark() == 2
    assert ln.snapshot()["wal_only_rows"] == 0
    ln.settle((3, 4))
    assert ln.watermark() == 4 and ln.buffered_rows() == 0


def test_read_back_takes_as_many_chunks_as_fit_in_one_read():
    log = FakeLog()
    ln = lane(log, max_buffered_rows=10)
    offer(ln, log, 1, rows(10))
    for seq in range(2, 7):
        assert offer(ln, log, seq, rows(3)) == []
    assert [seq for seq, _ in ln.settle((1,))] == [2, 3, 4, 5]  # 9 rows, then one overshoots
    assert log.reads == [[2, 3, 4, 5]]


def test_a_chunk_the_log_lost_is_counted_and_does_not_hold_the_rest_back():
    log = FakeLog()
    ln = lane(log, max_buffered_rows=5)
    offer(ln, log, 1, rows(5))
    offer(ln, log, 2, rows(2))
    offer(ln, log, 3, rows(2))
    del log.chunks[2]  # a damaged record, skipped by the log
    assert ln.settle((1,)) == [(3, rows(2))]
    assert ln.counters.values["dropped"] == 2
    assert "could not be read back" in (ln.counters.last_error or "")
    ln.settle((3,))
    assert ln.watermark() == 3


def test_a_log_that_cannot_be_read_keeps_the_chunks_and_is_tried_again():
    log = FakeLog()
    ln = lane(log, max_buffered_rows=5)
    offer(ln, log, 1, rows(5))
    offer(ln, log, 2, rows(2))
    log.fail = OSError(5, "Input/output error")
    assert ln.settle((1,)) == []
    assert ln.read_error and "Input/output error" in (ln.counters.last_error or "")
    assert ln.buffered_rows() == 2 and ln.watermark() == 1
    log.fail = None
    assert ln.refill() == [(2, rows(2))]
    assert not ln.read_error


def test_drop_oldest_keeps_the_newest():
    ln = lane(max_buffered_rows=10, overflow="drop_oldest")
    ln.offer(1, rows(10))
    for seq in (2, 3, 4):
        ln.offer(seq, rows(10))
    assert ln.counters.values["dropped"] == 20
    assert [seq for seq, _ in ln.settle((1,))] == [4]


def test_block_says_when_there_is_no_room():
    ln = lane(max_buffered_rows=10, overflow="block")
    assert ln.has_room(100)  # an empty lane takes any chunk
    ln.offer(1, rows(8))
    assert ln.has_room(2) and not ln.has_room(3)


def test_hand_over_merges_what_waits_while_the_worker_is_busy():
    ln = lane()
    ln.queue_handoff([(1, rows(2))])
    assert ln.next_group(window=1, merge_rows=100) == [(1, rows(2))]
    ln.queue_handoff([(2, rows(2)), (3, rows(2)), (4, rows(200))])
    assert ln.next_group(window=1, merge_rows=100) == []  # one group is out
    ln.released((1,))
    assert [s for s, _ in ln.next_group(window=1, merge_rows=100)] == [2, 3]  # merged, capped
    ln.released((2,))  # parked for a retry, or settled: the group is only partly done
    assert ln.next_group(window=1, merge_rows=100) == []
    ln.released((3,))
    assert [s for s, _ in ln.next_group(window=1, merge_rows=100)] == [4]  # alone: over the cap


def test_reset_hands_every_unsettled_chunk_over_again_in_order():
    ln = lane()
    for seq in (3, 1, 2):
        ln.offer(seq, rows(1))
    ln.queue_handoff([])
    ln.next_group(window=5, merge_rows=1)
    ln.reset_handoff()
    assert [s for s, _ in ln.waiting] == [1, 2, 3]
    assert ln.handed_groups == []


def test_watermark_is_the_last_sequence_with_everything_before_settled():
    ln = lane()
    ln.start_after(10)
    assert ln.watermark() == 10
    for seq in (11, 12, 13):
        ln.offer(seq, rows(1))
    ln.settle((12,))
    assert ln.watermark() == 10
    ln.settle((11,))
    assert ln.watermark() == 12
    ln.settle((13,))
    assert ln.watermark() == 13


def test_linger_spaces_hand_overs_but_lets_the_first_and_a_full_group_go_at_once() -> None:
    ln = lane(linger=0.2)
    ln.queue_handoff([ln.offer(1, rows(1))[0]])
    assert ln.linger_left(now=100.0, merge_rows=100) == 0.0  # nothing handed over yet: go now
    assert [s for s, _ in ln.next_group(window=1, merge_rows=100)] == [1]
    ln.last_handoff = 100.0
    ln.settle((1,))
    assert ln.linger_left(now=100.05, merge_rows=100) == 0.0  # nothing waits
    ln.queue_handoff([ln.offer(2, rows(1))[0], ln.offer(3, rows(1))[0]])
    assert abs(ln.linger_left(now=100.05, merge_rows=100) - 0.15) < 1e-9
    assert ln.linger_left(now=100.25, merge_rows=100) == 0.0  # the linger has passed
    ln.queue_handoff([ln.offer(4, rows(98))[0]])  # 100 rows wait: a full group goes at once
    assert ln.linger_left(now=100.05, merge_rows=100) == 0.0
    assert [s for s, _ in ln.next_group(window=1, merge_rows=100)] == [2, 3, 4]
    assert ln.waiting_rows == 0


def test_zero_linger_never_holds_a_hand_over_back() -> None:
    ln = lane(linger=0.0)
    ln.last_handoff = 100.0
    ln.queue_handoff([ln.offer(1, rows(1))[0]])
    assert ln.linger_left(now=100.0, merge_rows=100) == 0.0


def test_linger_does_not_hold_back_half_the_memory_bound() -> None:
    ln = lane(linger=0.2, max_buffered_rows=40)
    ln.last_handoff = 100.0
    ln.queue_handoff([ln.offer(1, rows(19))[0]])
    assert ln.linger_left(now=100.0, merge_rows=100) > 0.19
    ln.queue_handoff([ln.offer(2, rows(1))[0]])  # 20 rows: half of max_buffered_rows
    assert ln.linger_left(now=100.0, merge_rows=100) == 0.0
