"""When to restart a worker that died: an explicit state machine, as in Supervisor's process states.

    RUNNING --died--> BACKOFF --delay passed--> RUNNING (restarted)
                 \\--> FATAL   (more than ``max_tries`` deaths in a row: the supervisor gives up)

A worker that stayed up ``stable_after`` seconds starts a fresh series of tries. Delays double from
``first_delay`` up to ``max_delay``, so a restarted worker is back within a fraction of a second,
while a worker that dies at once on every start is not restarted forever.

The same machine restarts a task's container (workers/container.py), where the series must outlive the
process that keeps it: ``carried`` is the series as it stands, ``resume`` goes on with it in another
process. Its times are ``time.monotonic()``'s, the host's one clock since boot in every process.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional


class State(enum.Enum):
    RUNNING = "running"
    BACKOFF = "backoff"
    FATAL = "fatal"


@dataclass(frozen=True)
class Policy:
    max_tries: int = 5
    first_delay: float = 0.1
    max_delay: float = 2.0
    stable_after: float = 10.0


class Restarts:
    def __init__(self, policy: Policy = Policy()) -> None:
        self.policy = policy
        self.state = State.RUNNING
        self.tries = 0
        self.started_at: Optional[float] = None  # never started: nothing to forgive (not "up since boot")
        self.restart_at: Optional[float] = None

    def started(self, now: float) -> None:
        self.state = State.RUNNING
        self.started_at = now
        self.restart_at = None

    def died(self, now: float) -> State:
        """Record a death; BACKOFF sets ``restart_at``, FATAL means give up."""
        if self.started_at is not None and now - self.started_at >= self.policy.stable_after:
            self.tries = 0
        self.tries += 1
        if self.tries > self.policy.max_tries:
            self.state = State.FATAL
            self.restart_at = None
        else:
            self.state = State.BACKOFF
            delay = min(self.policy.first_delay * 2 ** (self.tries - 1), self.policy.max_delay)
            self.restart_at = now + delay
        return self.state

    def carried(self) -> Dict[str, Any]:
        """The series as it stands: the tries in a row, when the last run began, when the restart is due."""
        return {"tries": self.tries, "started_at": self.started_at, "restart_at": self.restart_at}

    def resume(self, carried: Mapping[str, Any]) -> None:
        """Go on with a series another process kept (its ``carried()``): backing off while a restart is due."""
        self.tries = int(carried.get("tries") or 0)
        started_at, restart_at = carried.get("started_at"), carried.get("restart_at")
        self.started_at = float(started_at) if started_at is not None else None
        self.restart_at = float(restart_at) if restart_at is not None else None
        self.state = State.RUNNING if self.restart_at is None else State.BACKOFF

    def due(self, now: float) -> bool:
        return self.state is State.BACKOFF and self.restart_at is not None and now >= self.restart_at
