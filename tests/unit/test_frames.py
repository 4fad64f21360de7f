"""The frame protocol: every kind round-trips; anything else is a ProtocolError, or in a stream is
counted as ``malformed`` and dropped while the good frames around it still arrive."""

from __future__ import annotations

import os
from typing import List

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from supervisor import channel, frames
from supervisor.frames import TaskKey

TASK = TaskKey("web", "task-1")

BODIES = {
    "metrics": {"seq": 3, "container": {"cpu_percent": 12.5, "net_rx_bytes": None}, "processes": [{"pid": 1}]},
    "status": {"state": "running", "exit_code": None, "reason": "caf\u00e9 \u2603"},
    "info": {"tags": ["a", "b"], "command": ["sh", "-c", "echo $HOME; ls"]},
    "error": {"message": "image horizon-x missing"},
    "etcd": {"connected": True, "state": None},
    "finished": {"published": False},
    "control": {"action": "stop"},
    "finish": {},
    "task": {"slot": 3, "config": {"source": "/etc/horizon/tasks.d/web.ini", "task": {"command": ["sleep", "1"]}},
             "endpoint": {"url": "http://127.0.0.1:8080/tasks/web/task-1"}},
    "drop": {},
    "ended": {"code": 0},
}
GOOD = frames.encode("status", TASK, {"state": "running"})
# Bytes that are not frames; several are msgpack headers that would swallow what follows them.
GARBAGE = [
    b"\xc1",  # never used by msgpack
    b"\x92",  # an array of two: would take the next two objects
    b"\xdd\xff\xff\xff\xff",  # an array of 4 G elements
    b"\xdb\x7f\xff\xff\xff",  # a 2 GB string
    b"hello world",  # positive fixints
    msgpack.packb([1, 2, 3]),  # valid msgpack, not a map
    GOOD[:-3],  # a frame cut short
    frames.MAGIC + b"\xc1",  # a frame start followed by nonsense
    os.urandom(4096).replace(frames.MAGIC, b""),
]


