"""ClientQueue: the client's queue policy, without a thread, a node or a disk."""

from __future__ import annotations

import threading
import time

from datalogger.client_queue import MAX_CHUNK_ROWS, ClientQueue
from datalogger.messages import PubSubBroadcast


def rows(*ns: int) -> list[dict[str, int]]:
    return [{"n": n} for n in ns]


def test_memory_is_bounded_and_a_full_queue_counts_nothing_itself() -> None:
    queue = ClientQueue(buffer_rows=3)
    assert queue.put("a", rows(1, 2))
    assert queue.put_one("a", {"n": 3})
    assert not queue.put("a", rows(4))  # full: the caller decides (spool, or refuse)
    assert not queue.put_one("b", {"n": 5})
    assert (queue.queued, queue.dropped) == (3, 0)
    queue.refuse(1)
    assert queue.dropped == 1


def test_a_failed_chunk_goes_back_in_front_of_what_came_meanwhile() -> None:
    queue = ClientQueue(buffer_rows=100)
    queue.put("a", rows(1, 2))
    queue.put("b", rows(10))
    chunks = queue.take(lambda topic: False)
    assert chunks == [("a", rows(1, 2)), ("b", rows(10))]
    assert queue.take(lambda topic: False) == []  # both topics are in flight
    queue.put("a", rows(3))
    queue.finished("b", 1, sent=True)
    queue.give_back(chunks[:1])  # "a" was not accepted
    assert queue.take(lambda topic: False) == [("a", rows(1, 2, 3))]
    assert (queue.queued, queue.sent) == (3, 1)


def test_a_topic_with_rows_in_a_spool_waits_behind_them() -> None:
    queue = ClientQueue(buffer_rows=100)
    queue.put("a", rows(1))
    queue.put("b", rows(2))
    assert queue.take(lambda topic: topic == "a") == [("b", rows(2))]


def test_chunks_are_cut_at_max_chunk_rows() -> None:
    queue = ClientQueue(buffer_rows=3 * MAX_CHUNK_ROWS)
    queue.put("a", rows(*range(MAX_CHUNK_ROWS + 7)))
    with queue.cond:
        assert queue.has_full_chunk()
    ((topic, chunk),) = queue.take(lambda topic: False)
    assert len(chunk) == MAX_CHUNK_ROWS
    queue.finished(topic, len(chunk), sent=True)
    assert [len(c) for _, c in queue.take(lambda topic: False)] == [7]


def test_flush_waits_for_what_was_offered_before_it_per_topic() -> None:
    queue = ClientQueue(buffer_rows=100)
    queue.put("a", rows(1, 2))
    queue.found_in_spool(("adopted", "a"), 5)  # another process's rows
    target = queue.snapshot()
    queue.put("b", rows(3))  # after the flush began: not waited for
    assert [topic for topic, _ in queue.take(lambda topic: False)] == ["a", "b"]
    queue.finished("b", 1, sent=True)
    with queue.cond:
        assert queue.behind(target) == 2 + 5  # "b" settling does not count for "a"
    queue.finished("a", 2, sent=False, error="InvalidData: no")  # refused: settled, dropped
    queue.finished_spooled(("adopted", "a"), 5, popped=5, sent=True)
    with queue.cond:
        assert queue.behind(target) == 0
    assert (queue.sent, queue.dropped, queue.errors, queue.spooled) == (6, 2, 1, 0)
    assert queue.last_error == "InvalidData: no"


def test_rows_moved_to_the_spool_stay_offered_until_sent() -> None:
    queue = ClientQueue(buffer_rows=100)
    queue.put("a", rows(1, 2))
    queue.put("b", rows(3))
    queue.take(lambda topic: topic == "b")  # "a" in flight: not moved
    taken = queue.take_for_spool()
    assert taken == {"b": rows(3)}
    queue.moved_to_spool(1)
    assert (queue.queued, queue.spooled, queue.spooled_total) == (2, 1, 1)
    target = queue.snapshot()
    queue.finished_spooled("b", 1, popped=1, sent=True)
    queue.finished("a", 2, sent=True)
    with queue.cond:
        assert queue.behind(target) == 0 and not queue.has_work()


