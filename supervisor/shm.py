"""Shared memory: each task's latest documents, and each worker's heartbeat. One writer per slot, any
number of readers, no locks.

The mapping is an anonymous shared ``mmap`` made by the parent before it forks its workers, so every
process (and every restarted worker) sees the same pages, and nothing is ever left in /dev/shm: the
pages go away with the last process, even after SIGKILL (a named ``multiprocessing.shared_memory``
segment would outlive a killed parent and needs a resource-tracker process besides).

Layout: one page of heartbeats (a monotonic deadline per worker role, 8 bytes each), a report slot per
process (the parent's and each role's: supervisor/selfstats.py), then for every task
its ``metrics``, ``status`` and ``info`` slots and its history: a ring of ``history`` small slots, one per
sample (``seq % history``), each holding that sample's container figures (what a chart draws), so the
last samples survive an endpoint restart and cost a bounded 280 bytes each. Each slot is a seqlock with
a checksum::

    [seq: u64][length: u32][crc32: u32][written_at: f64][payload: capacity bytes]

The writer makes ``seq`` odd, writes payload, length, crc and time, then makes ``seq`` even again. A
reader copies length and payload between two reads of ``seq``; it retries when ``seq`` was odd or
changed, or when the crc does not match (the crc covers CPUs that reorder stores, where Python has no
barrier). Readers never block the writer; a reader that keeps losing the race gives up and reports no
change. ``written_at`` (monotonic) tells the parent how fresh a sample is without decoding it.

Every word another process reads outside a slot's seqlock (a heartbeat, ``seq``, ``written_at``) is
stored through a typed ``memoryview`` (one 8-byte store), never with ``struct.pack_into``: that zeroes
its bytes before writing them, and a reader in another process saw 0.000 there (a heartbeat "due at 0"
got a healthy worker killed as hung; measured: 5% of reads during back-to-back writes).
"""

from __future__ import annotations

import mmap
import struct
import time
import zlib
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import msgpack

from supervisor import frames
from supervisor.frames import TaskKey

_HEADER = struct.Struct("=QIId")  # seq, length, crc32, written_at
_SIZES = struct.Struct("=II")  # length and crc32, read only between two reads of seq
_SIZES_OFFSET = 8
_STAMP_OFFSET = 16
_WORD = 8
_READ_ATTEMPTS = 100
HEARTBEAT_PAGE = 4096

SLOT_CAPACITY = {"metrics": frames.MAX_FRAME_BYTES, "status": 64 * 1024, "info": 64 * 1024}
# A history entry: the sample's number and time, then the container figures, in this order.
HISTORY_FIELDS = ("cpu_percent", "cpu_seconds", "memory_bytes", "memory_limit_bytes", "pids", "net_rx_bytes",
                  "net_tx_bytes", "blkio_read_bytes", "blkio_write_bytes")
HISTORY_ENTRY = 256
REPORT_CAPACITY = 4096
REPORT_PER_TASK = 256  # a task's line in the publisher's report: its path (up to 127 characters) and two figures


class Slot:
    def __init__(self, buf: memoryview, name: str) -> None:
        self._buf = buf
        self._seq = buf[:_WORD].cast("Q")
        self._stamp = buf[_STAMP_OFFSET:_STAMP_OFFSET + _WORD].cast("d")
        self.name = name
        self.capacity = len(buf) - _HEADER.size

    @property
    def seq(self) -> int:
        """How many times the slot was written (x2); cheap enough to poll for changes."""
        seq: int = self._seq[0]
        return seq

    @property
    def written_at(self) -> float:
        """When the slot was last written (monotonic seconds; 0.0 when never)."""
        stamp: float = self._stamp[0]
        return stamp

    def write(self, data: bytes) -> None:
        if len(data) > self.capacity:
            raise frames.ProtocolError(
                f"{self.name} document of {len(data)} bytes exceeds its {self.capacity}-byte slot"
            )
        seq = self._seq[0]
        self._seq[0] = seq + 1
        self._buf[_HEADER.size:_HEADER.size + len(data)] = data
        _SIZES.pack_into(self._buf, _SIZES_OFFSET, len(data), zlib.crc32(data))
        self._stamp[0] = time.monotonic()
        self._seq[0] = seq + 2

    def clear(self) -> None:
        self._stamp[0] = 0.0
        self._seq[0] = 0

    def read(self) -> Tuple[int, Optional[bytes]]:
        """Return (seq, payload); payload is None when the slot was never written."""
        for _ in range(_READ_ATTEMPTS):
            seq, length, crc, _ = _HEADER.unpack_from(self._buf, 0)
            if seq == 0:
                return 0, None
            if seq % 2 or length > self.capacity:
                continue
            data = bytes(self._buf[_HEADER.size:_HEADER.size + length])
            if self._seq[0] == seq and zlib.crc32(data) == crc:
                return seq, data
        return self.seq, None

    def read_frame(self) -> Optional[frames.Frame]:
        data = self.read()[1]
        return None if data is None else frames.decode(data)

    def write_frame(self, kind: str, task: TaskKey, body: Dict[str, object]) -> bytes:
        data = frames.encode(kind, task, body)
        self.write(data)
        return data


