"""The frame protocol: what the supervisor's processes say to each other.

Wire spec (version 3)
---------------------
A frame is one msgpack map, written to a pipe as a self-delimiting msgpack object (no extra length
prefix: msgpack's own encoding delimits it)::

    {"v": 3, "kind": <str>, "task": <str>, "body": <map>}

``v``     protocol version; a frame with another version is rejected.
``kind``  one of ``KINDS`` below.
``task``  the task the frame is about, ``"SERVICE/TASK"`` (``TaskKey.path``): every frame has one, so
          one worker can serve many tasks without guessing whose a frame is.
``body``  a map with string keys; its content depends on the kind.

The keys come in this order, so every frame starts with the same bytes, ``MAGIC``; a reader that meets
garbage skips to the next ``MAGIC``.

Kinds and who sends them:

``metrics``   container -> parent -> publisher. The /metrics document of one sample, sent every
              ``publish_every`` samples (every sample goes to shared memory). Coalescing: only the
              newest unsent one per task matters, older ones may be dropped.
``status``    container -> parent -> publisher. The task's status document (``state.Status``). Never dropped.
``info``      container -> parent -> publisher. The task's info document. Never dropped.
``error``     container -> parent. ``{"message": str}``: a fatal, user-facing error (image missing,
              engine unreachable); the worker exits with ``EXIT_FATAL`` right after.
``etcd``      publisher -> parent. ``{"connected": bool, "state": str | None, "refused": str | None,
              "fix": str | None}``: whether etcd answers, the task state its record holds now (None:
              not written yet, or stale), and why etcd refused us when it answered but said no (bad
              credentials, no such API) with what to change; sent when any of them changes.
``finished``  publisher -> parent. ``{"published": bool}``: the final record was written (or not).
``control``   parent -> container. ``{"action": "stop" | "pause" | "resume", "id": str}``: act on the
              task; a pause or resume it cannot act on is answered in the status (``refused``).
              publisher -> parent. ``{"action", "id", "by"}``: a request from the fleet, read from the
              task's control key in etcd (workers/control.py); the parent decides (a stop is its own).
``finish``    parent -> publisher. ``{}``: write the final record, then exit (in a host tree: then
              forget nothing until ``drop``; the publisher lives on for the other tasks).

A host tree (``python -m supervisor DIR``: many tasks in one tree, supervisor/hostflow.py) adds:

``task``      parent -> every worker. ``{"slot": int, "config": <map>, "endpoint": <map>}``: take this
              task on: its block of shared memory, its configuration (``config.to_document``: parsed
              and validated by the parent, never again by a worker) and its endpoint document. Replayed
              to a restarted worker for every task it still has a part in.
``drop``      parent -> every worker. ``{}``: the task's end is recorded and its block is freed: forget it.
``ended``     container -> parent. ``{"code": int}``: the task's thread is done (a worker exit code of
              ``supervisor.link``: EXIT_DONE, its end recorded; EXIT_FATAL, after an ``error`` frame).

A frame larger than ``MAX_FRAME_BYTES`` encoded, or anything that is not a map of this shape, raises
``ProtocolError``: the one error type for every malformed frame. Readers count and drop such frames
and any garbage between frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple

import msgpack

from supervisor.state import CONTROL_EFFECTS

VERSION = 3
MAX_FRAME_BYTES = 1 << 20
KINDS = frozenset(
    {"metrics", "status", "info", "error", "etcd", "finished", "control", "finish", "task", "drop", "ended"}
)
CONTROL_ACTIONS = tuple(CONTROL_EFFECTS)
# Kinds that may be replaced by a newer frame of the same kind and task while still unsent.
COALESCING_KINDS = frozenset({"metrics"})
# The bytes every frame starts with (``encode`` writes "v" and "kind" first): readers resynchronise on it.
MAGIC = b"\x84" + msgpack.packb("v") + msgpack.packb(VERSION) + msgpack.packb("kind")


class ProtocolError(ValueError):
    """A frame that is not valid under this protocol version."""


class TaskKey(NamedTuple):
    """Which task: its service and its name, as in etcd (``{namespace}/services/SERVICE/TASK``)."""

    service: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.service}/{self.name}"

    @classmethod
    def parse(cls, path: str) -> "TaskKey":
        service, sep, name = path.partition("/")
        if not (service and sep and name) or "/" in name:
            raise ProtocolError(f"task {path!r} is not SERVICE/TASK")
        return cls(service, name)


@dataclass(frozen=True)
class Frame:
    kind: str
    task: TaskKey
    body: Dict[str, Any]
    data: bytes = field(default=b"", compare=False, repr=False)  # the encoded frame, relayed as it came


def encode(kind: str, task: TaskKey, body: Dict[str, Any]) -> bytes:
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    data: bytes = msgpack.packb({"v": VERSION, "kind": kind, "task": task.path, "body": body}, use_bin_type=True)
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"{kind} frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    return data


def validate(obj: Any, data: bytes = b"") -> Frame:
    """Check one unpacked object (encoded as ``data``) and return it as a Frame."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame is a {type(obj).__name__}, not a map")
    if obj.get("v") != VERSION:
        raise ProtocolError(f"frame version {obj.get('v')!r}, expected {VERSION}")
    kind, body = obj.get("kind"), obj.get("body")
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    if not isinstance(body, dict):
        raise ProtocolError(f"{kind} frame body is not a map")
    task = obj.get("task")
    if not isinstance(task, str):
        raise ProtocolError(f"{kind} frame has no task")
    return Frame(kind, TaskKey.parse(task), body, data)


