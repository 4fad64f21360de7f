"""How the supervisor ends, and with which exit status: one object instead of a handful of flags.

    RUNNING ──a stop (signal; publisher or endpoint gave up)──► STOPPING ──container's end──► FINISHING ──► DONE
       └──── the task ended, cannot start or cannot register (required etcd), the container worker gave up ──┘

STOPPING and FINISHING have a deadline each (the conductor sets it), so no wait on a worker is unbounded.
The exit status comes from what was recorded on the way: the first failure (exit 1), a stop that was
asked for (exit 0), or the task's own end (its exit code).
"""

from __future__ import annotations

import enum
from typing import Optional

from supervisor.state import Status, TaskState

EXIT_ERROR = 1


class StartupError(Exception):
    """The supervisor cannot start: one line, and ``code`` is the exit status (2: a mistake in the input)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Phase(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHING = "finishing"
    DONE = "done"


class Ending:
    def __init__(self) -> None:
        self.phase = Phase.RUNNING
        self.deadline: Optional[float] = None
        self.stop_reason: Optional[str] = None  # who asked for the stop (a signal's name, ...)
        self.failure: Optional[str] = None  # the first failure: the line printed at exit, status 1
        self.status: Optional[Status] = None  # the task's latest status

    @property
    def stop_requested(self) -> bool:
        return self.stop_reason is not None

    def request_stop(self, why: str) -> bool:
        """Record a stop request; False when one was already recorded."""
        if self.stop_requested:
            return False
        self.stop_reason = why
        return True

    def stopping(self, deadline: float) -> None:
        if self.phase is Phase.RUNNING:
            self.phase, self.deadline = Phase.STOPPING, deadline

    def finishing(self, deadline: float) -> bool:
        """Enter FINISHING; False when already there or done."""
        if self.phase in (Phase.FINISHING, Phase.DONE):
            return False
        self.phase, self.deadline = Phase.FINISHING, deadline
        return True

    def done(self) -> None:
        self.phase, self.deadline = Phase.DONE, None

    def fail(self, message: str) -> None:
        """Record a failure: the first one is the line printed at exit."""
        if self.failure is None:
            self.failure = message

    def exit_code(self) -> int:
        if self.failure:
            return EXIT_ERROR
        state = self.status.state if self.status else None
        if state is TaskState.STOPPED or (state is None and self.stop_requested):  # stopped before the container existed
            return 0
        code = self.status.exit_code if self.status else None
        if state is TaskState.FAILED and code == 0:  # e.g. restart = always gave up on a task that exits 0
            return EXIT_ERROR
        return code if isinstance(code, int) and 0 <= code < 256 else EXIT_ERROR
