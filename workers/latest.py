"""The latest documents, in shared memory: one writer, any number of readers, no locks.

The mapping is an anonymous shared ``mmap`` made by the parent before it forks its workers, so every
process (and every restarted worker) sees the same pages, and nothing is ever left in /dev/shm: the
pages go away with the last process, even after SIGKILL (a named ``multiprocessing.shared_memory``
segment would outlive a killed parent and needs a resource-tracker process besides).

Each slot is a seqlock with a checksum::

    [seq: u64][length: u32][crc32: u32][payload: capacity bytes]

The writer makes ``seq`` odd, writes payload, length and crc, then makes ``seq`` even again. A reader
copies length and payload between two reads of ``seq``; it retries when ``seq`` was odd or changed, or
when the crc does not match (the crc covers CPUs that reorder stores, where Python has no barrier).
Readers never block the writer; a reader that keeps losing the race gives up and reports no change.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from typing import Dict, Optional, Tuple

from workers import frames

_HEADER = struct.Struct("=QII")
_SEQ = struct.Struct("=Q")
_READ_ATTEMPTS = 100

SLOT_CAPACITY = {"metrics": frames.MAX_FRAME_BYTES, "status": 64 * 1024, "info": 64 * 1024}


class Slot:
    def __init__(self, buf: memoryview, name: str) -> None:
        self._buf = buf
        self.name = name
        self.capacity = len(buf) - _HEADER.size

    @property
    def seq(self) -> int:
        """How many times the slot was written (x2); cheap enough to poll for changes."""
        return _SEQ.unpack_from(self._buf, 0)[0]

    def write(self, data: bytes) -> None:
        if len(data) > self.capacity:
            raise frames.ProtocolError(
                f"{self.name} document of {len(data)} bytes exceeds its {self.capacity}-byte slot"
            )
        seq = self.seq
        _SEQ.pack_into(self._buf, 0, seq + 1)
        self._buf[_HEADER.size:_HEADER.size + len(data)] = data
        _HEADER.pack_into(self._buf, 0, seq + 1, len(data), zlib.crc32(data))
        _SEQ.pack_into(self._buf, 0, seq + 2)

    def read(self) -> Tuple[int, Optional[bytes]]:
        """Return (seq, payload); payload is None when the slot was never written."""
        for _ in range(_READ_ATTEMPTS):
            seq, length, crc = _HEADER.unpack_from(self._buf, 0)
            if seq == 0:
                return 0, None
            if seq % 2 or length > self.capacity:
                continue
            data = bytes(self._buf[_HEADER.size:_HEADER.size + length])
            if _SEQ.unpack_from(self._buf, 0)[0] == seq and zlib.crc32(data) == crc:
                return seq, data
        return self.seq, None

    def read_frame(self) -> Optional[frames.Frame]:
        data = self.read()[1]
        return None if data is None else frames.decode(data)

    def write_frame(self, kind: str, body: Dict) -> bytes:
        data = frames.encode(kind, body)
        self.write(data)
        return data


class Latest:
    """The shared slots: ``metrics``, ``status`` and ``info``."""

    def __init__(self) -> None:
        sizes = {name: _HEADER.size + cap for name, cap in SLOT_CAPACITY.items()}
        self._map = mmap.mmap(-1, sum(sizes.values()), flags=mmap.MAP_SHARED)
        view = memoryview(self._map)
        offset = 0
        self.slots: Dict[str, Slot] = {}
        for name, size in sizes.items():
            self.slots[name] = Slot(view[offset:offset + size], name)
            offset += size

    @property
    def metrics(self) -> Slot:
        return self.slots["metrics"]

    @property
    def status(self) -> Slot:
        return self.slots["status"]

    @property
    def info(self) -> Slot:
        return self.slots["info"]
