"""The frame protocol: what the supervisor's processes say to each other.

Wire spec (version 1)
---------------------
A frame is one msgpack map, written to a pipe as a self-delimiting msgpack object (no extra length
prefix: msgpack's own encoding delimits it)::

    {"v": 1, "kind": <str>, "body": <map>}

``v``     protocol version; a frame with another version is rejected.
``kind``  one of ``KINDS`` below.
``body``  a map with string keys; its content depends on the kind.

Kinds and who sends them:

``metrics``   container -> parent -> publisher. The /metrics document of one sample. Coalescing:
              only the newest unsent one matters, older ones may be dropped.
``status``    container -> parent -> publisher. The task's status document. Never dropped.
``info``      container -> parent -> publisher. The task's info document. Never dropped.
``error``     container -> parent. ``{"message": str}``: a fatal, user-facing error (image missing,
              engine unreachable); the worker exits with ``EXIT_FATAL`` right after.
``registry``  publisher -> parent. ``{"connected": bool, "state": str | None}``: whether etcd
              answers, and the task state its record holds now (None: not written yet, or stale);
              sent when either changes.
``finished``  publisher -> parent. ``{"published": bool}``: the final record was written (or not).
``stop``      parent -> container. ``{}``: stop the task gracefully.
``finish``    parent -> publisher. ``{}``: write the final record, then exit.

A frame larger than ``MAX_FRAME_BYTES`` encoded, or anything that is not a map of this shape, raises
``ProtocolError``: the one error type for every malformed frame. Readers count and drop such frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

import msgpack

VERSION = 1
MAX_FRAME_BYTES = 1 << 20
KINDS = frozenset(
    {"metrics", "status", "info", "error", "registry", "finished", "stop", "finish"}
)
# Kinds that may be replaced by a newer frame of the same kind while still unsent.
COALESCING_KINDS = frozenset({"metrics"})


class ProtocolError(ValueError):
    """A frame that is not valid under this protocol version."""


@dataclass(frozen=True)
class Frame:
    kind: str
    body: Dict[str, Any]


def encode(kind: str, body: Dict[str, Any]) -> bytes:
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    data = msgpack.packb({"v": VERSION, "kind": kind, "body": body}, use_bin_type=True)
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"{kind} frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    return data


def validate(obj: Any) -> Frame:
    """Check one unpacked object and return it as a Frame."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame is a {type(obj).__name__}, not a map")
    if obj.get("v") != VERSION:
        raise ProtocolError(f"frame version {obj.get('v')!r}, expected {VERSION}")
    kind, body = obj.get("kind"), obj.get("body")
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    if not isinstance(body, dict):
        raise ProtocolError(f"{kind} frame body is not a map")
    return Frame(kind, body)


def decode(data: bytes) -> Frame:
    """Decode exactly one frame (used for the shared-memory slots)."""
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from exc
    return validate(obj)


class StreamDecoder:
    """Turns a byte stream into frames; malformed frames are counted, never raised."""

    def __init__(self) -> None:
        self.malformed = 0
        self._new_unpacker()

    def _new_unpacker(self) -> None:
        self._unpacker = msgpack.Unpacker(
            raw=False, strict_map_key=True, max_buffer_size=2 * MAX_FRAME_BYTES
        )

    def feed(self, data: bytes) -> List[Frame]:
        frames: List[Frame] = []
        try:
            self._unpacker.feed(data)
            for obj in self._unpacker:
                try:
                    frames.append(validate(obj))
                except ProtocolError:
                    self.malformed += 1
        except (ValueError, msgpack.UnpackException, msgpack.BufferFull):
            # Garbage bytes: the stream cannot be resynchronised inside the buffer, drop it.
            self.malformed += 1
            self._new_unpacker()
        return frames
