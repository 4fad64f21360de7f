"""One supervisor per task on a host: the task's lock file, in the run directory.

One supervisor per task: an advisory lock file that the kernel releases when we die. Adopting a
running container by its labels is only safe if nobody else is supervising it; the lock makes a
second supervisor of the same task (the same config file started twice) fail at once, while a
supervisor restarted after SIGKILL (by systemd's Restart=) gets the lock straight away.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from typing import Optional

from supervisor.config import Config


def lock_dir() -> str:
    explicit = os.environ.get("HORIZON_RUN_DIR")
    if explicit:
        return explicit
    if os.access("/run", os.W_OK):
        return "/run/horizon"
    return os.path.join(tempfile.gettempdir(), f"horizon-{os.getuid()}")


def task_path(config: Config, suffix: str) -> str:
    return os.path.join(lock_dir(), f"{config.task.service}.{config.task.name}.{suffix}")


class AlreadySupervised(Exception):
    pass


class TaskLock:
    """The lock file is removed when the lock is released, so a host does not collect one file per task
    ever run; a killed supervisor leaves it, and the next supervisor of the task locks it again."""

    def __init__(self, config: Config) -> None:
        self.path = task_path(config, "lock")
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise AlreadySupervised(f"another supervisor (pid {holder}) runs this task; see {self.path}") from None
            if self._still_linked(fd):
                break
            os.close(fd)  # its holder removed it between our open and our lock: lock the new file
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def _still_linked(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # while still holding the lock: see _still_linked
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None