def raw_frame(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_every_kind_has_a_body_here() -> None:
    assert set(BODIES) == frames.KINDS


@pytest.mark.parametrize("kind", sorted(frames.KINDS))
def test_every_kind_round_trips(kind: str) -> None:
    data = frames.encode(kind, TASK, BODIES[kind])
    assert data.startswith(frames.MAGIC)
    assert frames.decode(data) == frames.Frame(kind, TASK, BODIES[kind])
    decoder = frames.StreamDecoder()
    assert decoder.feed(data) == [frames.Frame(kind, TASK, BODIES[kind])] and decoder.malformed == 0


@pytest.mark.parametrize(
    "data, complaint",
    [
        (raw_frame({"v": 1, "kind": "status", "task": "web/task-1", "body": {}}), "version 1"),
        (raw_frame({"kind": "status", "body": {}}), "version None"),
        (raw_frame({"v": frames.VERSION, "kind": "bogus", "task": "web/task-1", "body": {}}), "unknown frame kind 'bogus'"),
        (raw_frame({"v": frames.VERSION, "kind": "status", "task": "web/task-1", "body": [1]}), "body is not a map"),
        (raw_frame({"v": frames.VERSION, "kind": "status"}), "body is not a map"),
        (raw_frame({"v": frames.VERSION, "kind": "status", "body": {}}), "has no task"),
        (raw_frame({"v": frames.VERSION, "kind": "status", "task": "web", "body": {}}), "is not SERVICE/TASK"),
        (raw_frame([1, "status", {}]), "not a map"),
        (raw_frame("status"), "not a map"),
        (raw_frame({"v": frames.VERSION, "kind": "status", "task": "web/task-1", "body": {1: "x"}}), "undecodable"),  # int keys
        (b"\xc1", "undecodable"),
        (b"", "undecodable"),
        (GOOD + b"\x00", "undecodable"),  # two objects
        (GOOD[:-1], "undecodable"),
        (b"\x84\xa1v\x02\xa4kind\xa2\xff\xfe", "undecodable"),  # invalid UTF-8
        (b"\x00" * (frames.MAX_FRAME_BYTES + 1), "exceeds"),
    ],
)
def test_a_malformed_frame_is_a_protocol_error(data: bytes, complaint: str) -> None:
    with pytest.raises(frames.ProtocolError, match=complaint):
        frames.decode(data)


def test_encode_refuses_unknown_kinds_and_oversize_frames() -> None:
    with pytest.raises(frames.ProtocolError, match="unknown frame kind"):
        frames.encode("bogus", TASK, {})
    with pytest.raises(frames.ProtocolError, match="exceeds"):
        frames.encode("info", TASK, {"pad": "x" * frames.MAX_FRAME_BYTES})


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
@pytest.mark.parametrize("together", [True, False], ids=["one-chunk", "two-chunks"])
def test_garbage_is_counted_and_the_next_frames_still_arrive(garbage: bytes, together: bool) -> None:
    decoder = frames.StreamDecoder()
    first = frames.encode("info", TASK, {"n": 1})
    received = decoder.feed(first + garbage + GOOD) if together else decoder.feed(first + garbage) + decoder.feed(GOOD)
    received += decoder.feed(GOOD)
    assert [f.kind for f in received] == ["info", "status", "status"]
    assert decoder.malformed >= 1


@pytest.mark.parametrize(
    "bad",
    [
        raw_frame({"v": 1, "kind": "status", "task": "web/task-1", "body": {}}),
        raw_frame({"v": frames.VERSION, "kind": "bogus", "task": "web/task-1", "body": {}}),
        raw_frame({"v": frames.VERSION, "kind": "status", "task": "web/task-1", "body": "not a map"}),
        raw_frame({"v": frames.VERSION, "kind": "status", "task": "web/task-1", "body": {1: 2}}),
    ],
    ids=["wrong-version", "unknown-kind", "non-map-body", "int-keys"],
)
def test_a_rejected_frame_in_a_stream_is_counted_once(bad: bytes) -> None:
    decoder = frames.StreamDecoder()
    assert decoder.feed(bad + GOOD) == [frames.Frame("status", TASK, {"state": "running"})]
    assert decoder.malformed == 1


def test_an_oversize_frame_in_a_stream_is_dropped() -> None:
    decoder = frames.StreamDecoder()
    oversize = raw_frame({"v": frames.VERSION, "kind": "info", "task": "web/task-1", "body": {"pad": "x" * frames.MAX_FRAME_BYTES}})
    assert decoder.feed(oversize + GOOD) == [frames.Frame("status", TASK, {"state": "running"})]
    assert decoder.malformed == 1


def test_a_frame_start_that_never_completes_is_given_up_after_the_size_limit() -> None:
    decoder = frames.StreamDecoder()
    # A frame whose kind claims a string just under 2 MB: it can never be a valid frame.
    assert decoder.feed(frames.MAGIC + b"\xdb\x00\x1f\xff\xff") == []
    received: List[frames.Frame] = []
    for _ in range(frames.MAX_FRAME_BYTES // 65536 + 2):
        received += decoder.feed(b"\x00" * 65536)
    received += decoder.feed(GOOD)
    assert received == [frames.Frame("status", TASK, {"state": "running"})] and decoder.malformed >= 1


def test_a_stream_split_byte_by_byte_decodes_the_same() -> None:
    data = b"".join(frames.encode(kind, TASK, body) for kind, body in BODIES.items())
    decoder = frames.StreamDecoder()
    received = [frame for i in range(len(data)) for frame in decoder.feed(data[i:i + 1])]
    assert [(f.kind, f.body) for f in received] == list(BODIES.items()) and decoder.malformed == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_never_raise(chunks: List[bytes]) -> None:
    decoder = frames.StreamDecoder()
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            assert frame.kind in frames.KINDS and isinstance(frame.body, dict)


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(min_size=1, max_size=200), cuts=st.lists(st.integers(0, 400), max_size=5))
def test_any_garbage_without_a_frame_start_loses_no_good_frame(garbage: bytes, cuts: List[int]) -> None:
    assume(frames.MAGIC not in garbage)
    data = GOOD + garbage + GOOD + GOOD
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    decoder = frames.StreamDecoder()
    received = [f for a, b in zip(bounds, bounds[1:]) for f in decoder.feed(data[a:b])]
    assert len(received) == 3 and decoder.malformed >= 1


def test_an_inbox_on_a_real_pipe_drops_garbage_and_reads_the_next_frame() -> None:
    read_fd, write_fd = channel.pipe()
    inbox = channel.Inbox(read_fd)
    try:
        os.write(write_fd, b"\x92\xc1 garbage from a confused writer \xdd\xff\xff\xff\xff")
        assert inbox.read() == [] and inbox.malformed == 1
        os.write(write_fd, frames.encode("control", TASK, {"action": "stop"}))
        assert inbox.read() == [frames.Frame("control", TASK, {"action": "stop"})]
        os.close(write_fd)
        write_fd = -1
        assert inbox.read() == [] and inbox.eof
    finally:
        inbox.close()
        if write_fd >= 0:
            os.close(write_fd)
