"""Shared memory: what one process writes in a slot, a forked one reads, never torn; heartbeats and
write times cross the fork too."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from supervisor import frames
from supervisor.frames import TaskKey
from supervisor.shm import SharedMemory, TaskSlots
from tests.unit.memory import TASK, task_slots


def test_an_empty_slot_reads_as_nothing() -> None:
    latest = task_slots()
    assert latest.metrics.read() == (0, None)
    assert latest.status.read_frame() is None


def test_write_then_read_round_trips_and_moves_seq() -> None:
    latest = task_slots()
    data = latest.status.write_frame("status", TASK, {"state": "running"})
    seq, payload = latest.status.read()
    assert payload == data and seq == 2
    latest.status.write_frame("status", TASK, {"state": "exited"})
    assert latest.status.seq == 4
    assert latest.status.read_frame().body == {"state": "exited"}
    assert latest.metrics.read() == (0, None)  # slots are independent


def test_a_document_larger_than_its_slot_is_refused_and_the_old_one_kept() -> None:
    latest = task_slots()
    latest.info.write_frame("info", TASK, {"ok": True})
    with pytest.raises(frames.ProtocolError, match="exceeds"):
        latest.info.write(b"x" * (latest.info.capacity + 1))
    assert latest.info.read_frame().body == {"ok": True}


def test_a_half_written_slot_is_never_read() -> None:
    latest = task_slots()
    latest.status.write_frame("status", TASK, {"state": "running"})
    buf = latest.status._buf
    buf[0] = buf[0] + 1  # the writer is mid-write: seq is odd
    assert latest.status.read()[1] is None
    buf[0] = buf[0] + 1
    buf[-1:] = b"!"  # beyond the payload: the crc still matches
    assert latest.status.read_frame().body == {"state": "running"}
    buf[30] ^= 0xFF  # inside the payload: a torn write fails the crc
    assert latest.status.read()[1] is None


def _write_many(latest: TaskSlots, count: int) -> None:
    for seq in range(count):
        latest.metrics.write_frame("metrics", TASK, {"seq": seq, "pad": "z" * (seq % 2000)})
    os._exit(0)


def test_a_reader_racing_a_forked_writer_sees_only_whole_documents() -> None:
    latest = task_slots()
    ctx = multiprocessing.get_context("fork")
    writer = ctx.Process(target=_write_many, args=(latest, 20000))
    writer.start()
    seen = []
    while writer.is_alive() or not seen:
        frame = latest.metrics.read_frame()
        if frame is not None:
            body = frame.body
            assert body["pad"] == "z" * (body["seq"] % 2000)
            seen.append(body["seq"])
    writer.join()
    assert seen == sorted(seen)  # never goes back in time
    assert latest.metrics.read_frame().body["seq"] == 19999


def test_the_write_time_is_seen_without_decoding() -> None:
    latest = task_slots()
    assert latest.metrics.written_at == 0.0
    before = time.monotonic()
    latest.metrics.write_frame("metrics", TASK, {"seq": 1})
    assert before <= latest.metrics.written_at <= time.monotonic()


def _rewrite_words(shm: SharedMemory, seconds: float) -> None:
    latest = shm.tasks[TASK]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(200):
            shm.heartbeats["publisher"].promise(30.0)
        latest.status.write(b"running")
    os._exit(0)


def test_words_read_outside_the_seqlock_never_read_as_zero_while_rewritten() -> None:
    """struct.pack_into zeroes its bytes before writing them: a heartbeat read as 0 got a healthy worker
    killed as hung. A reader in another process must only ever see whole values."""
    shm = SharedMemory(roles=["container", "publisher"], tasks=[TASK])
    latest = shm.tasks[TASK]
    shm.heartbeats["publisher"].promise(30.0)
    latest.status.write(b"starting")
    writer = multiprocessing.get_context("fork").Process(target=_rewrite_words, args=(shm, 0.5))
    writer.start()
    reads = zeros = 0
    while writer.is_alive():
        for _ in range(200):
            reads += 1
            zeros += shm.heartbeats["publisher"].due == 0.0 or latest.status.written_at == 0.0 or latest.status.seq == 0
    writer.join()
    assert reads > 10_000 and zeros == 0


def _promise(shm: SharedMemory) -> None:
    shm.heartbeats["publisher"].promise(30.0)
    os._exit(0)


def test_a_heartbeat_promised_in_a_child_is_read_by_the_parent() -> None:
    shm = SharedMemory(roles=["container", "publisher"], tasks=[TASK])
    assert shm.heartbeats["publisher"].due == 0.0
    child = multiprocessing.get_context("fork").Process(target=_promise, args=(shm,))
    child.start()
    child.join()
    assert time.monotonic() + 29 < shm.heartbeats["publisher"].due <= time.monotonic() + 30
    assert shm.heartbeats["container"].due == 0.0  # each role its own


def test_tasks_have_slots_of_their_own() -> None:
    other = TaskKey("web", "task-2")
    shm = SharedMemory(roles=["container"], tasks=[TASK, other])
    shm.tasks[TASK].status.write_frame("status", TASK, {"state": "running"})
    assert shm.tasks[other].status.read_frame() is None


def test_the_history_keeps_the_last_samples_in_order_and_survives_a_new_reader() -> None:
    shm = SharedMemory(roles=["container"], tasks=[TASK], history=5)
    history = shm.tasks[TASK].history
    for seq in range(1, 13):
        history.append(seq, 1000.0 + seq, {"cpu_percent": float(seq), "memory_bytes": seq * 10, "pids": None})
    kept = history.since(0)
    assert [sample["seq"] for sample in kept] == [8, 9, 10, 11, 12]  # the ring holds the last five
    assert kept[-1] == {"seq": 12, "timestamp": 1012.0, "cpu_percent": 12.0, "cpu_seconds": None, "memory_bytes": 120,
                        "memory_limit_bytes": None, "pids": None, "net_rx_bytes": None, "net_tx_bytes": None,
                        "blkio_read_bytes": None, "blkio_write_bytes": None}
    assert [sample["seq"] for sample in history.since(10)] == [11, 12]
    assert SharedMemory(roles=["container"], tasks=[TASK]).tasks[TASK].history.since(0) == []  # none kept: off
