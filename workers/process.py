"""What every worker process does first, how it notices its parent is gone, and how it shows progress.

Exit codes (``supervisor.link``) tell the parent why a worker ended; its heartbeat tells the parent
that it still makes progress (gunicorn's worker timeout). A worker promises its next beat within a
short ``period`` while it loops, and wraps a call that may legitimately take longer (an etcd request:
twice its timeout; a Docker call; a container stop) in ``Pulse.busy``, whose thread beats until then.
The parent kills a worker that is past its promise by more than a grace, and restarts it.
"""

from __future__ import annotations

import logging
import os
import resource
import select
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional, Protocol

from supervisor.channel import Inbox, Outbox
from supervisor.link import BEAT_SLACK, WorkerStart
from supervisor.logs import configure_logging
from supervisor.shm import Heartbeat



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


class Pulse:
    """The worker side of its heartbeat: ``beat()`` on every turn of its loop, ``busy(s)`` around a wait.

    Inside ``busy(s)`` a thread of the pulse's own beats every period, until ``s`` seconds have passed
    (``extend`` renews them, for a wait made of bounded steps such as an image pull). So a worker in a
    legitimate wait keeps its heartbeat, one in a wait past its bound loses it, and a stopped worker (its
    threads stop with it) is found as fast as in its loop."""

    def __init__(self, heartbeat: Heartbeat, period: float) -> None:
        self.heartbeat = heartbeat
        self.period = period
        self._busy_until = 0.0
        self._spanning = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def beat(self) -> None:
        self.heartbeat.promise(self.period + BEAT_SLACK)

    def extend(self, seconds: float) -> None:
        """The wait under way may go on for ``seconds`` more."""
        self._busy_until = time.monotonic() + seconds

    @contextmanager
    def busy(self, seconds: float) -> Iterator[None]:
        self.extend(seconds)
        self.beat()
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat_while_busy, name="pulse", daemon=True)
            self._thread.start()
        self._spanning.set()
        try:
            yield
        finally:
            self._spanning.clear()
            self._busy_until = 0.0
            self.beat()

    def _beat_while_busy(self) -> None:
        while True:
            self._spanning.wait()
            time.sleep(self.period)
            if self._spanning.is_set() and time.monotonic() < self._busy_until:
                self.beat()


class Worker:
    """What every worker has once set up: its pipes, a watch on its parent, and its pulse."""

    def __init__(self, start: WorkerStart, period: float) -> None:
        self.inbox = Inbox(start.inbox_fd)
        self.outbox = Outbox(start.outbox_fd)
        self.watch = ParentWatch()
        self.pulse = Pulse(start.heartbeat, period)
        self.pulse.beat()


class Link(Protocol):
    """What a worker's loop works through: a ``Worker``'s, or in a host tree one task's share of it."""

    @property
    def inbox(self) -> Inbox: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def watch(self) -> ParentWatch: ...

    @property
    def pulse(self) -> Pulse: ...


def raise_fd_limit() -> None:
    """A worker serving many tasks holds descriptors for each (pipes, engine connections, cgroup files):
    take the whole of what the host allows (systemd's hard limit is 512k; the soft one, 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def drain(outbox: Outbox, pulse: Pulse, timeout: float) -> None:
    """Hand every pending frame to the parent before exiting (it reads continuously), beating meanwhile."""
    deadline = time.monotonic() + timeout
    while not outbox.flush() and time.monotonic() < deadline:
        pulse.beat()
        select.select([], [outbox.fd], [], min(pulse.period, max(0.0, deadline - time.monotonic())))


def become_worker(start: WorkerStart, period: float) -> Worker:
    """Reset what the fork inherited from the parent (signal handlers, wakeup fd, the parent's pipe
    ends), set up logging and the process name, and beat once: the worker is up."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)
    # Ctrl-C, `pkill -f` and `kill -- -PGID` reach every process of the group; only the parent decides
    # what a stop (or a reload: SIGHUP) means. Workers end when the parent tells them to, or when their
    # inbox reaches EOF (the parent closed it, or died).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    for fd in start.parent_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    configure_logging(start.log_level)
    name_process(f"hz-{start.role}")
    logging.getLogger(start.role).debug("worker started")
    return Worker(start, period)
