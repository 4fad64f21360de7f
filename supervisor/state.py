"""The task's state: one enum, one table of allowed transitions, one typed status document.

The container worker owns a ``TaskMachine`` per task and moves it as the container lives; every move is
published as a ``Status`` (built only by ``TaskMachine.status``), which the parent, the publisher and
the endpoint all read back with ``Status.from_dict``. An illegal move is a bug: it is logged as one and
not applied (Supervisor's ``_assertInState``), so a wrong state never reaches etcd.

    starting ──► running ◄──► paused
       │           │  ▲          │
       │           ▼  │          │
       │       restarting        │        every live state ──► stopping ──► stopped
       ▼           ▼             ▼
     exited / failed / stopped (final; a finished record is kept keep_finished seconds)

A new worker adopting a container starts from ``starting`` without publishing it, and moves straight to
what it finds (running, paused, or an end met while nobody watched).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence

log = logging.getLogger("state")


class TaskState(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    EXITED = "exited"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES: FrozenSet[TaskState] = frozenset({TaskState.EXITED, TaskState.FAILED, TaskState.STOPPED})
LIVE_STATES: FrozenSet[TaskState] = frozenset({TaskState.RUNNING, TaskState.PAUSED})
_ENDS = FINAL_STATES | {TaskState.RESTARTING}

# What each control request (``horizon stop|pause|resume``) asks for: the state that shows it done.
CONTROL_EFFECTS: Mapping[str, TaskState] = {
    "stop": TaskState.STOPPED, "pause": TaskState.PAUSED, "resume": TaskState.RUNNING,
}

# state -> the states it may move to. Restarting may repeat (a refused start is published again with its
# new delay); nothing else moves to itself, and nothing leaves a final state.
TRANSITIONS: Mapping[TaskState, FrozenSet[TaskState]] = {
    TaskState.STARTING: frozenset({TaskState.RUNNING, TaskState.PAUSED, TaskState.STOPPING} | _ENDS),
    TaskState.RUNNING: frozenset({TaskState.PAUSED, TaskState.STOPPING} | _ENDS),
    TaskState.PAUSED: frozenset({TaskState.RUNNING, TaskState.STOPPING} | _ENDS),
    TaskState.RESTARTING: frozenset({TaskState.STARTING, TaskState.RUNNING, TaskState.PAUSED, TaskState.STOPPING} | _ENDS),
    TaskState.STOPPING: FINAL_STATES,
    TaskState.EXITED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.STOPPED: frozenset(),
}


def fresh_within(interval: float) -> float:
    """How old a live task's latest sample may be and still count as fresh: 3 intervals, at least 2 s."""
    return max(3 * interval, 2.0)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Status:
    """The status document, as published in etcd (``status``), at ``/status`` and in status frames."""

    state: TaskState
    updated_at: str
    exit_code: Optional[int] = None
    reason: Optional[str] = None
    oom_killed: bool = False
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    restarts: int = 0
    restart_in_s: Optional[float] = None  # only while restarting
    last_logs: List[str] = field(default_factory=list)  # the container's last lines, once the task ended
    # The control request the task could not act on, in the document that answers it: {id, action, reason}
    refused: Optional[Dict[str, str]] = None

    @property
    def running(self) -> bool:
        return self.state is TaskState.RUNNING

    def to_dict(self) -> Dict[str, Any]:
        document = asdict(self)
        document["state"] = self.state.value
        return document

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> "Status":
        """Read a status document back; unknown keys (a newer writer's) are ignored."""
        lines = document.get("last_logs")
        refused = document.get("refused")
        return cls(
            state=TaskState(document["state"]),
            updated_at=str(document.get("updated_at") or ""),
            exit_code=document.get("exit_code"),
            reason=document.get("reason"),
            oom_killed=bool(document.get("oom_killed")),
            started_at=document.get("started_at"),
            finished_at=document.get("finished_at"),
            restarts=int(document.get("restarts") or 0),
            restart_in_s=document.get("restart_in_s"),
            last_logs=[str(line) for line in lines] if isinstance(lines, list) else [],
            refused={str(k): str(v) for k, v in refused.items()} if isinstance(refused, dict) else None,
        )

    def settles(self, action: str, request_id: str) -> bool:
        """Whether this document closes a control request: its effect shows, the task refused it, or the
        task ended (nothing more will come of it). Until then the request is kept, to be acted on again
        by whoever takes over (a restarted worker, a restarted supervisor)."""
        if self.state.final or self.state is CONTROL_EFFECTS[action]:
            return True
        return self.refused is not None and bool(request_id) and self.refused.get("id") == request_id


@dataclass(frozen=True)
class Ended:
    """How a run of the container ended, before a state is chosen for it (the restart policy may)."""

    state: TaskState  # exited, failed or stopped
    exit_code: Optional[int]
    reason: str
    oom_killed: bool = False
    started_at: Optional[str] = None
    finished_at: Optional[str] = None


class TaskMachine:
    """One task's state, moved only along ``TRANSITIONS``."""

    def __init__(self, restarts: int = 0) -> None:
        self.state = TaskState.STARTING
        self.restarts = restarts
        self.started_at: Optional[str] = None

    def move(self, to: TaskState) -> bool:
        """Apply a transition; an illegal one is logged as a bug and refused (False)."""
        if to not in TRANSITIONS[self.state]:
            log.error("bug: illegal task state transition %s -> %s (refused)", self.state.value, to.value)
            return False
        self.state = to
        return True

    def status(self, ended: Optional[Ended] = None, restart_in_s: Optional[float] = None,
               last_logs: Sequence[str] = ()) -> Status:
        """The document of the current state; ``ended`` carries the run's end for final and restarting,
        ``last_logs`` the container's last lines, kept in a final document only (``[]`` while it lives)."""
        if ended is None:
            return Status(state=self.state, updated_at=utc_now(), started_at=self.started_at, restarts=self.restarts)
        return Status(
            state=self.state, updated_at=utc_now(), exit_code=ended.exit_code, reason=ended.reason,
            oom_killed=ended.oom_killed, started_at=ended.started_at or self.started_at,
            finished_at=ended.finished_at or utc_now(), restarts=self.restarts, restart_in_s=restart_in_s,
            last_logs=list(last_logs) if self.state.final else [],
        )
