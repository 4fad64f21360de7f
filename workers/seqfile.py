"""The task's last metrics seq on the host, so that a supervisor restarted after SIGKILL goes on
numbering samples where the dead one stopped: readers of /metrics and etcd see ``seq`` only grow for one
task, never start again at 1. Written by the container worker alone, in the run directory beside the lock."""

from __future__ import annotations

import mmap
import os
from typing import Optional

from supervisor.config import Config
from supervisor.lock import task_path


class SeqFile:
    """The task's last metrics seq, as decimal text in a small file mapped into memory: storing a seq is a
    memory write, no system call. The page cache keeps it when the process dies (no fsync: it only has to
    outlive the processes, not the host)."""

    WIDTH = 20

    def __init__(self, config: Config) -> None:
        self.path = task_path(config, "seq")
        self._map: Optional[mmap.mmap] = None

    def load(self) -> int:
        """The seq a previous supervisor of this task reached, or 0."""
        try:
            with open(self.path, "rb") as handle:
                return int(handle.read(self.WIDTH + 1) or 0)
        except (OSError, ValueError):
            return 0

    def store(self, seq: int) -> None:
        """Best effort: if the file cannot be written, a restarted supervisor only starts again at 1."""
        if self._map is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    os.ftruncate(fd, self.WIDTH + 1)
                    self._map = mmap.mmap(fd, self.WIDTH + 1)
                finally:
                    os.close(fd)
            except OSError:
                return
        self._map[:] = b"%*d\n" % (self.WIDTH, seq)

    def remove(self) -> None:
        """The task's end is recorded: the next run of this task starts a new series."""
        if self._map is not None:
            self._map.close()
            self._map = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
