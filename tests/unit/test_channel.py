"""Pipes between the processes: order kept, metrics coalesced, partial writes resumed, EOF seen."""

from __future__ import annotations

import os
from typing import Iterator, Tuple

import pytest

from supervisor import channel
from supervisor.frames import TaskKey

TASK = TaskKey("web", "task-1")


@pytest.fixture
def link() -> Iterator[Tuple[channel.Inbox, channel.Outbox]]:
    read_fd, write_fd = channel.pipe()
    inbox, outbox = channel.Inbox(read_fd), channel.Outbox(write_fd)
    yield inbox, outbox
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def test_frames_arrive_in_order(link) -> None:
    inbox, outbox = link
    outbox.send("info", TASK, {"n": 1})
    outbox.send("status", TASK, {"state": "running"})
    outbox.send("control", TASK, {"action": "stop"})
    assert [(f.kind, f.body) for f in inbox.read()] == [
        ("info", {"n": 1}), ("status", {"state": "running"}), ("control", {"action": "stop"}),
    ]
    assert not outbox.pending and not inbox.eof


def big(seq: int) -> dict:
    return {"seq": seq, "pad": "x" * 20000}


def fill(outbox: channel.Outbox) -> None:
    """Send status frames until the pipe is full and some are left waiting in the outbox."""
    n = 0
    while not outbox.pending:
        outbox.send("status", TASK, big(n))
        n += 1


def test_a_stalled_reader_costs_one_metrics_frame_and_loses_no_state(link) -> None:
    inbox, outbox = link
    fill(outbox)
    for seq in range(50):
        outbox.send("metrics", TASK, big(seq))
    outbox.send("status", TASK, {"state": "exited"})
    assert outbox.coalesced == 49

    received = []
    while True:
        received += inbox.read()
        if outbox.flush():
            received += inbox.read()
            break
    metrics = [f.body["seq"] for f in received if f.kind == "metrics"]
    statuses = [f.body.get("seq", f.body.get("state")) for f in received if f.kind == "status"]
    assert metrics == [49]  # only the newest unsent sample
    assert statuses == list(range(len(statuses) - 1)) + ["exited"]  # every state, in order


def test_partial_writes_are_resumed_without_corrupting_the_stream(link) -> None:
    inbox, outbox = link
    body = {"pad": "y" * (3 * 65536)}  # larger than the pipe holds: written in pieces
    outbox.send("info", TASK, body)
    assert outbox.pending
    got = []
    while not got:
        got += inbox.read()
        outbox.flush()
    assert got[0].body == body and inbox.malformed == 0


def test_eof_when_the_writer_is_gone(link) -> None:
    inbox, outbox = link
    outbox.send("finish", TASK, {})
    outbox.close()
    assert [f.kind for f in inbox.read()] == ["finish"]
    assert inbox.eof


def test_a_gone_reader_is_a_broken_pipe(link) -> None:
    inbox, outbox = link
    inbox.close()
    with pytest.raises(BrokenPipeError):
        outbox.send("control", TASK, {"action": "stop"})

