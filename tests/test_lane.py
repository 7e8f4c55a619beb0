"""The Lane, without actors: bounds, overflow policies, hand-over windows, watermarks."""

from __future__ import annotations

from typing import Any

from datalogger.config import DestinationSpec
from datalogger.lane import Lane


class MemorySpill:
    def __init__(self) -> None:
        self.chunks: list[tuple[int, list[Any]]] = []
        self.bytes_on_disk = 0

    def push(self, seq: int, rows: list[Any]) -> None:
        self.chunks.append((seq, rows))

    def pop(self, max_rows: int) -> list[tuple[int, list[Any]]]:
        out, total = [], 0
        while self.chunks and (not out or total + len(self.chunks[0][1]) <= max_rows):
            seq, rows = self.chunks.pop(0)
            out.append((seq, rows))
            total += len(rows)
        return out

    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def rows(self) -> int:
        return sum(len(r) for _, r in self.chunks)

    def close(self) -> None:
        pass


def lane(**options: Any) -> Lane:
    return Lane(DestinationSpec(name="d", type="x:Y", options={}, **options), MemorySpill)


def rows(n: int) -> list[dict[str, int]]:
    return [{"i": i} for i in range(n)]


def test_spill_beyond_the_bound_and_refill_in_order():
    ln = lane(max_buffered_rows=10)
    assert ln.offer(1, rows(6)) == [(1, rows(6))]
    assert ln.offer(2, rows(6)) == [(2, rows(6))]  # room was left: in memory (one chunk may overshoot)
    assert ln.offer(3, rows(5)) == []  # over the bound: on disk
    assert ln.offer(4, rows(1)) == []  # behind what is on disk, to keep order
    assert ln.counters.values["spilled"] == 6 + 5 + 1  # chunk 2 went through the spill file
    assert ln.buffered_rows() == 18
    assert [seq for seq, _ in ln.settle((1,))] == [3]
    assert [seq for seq, _ in ln.settle((2,))] == [4]
    assert ln.watermark() == 2


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


def test_a_spill_the_disk_refuses_keeps_the_chunk_in_memory() -> None:
    def refusing() -> Any:
        raise OSError(28, "No space left on device")

    ln = Lane(DestinationSpec(name="d", type="x:Y", options={}, max_buffered_rows=10), refusing)
    assert ln.offer(1, rows(10)) == [(1, rows(10))]
    assert ln.offer(2, rows(5)) == []  # over the bound, no disk: waits in memory, not lost
    assert "No space left on device" in (ln.counters.last_error or "")
    assert ln.counters.failing_since is None  # the destination itself is fine
    assert ln.buffered_rows() == 15
    assert ln.settle((1,)) == [(2, rows(5))]