def decode(data: bytes) -> Frame:
    """Decode exactly one frame (used for the shared-memory slots)."""
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from exc
    return validate(obj, data)


class StreamDecoder:
    """Turns a byte stream into frames; malformed frames and garbage are counted, never raised.

    Every frame starts with ``MAGIC``, so after garbage the decoder skips to the next ``MAGIC`` and goes
    on from there: garbage costs only the bytes it spans. (Dropping the whole buffer would lose good
    frames read in the same chunk, and a garbage byte that opens a msgpack array would swallow the
    frames after it.) A garbage run is counted once in ``malformed``, like each frame that is rejected.
    """

    def __init__(self) -> None:
        self.malformed = 0
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> List[Frame]:
        self._buffer += data
        frames: List[Frame] = []
        while self._resync() and self._decode_run(frames):
            pass
        return frames

    def _skip(self, count: int) -> None:
        if count:
            del self._buffer[:count]
            self.malformed += not self._skipping
            self._skipping = True

    def _resync(self) -> bool:
        """Drop the bytes before the next MAGIC; True when the buffer now starts with one."""
        start = self._buffer.find(MAGIC)
        if start >= 0:
            self._skip(start)
            return True
        # Keep a tail that may be the first bytes of a MAGIC still on its way.
        keep = next((n for n in range(len(MAGIC) - 1, 0, -1) if self._buffer.endswith(MAGIC[:n])), 0)
        self._skip(max(len(self._buffer) - keep, 0))
        return False

    def _decode_run(self, frames: List[Frame]) -> bool:
        """Decode the frames at the start of the buffer; True when garbage follows, False when waiting for data."""
        unpacker = msgpack.Unpacker(
            raw=False, strict_map_key=True, max_buffer_size=max(len(self._buffer), 2 * MAX_FRAME_BYTES)
        )
        unpacker.feed(self._buffer)
        end, waiting, broken = 0, False, False
        try:
            while self._buffer.startswith(MAGIC, end):
                obj = unpacker.unpack()
                start, end = end, unpacker.tell()
                self._skipping = False
                try:
                    if end - start > MAX_FRAME_BYTES:
                        raise ProtocolError(f"frame of {end - start} bytes exceeds {MAX_FRAME_BYTES}")
                    frames.append(validate(obj, bytes(self._buffer[start:end])))
                except ProtocolError:
                    self.malformed += 1
        except msgpack.OutOfData:
            waiting = len(self._buffer) - end <= MAX_FRAME_BYTES  # else no frame is that long: garbage
            broken = not waiting
        except (ValueError, TypeError, msgpack.UnpackException):
            broken = True
        del self._buffer[:end]
        if broken:  # a MAGIC that opens no valid frame: look for the next one after it
            self._skipping = False
            self._skip(1)
        return not waiting and bool(self._buffer)
