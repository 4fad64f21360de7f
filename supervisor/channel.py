"""One-way frame channels between the supervisor's processes: a pipe carrying a msgpack frame stream.

Why pipes and not ``multiprocessing.Queue``: a Queue's reader and writer locks are process-shared
semaphores, and a reader blocked in ``get()`` holds one; a worker SIGKILLed then wedges the queue for
every later process. Its feeder thread also makes the parent unsafe to fork. Here each link of each
worker generation gets a fresh pipe from the parent, with exactly one writer and one reader, so there
is no lock to lose and a killed worker never leaves a half-written frame for its successor.

The writing end never blocks its caller: frames wait in an ``Outbox``, metrics frames coalesce (only
the newest unsent one per task is kept, so a stalled reader costs at most one frame per task), other frames
are kept in order and never dropped; ``flush()`` writes what the pipe takes and resumes partial writes.
"""

from __future__ import annotations

import os
import queue
from collections import deque
from typing import Any, Deque, Dict, Generic, List, Optional, Tuple, TypeVar

from supervisor import frames
from supervisor.frames import TaskKey


T = TypeVar("T")


class Handover(Generic[T]):
    """Items handed from threads to a loop that selects on ``fd``: readable while some wait for ``take``."""

    def __init__(self) -> None:
        self.fd, self._wake = pipe()
        self._items: "queue.SimpleQueue[T]" = queue.SimpleQueue()

    def put(self, item: T) -> None:
        self._items.put(item)
        self.poke()

    def poke(self) -> None:
        """Make ``fd`` readable (a full pipe is readable already)."""
        try:
            os.write(self._wake, b"!")
        except BlockingIOError:
            pass

    def take(self) -> List[T]:
        """Every item handed over since the last call."""
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        taken = []
        while not self._items.empty():
            taken.append(self._items.get_nowait())
        return taken

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._wake)


def pipe() -> Tuple[int, int]:
    """A (read_fd, write_fd) pair, both non-blocking."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


class Outbox:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._ordered: Deque[bytes] = deque()
        self._coalescing: Dict[Tuple[TaskKey, str], bytes] = {}
        self._partial = memoryview(b"")
        self.coalesced = 0

    def send(self, kind: str, task: TaskKey, body: Dict[str, Any]) -> None:
        """Queue a frame and write what the pipe takes now. Raises BrokenPipeError if the reader is gone."""
        self.send_encoded(kind, task, frames.encode(kind, task, body))

    def send_encoded(self, kind: str, task: TaskKey, data: bytes) -> None:
        if kind in frames.COALESCING_KINDS:
            if (task, kind) in self._coalescing:
                self.coalesced += 1
            self._coalescing[(task, kind)] = data
        else:
            self._ordered.append(data)
        self.flush()

    @property
    def pending(self) -> bool:
        return bool(self._partial or self._ordered or self._coalescing)

    def _next(self) -> Optional[bytes]:
        if self._ordered:
            return self._ordered.popleft()
        if self._coalescing:
            return self._coalescing.pop(next(iter(self._coalescing)))
        return None

    def flush(self) -> bool:
        """Write as much as the pipe takes; True when nothing is left to write."""
        while True:
            if not self._partial:
                data = self._next()
                if data is None:
                    return True
                self._partial = memoryview(data)
            try:
                written = os.write(self.fd, self._partial)
            except BlockingIOError:
                return False
            self._partial = self._partial[written:]

    def close(self) -> None:
        os.close(self.fd)


class Inbox:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.eof = False
        self._decoder = frames.StreamDecoder()

    def fileno(self) -> int:
        return self.fd

    @property
    def malformed(self) -> int:
        return self._decoder.malformed

    def read(self) -> List[frames.Frame]:
        """Every complete frame available now, without blocking; sets ``eof`` when the writer is gone."""
        received: List[frames.Frame] = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return received
            if not data:
                self.eof = True
                return received
            received.extend(self._decoder.feed(data))

    def close(self) -> None:
        os.close(self.fd)
