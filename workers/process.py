"""What every worker process does first, and how it tells the parent why it ended.

Exit codes are the worker-to-parent error channel (as in gunicorn): the parent restarts a worker that
crashed, but never one that ended with ``EXIT_DONE`` or ``EXIT_FATAL``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Iterable

EXIT_DONE = 0  # finished its job: the task's end is recorded, or the final record is written
EXIT_FATAL = 3  # a user-facing error was sent in an ``error`` frame; restarting cannot help
EXIT_ORPHANED = 4  # the parent is gone

LOG_FORMAT = "%(asctime)s horizon[%(process)d] %(name)s %(levelname)s %(message)s"


def configure_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # python-etcd logs every failed request at ERROR; the publisher reports outages itself.
    logging.getLogger("etcd").setLevel(logging.CRITICAL)
    for chatty in ("urllib3", "docker", "asyncio"):
        logging.getLogger(chatty).setLevel(max(level, logging.INFO))


def name_process(title: str) -> None:
    """Show the worker's role in ps/top (the kernel's 15-character comm field)."""
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as handle:
            handle.write(title[:15])
    except OSError:
        pass


class ParentWatch:
    """Notices when the parent is gone (we are re-parented): workers poll it on every loop."""

    def __init__(self) -> None:
        self.ppid = os.getppid()

    def gone(self) -> bool:
        return os.getppid() != self.ppid


def become_worker(name: str, log_level: int, parent_fds: Iterable[int]) -> ParentWatch:
    """Reset what the fork inherited from the parent: signal handlers, wakeup fd, the parent's pipe ends."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)
    # Ctrl-C, `pkill -f` and `kill -- -PGID` reach every process of the group; only the parent decides
    # what a stop means. Workers end when the parent tells them to, or when their inbox reaches EOF
    # (the parent closed it, or died).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    for fd in parent_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    configure_logging(log_level)
    name_process(f"hz-{name}")
    logging.getLogger(name).debug("worker started")
    return ParentWatch()
