"""The task's last metrics seq on the host, so that a supervisor restarted after SIGKILL goes on
numbering samples where the dead one stopped: readers of /metrics and etcd see ``seq`` only grow for one
task, never start again at 1. Written by the container worker alone, in the run directory beside the lock."""

from __future__ import annotations

import os
from typing import Optional

from supervisor.config import Config
from supervisor.lock import task_path


class SeqFile:
    """The task's last metrics seq, rewritten in place after every sample (a pwrite: no fsync, no rename;
    it only has to outlive the processes, not the host). Written by the container worker alone."""

    WIDTH = 20

    def __init__(self, config: Config) -> None:
        self.path = task_path(config, "seq")
        self.fd: Optional[int] = None

    def load(self) -> int:
        """The seq a previous supervisor of this task reached, or 0."""
        try:
            with open(self.path, "rb") as handle:
                return int(handle.read(self.WIDTH + 1) or 0)
        except (OSError, ValueError):
            return 0

    def store(self, seq: int) -> None:
        """Best effort: if the file cannot be written, a restarted supervisor only starts again at 1."""
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.pwrite(self.fd, f"{seq:{self.WIDTH}d}\n".encode(), 0)
        except OSError:
            pass

    def remove(self) -> None:
        """The task's end is recorded: the next run of this task starts a new series."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