def test_events_are_bounded_and_those_not_sent_go_back_in_front() -> None:
    queue = ClientQueue(buffer_rows=3)
    for n in range(4):
        queue.put_event(PubSubBroadcast("t", n))
    assert queue.events_dropped == 1
    batch = queue.take_events(10)
    assert [m.event for m in batch] == [0, 1, 2]
    queue.put_event(PubSubBroadcast("t", 3))
    with queue.cond:
        assert queue.behind({}) == 4  # a flush waits for events in flight too
    queue.events_ended(sent=1, dropped=1, left=batch[2:])
    assert [m.event for m in queue.events] == [2, 3]
    assert (queue.events_sent, queue.events_dropped) == (1, 2)


def test_what_is_left_when_the_sender_stops_is_dropped_and_settled() -> None:
    queue = ClientQueue(buffer_rows=10)
    queue.put("a", rows(1, 2))
    queue.put_event(PubSubBroadcast("t", 1))
    target = queue.snapshot()
    assert queue.drop_remaining() == (2, 1)
    with queue.cond:
        assert queue.behind(target) == 0
    assert queue.counters()["dropped"] == 2 and queue.counters()["events_dropped"] == 1


def test_one_row_puts_keep_their_order_with_list_puts_and_count_for_flush() -> None:
    queue = ClientQueue(buffer_rows=10)
    queue.put_one("a", {"n": 1})  # lock-free: waits in the inbox
    queue.put_one("b", {"n": 10})
    assert queue.queued == 2
    queue.put("a", rows(2, 3))  # older one-row puts go first
    queue.put_one("a", {"n": 4})
    target = queue.snapshot()
    assert target == {"a": 4, "b": 1}
    assert dict(queue.take(lambda topic: False)) == {"a": rows(1, 2, 3, 4), "b": rows(10)}
    assert queue.counters()["queued"] == 5


def test_a_one_row_put_wakes_a_sleeping_sender_and_a_whole_chunk_a_lingering_one() -> None:
    queue = ClientQueue(buffer_rows=10 * MAX_CHUNK_ROWS)
    woke: list[float] = []

    def sender(linger: bool) -> None:
        started = time.monotonic()
        with queue.cond:
            queue.wait(30.0, linger=linger)
        woke.append(time.monotonic() - started)

    thread = threading.Thread(target=sender, args=(False,))
    thread.start()
    while not queue.sleeping:
        time.sleep(0.001)
    queue.put_one("a", {"n": 1})
    thread.join(5.0)
    assert woke and woke[0] < 5.0  # not the 30 s timeout
    assert queue.rows == {"a": rows(1)}  # moved out of the inbox on waking

    thread = threading.Thread(target=sender, args=(True,))
    thread.start()
    while not queue.lingering:
        time.sleep(0.001)
    for n in range(MAX_CHUNK_ROWS - 1):
        queue.put_one("a", {"n": n})
    time.sleep(0.05)
    assert len(woke) == 1  # lingering: fewer rows than a chunk do not wake it
    queue.put_one("a", {"n": 0})
    thread.join(5.0)
    assert len(woke) == 2 and woke[1] < 5.0


def test_an_event_put_wakes_a_sleeping_sender() -> None:
    queue = ClientQueue(buffer_rows=10)
    done = threading.Event()

    def sender() -> None:
        with queue.cond:
            queue.wait(30.0)
        done.set()

    thread = threading.Thread(target=sender)
    thread.start()
    while not queue.sleeping:
        time.sleep(0.001)
    queue.put_event(PubSubBroadcast("t", 1))
    assert done.wait(5.0)
    thread.join(5.0)

