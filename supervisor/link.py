"""What passes between the parent and a worker outside frames: what a worker is given when it is
forked, and the exit code it leaves (as in gunicorn, the child-to-parent error channel). The parent
restarts a worker that crashed or hung, but never one that ended with ``EXIT_DONE`` or ``EXIT_FATAL``,
so a worker that cannot succeed is not restarted forever."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from supervisor.shm import Heartbeat

# Heartbeats (supervisor/shm.py): a worker's loop turns at least every MAX_WAIT seconds, and each beat
# promises the next one within the loop's period and BEAT_SLACK.
MAX_WAIT = 0.5
BEAT_SLACK = 0.2

STOP_GRACE = 20.0  # seconds beyond stop_timeout the parent gives the container worker to report a stop

EXIT_DONE = 0  # finished its job: the task's end is recorded, or the final record is written
EXIT_FATAL = 3  # a user-facing error was sent in an ``error`` frame; restarting cannot help
EXIT_ORPHANED = 4  # the parent is gone


@dataclass(frozen=True)
class WorkerStart:
    """Every worker's first argument: its pipe ends, the parent's descriptors to close, how to log, and
    its heartbeat in shared memory."""

    role: str
    inbox_fd: int  # frames from the parent
    outbox_fd: int  # frames to the parent
    parent_fds: Tuple[int, ...]
    log_level: int
    heartbeat: Heartbeat
