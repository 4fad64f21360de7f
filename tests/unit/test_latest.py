"""The shared-memory slots: what one process writes, a forked one reads, never torn."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from workers import frames
from workers.latest import Latest


def test_an_empty_slot_reads_as_nothing() -> None:
    latest = Latest()
    assert latest.metrics.read() == (0, None)
    assert latest.status.read_frame() is None


def test_write_then_read_round_trips_and_moves_seq() -> None:
    latest = Latest()
    data = latest.status.write_frame("status", {"state": "running"})
    seq, payload = latest.status.read()
    assert payload == data and seq == 2
    latest.status.write_frame("status", {"state": "exited"})
    assert latest.status.seq == 4
    assert latest.status.read_frame().body == {"state": "exited"}
    assert latest.metrics.read() == (0, None)  # slots are independent


def test_a_document_larger_than_its_slot_is_refused_and_the_old_one_kept() -> None:
    latest = Latest()
    latest.info.write_frame("info", {"ok": True})
    with pytest.raises(frames.ProtocolError, match="exceeds"):
        latest.info.write(b"x" * (latest.info.capacity + 1))
    assert latest.info.read_frame().body == {"ok": True}


def test_a_half_written_slot_is_never_read() -> None:
    latest = Latest()
    latest.status.write_frame("status", {"state": "running"})
    buf = latest.status._buf
    buf[0] = buf[0] + 1  # the writer is mid-write: seq is odd
    assert latest.status.read()[1] is None
    buf[0] = buf[0] + 1
    buf[-1:] = b"!"  # beyond the payload: the crc still matches
    assert latest.status.read_frame().body == {"state": "running"}
    buf[20] ^= 0xFF  # inside the payload: a torn write fails the crc
    assert latest.status.read()[1] is None


def _write_many(latest: Latest, count: int) -> None:
    for seq in range(count):
        latest.metrics.write_frame("metrics", {"seq": seq, "pad": "z" * (seq % 2000)})
    os._exit(0)


def test_a_reader_racing_a_forked_writer_sees_only_whole_documents() -> None:
    latest = Latest()
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