class History:
    """The last samples of one task, a ring of ``count`` small slots: one writer (the container worker), any
    readers. A slot's object is made when it is used (a host tree maps 600 for each of hundreds of blocks:
    made all at once, they cost ~100 MB)."""

    def __init__(self, ring: memoryview, count: int) -> None:
        self._ring = ring
        self.count = count
        self._entry = len(ring) // count if count else 0

    def slot(self, index: int) -> Slot:
        return Slot(self._ring[index * self._entry:(index + 1) * self._entry], "history")

    def append(self, seq: int, timestamp: float, container: Mapping[str, Any]) -> None:
        if self.count:
            entry = [seq, timestamp, *(container.get(name) for name in HISTORY_FIELDS)]
            self.slot(seq % self.count).write(msgpack.packb(entry))

    def since(self, after: int) -> List[Dict[str, Any]]:
        """The samples kept whose seq is above ``after``, oldest first."""
        found = []
        for index in range(self.count):
            data = self.slot(index).read()[1]
            if data is None:
                continue
            seq, timestamp, *figures = msgpack.unpackb(data)
            if seq > after:
                found.append({"seq": seq, "timestamp": timestamp, **dict(zip(HISTORY_FIELDS, figures))})
        found.sort(key=lambda sample: sample["seq"])
        return found

    def clear(self) -> None:
        for index in range(self.count):
            self.slot(index).clear()


class TaskSlots:
    """One task's latest documents (``metrics``, ``status`` and ``info``) and its history."""

    def __init__(self, key: TaskKey, slots: Dict[str, Slot], history: History) -> None:
        self.key = key
        self.slots = slots
        self.history = history

    @property
    def metrics(self) -> Slot:
        return self.slots["metrics"]

    @property
    def status(self) -> Slot:
        return self.slots["status"]

    @property
    def info(self) -> Slot:
        return self.slots["info"]


class Heartbeat:
    """A worker's promise: it shows progress again before ``due`` (monotonic seconds, comparable across
    processes). The worker moves it forward as it works; the parent reads it to find a hung worker."""

    def __init__(self, buf: memoryview) -> None:
        self._due = buf.cast("d")

    @property
    def due(self) -> float:
        due: float = self._due[0]
        return due

    def promise(self, seconds: float) -> None:
        """Progress again within ``seconds`` from now (one aligned 8-byte store)."""
        self._due[0] = time.monotonic() + seconds


class SharedMemory:
    """The heartbeats of the worker roles, each process's report and the blocks of task slots, in one
    anonymous mapping.

    A task tree knows its tasks before the fork: each has a block from the start (``tasks``). A host tree
    takes tasks on and lets them go while its workers run, and a mapping made after the fork would not
    be shared: it maps ``capacity`` blocks at once (untouched pages cost no memory) and the parent says
    which task has which block (``attach``, in the ``task`` frame)."""

    def __init__(self, roles: Iterable[str], tasks: Iterable[TaskKey] = (), history: int = 0, capacity: int = 0) -> None:
        """``history``: how many samples each task's ring keeps (0: none); ``capacity``: blocks in all
        (at least one per task given)."""
        roles, tasks = list(roles), list(tasks)
        if len(roles) * _WORD > HEARTBEAT_PAGE:
            raise ValueError(f"{len(roles)} heartbeats do not fit in one page")
        count = max(capacity, len(tasks))
        report = _HEADER.size + REPORT_CAPACITY + REPORT_PER_TASK * count  # the publisher's names each task
        names = ["supervisor", *roles]
        entry = _HEADER.size + HISTORY_ENTRY
        per_task = sum(_HEADER.size + capacity for capacity in SLOT_CAPACITY.values()) + history * entry
        self._map = mmap.mmap(-1, HEARTBEAT_PAGE + report * len(names) + per_task * count, flags=mmap.MAP_SHARED)
        view = memoryview(self._map)
        self.heartbeats = {
            role: Heartbeat(view[i * _WORD:(i + 1) * _WORD]) for i, role in enumerate(roles)
        }
        offset = HEARTBEAT_PAGE
        self.reports = {name: Slot(view[offset + i * report:offset + (i + 1) * report], f"{name} report")
                        for i, name in enumerate(names)}
        offset += report * len(names)
        self._view, self._blocks_at, self._per_task, self._history = view, offset, per_task, history
        self.capacity = count
        self.tasks: Dict[TaskKey, TaskSlots] = {}
        for index, key in enumerate(tasks):
            self.attach(key, index)

    def block(self, index: int) -> Tuple[Dict[str, Slot], History]:
        """Block ``index``'s slots, made when asked (a process makes only those of the tasks it serves)."""
        if not 0 <= index < self.capacity:
            raise IndexError(f"block {index} of {self.capacity}")
        offset = self._blocks_at + index * self._per_task
        slots = {}
        for name, size in SLOT_CAPACITY.items():
            slots[name] = Slot(self._view[offset:offset + _HEADER.size + size], name)
            offset += _HEADER.size + size
        ring = self._view[offset:offset + self._history * (_HEADER.size + HISTORY_ENTRY)]
        return slots, History(ring, self._history)

    def attach(self, key: TaskKey, index: int) -> TaskSlots:
        """The task's slots are block ``index`` from now on (in this process)."""
        slots, history = self.block(index)
        self.tasks[key] = TaskSlots(key, slots, history)
        return self.tasks[key]

    def detach(self, key: TaskKey) -> None:
        self.tasks.pop(key, None)

    def clear(self, index: int) -> None:
        """Make block ``index`` read as never written, for the next task to take it (the parent does,
        once no worker writes it any more)."""
        slots, history = self.block(index)
        for slot in slots.values():
            slot.clear()
        history.clear()
