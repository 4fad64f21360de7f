"""The chaos soak's plan: its tasks and every fault, drawn up front from ``random.Random(seed)`` alone.

The plan depends on the seed, the length and the number of tasks only, never on the machine, the etcd
API or what happens during the run, so the same seed gives the same schedule (``python -m bench chaos
--plan`` prints it, with a digest to compare). While drawing, the plan keeps a simulated view of the
fleet (whose supervisor is down, which task is paused or stopped, which etcd member is disturbed), so it
asks for faults that make sense at their time: a worker of a supervisor that is up, one etcd member
disturbed at a time (quorum is always kept), the same worker not hit again within 12 s (horizon gives a
worker up after 6 deaths within 10 s each, by design), no supervisor killed while one of its workers is
SIGSTOPped (the frozen worker could not notice; anything else may overlap, a control request and a hung
worker included). At run time a fault whose target is not there (a task the restart policy is
restarting, a worker being restarted) is skipped and logged as such.

Kinds (the issue's list): kill -9 of a worker; SIGSTOP of a worker for 1-5 s; kill -9 of a supervisor,
restarted with the same task file after 1-4 s as systemd would; SIGSTOP of an etcd member for 2-12 s;
kill -9 of an etcd member, restarted on the same data directory after 1-8 s; ``horizon pause`` (its
``resume`` 3-15 s later, planned as a fault of its own) and ``horizon stop`` (the supervisor started
again 4-15 s later, as an operator would); a restart of the Docker engine (live-restore), down 0-4 s, at
most once every 45 s.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

ROLES = ("container", "publisher", "endpoint")
KINDS = ("kill-worker", "stop-worker", "kill-supervisor", "freeze-etcd", "kill-etcd", "control", "engine-restart")
WEIGHTS = (4, 3, 2, 3, 2, 3, 1)
MEMBERS = 3
GAP = (3.0, 8.0)  # seconds between two drawn faults
WORKER_REST = 12.0  # the same worker is not hit again sooner (horizon's arbiter forgives a worker after 10 s up)
SETTLE = 6.0  # seconds a (re)started supervisor is left alone before its next fault
ENGINE_EVERY = 45.0
BURST = 0.25  # the chance that a fault on a task brings a second one on the same task 0.3-2 s later
BURST_KINDS = ("kill-worker", "stop-worker", "control")
BURST_WEIGHTS = (4, 3, 3)


@dataclass(frozen=True)
class Fault:
    n: int  # its number in the plan, from 1
    at: float  # seconds into the soak
    kind: str
    task: Optional[int] = None
    role: Optional[str] = None
    member: Optional[int] = None
    action: Optional[str] = None  # control: stop, pause or resume
    hold: float = 0.0  # seconds: how long it lasts, or until the restart that undoes it
    burst: bool = False  # drawn 0.3-2 s after the fault before it, on the same task (faults come together)

    def describe(self) -> str:
        what = {
            "kill-worker": lambda: f"kill -9 the {self.role} worker of task {self.task}",
            "stop-worker": lambda: f"SIGSTOP the {self.role} worker of task {self.task} for {self.hold:.1f} s",
            "kill-supervisor": lambda: f"kill -9 the supervisor of task {self.task}, restart it after {self.hold:.1f} s",
            "freeze-etcd": lambda: f"SIGSTOP etcd member {self.member} for {self.hold:.1f} s",
            "kill-etcd": lambda: f"kill -9 etcd member {self.member}, restart it after {self.hold:.1f} s",
            "control": lambda: f"horizon {self.action} task {self.task}" + (
                f", operator starts it again after {self.hold:.1f} s" if self.action == "stop" else ""),
            "engine-restart": lambda: f"restart the Docker engine (live-restore), down {self.hold:.1f} s",
        }[self.kind]
        return what()


@dataclass(frozen=True)
class TaskPlan:
    index: int
    flavour: str  # flaky (restart = on-failure, fails every `life` s), polite, busy (a few processes)
    command: str
    restart: str = "no"
    life: Optional[float] = None


@dataclass(frozen=True)
class Plan:
    seed: int
    minutes: float
    tasks: Tuple[TaskPlan, ...]
    faults: Tuple[Fault, ...]

    @property
    def duration(self) -> float:
        return self.minutes * 60.0

    def digest(self) -> str:
        """Twelve hex digits naming the whole plan: the same seed and sizes give the same digest."""
        return hashlib.sha256(repr((self.tasks, self.faults)).encode()).hexdigest()[:12]

    def counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for fault in self.faults:
            counts[fault.kind] = counts.get(fault.kind, 0) + 1
        return counts

    def text(self) -> str:
        lines = [f"plan {self.digest()}: seed {self.seed}, {self.minutes:g} min, {len(self.tasks)} tasks, "
                 f"{len(self.faults)} faults"]
        lines += [f"  task {t.index}: {t.flavour}, restart = {t.restart}: {t.command}" for t in self.tasks]
        lines += [f"  #{f.n:<4d} +{f.at:7.2f} s {'+' if f.burst else ' '}{f.kind:<15s} {f.describe()}" for f in self.faults]
        return "\n".join(lines)


POLITE = "sh -c 'trap \"exit 0\" TERM; while true; do sleep 0.1; done'"
BUSY = "sh -c 'trap \"exit 0\" TERM; for i in 1 2 3; do sleep 100000 & done; while true; do sleep 0.1; done'"


FLAKY_EXIT = 3  # the only way a task of the soak ends by itself: the flaky one, after its life


def flaky(life: float) -> str:
    """Runs ``life`` seconds, then fails with exit code FLAKY_EXIT (and stops at once on SIGTERM, exit 0)."""
    ticks = int(life * 10)
    return (f"sh -c 'trap \"exit 0\" TERM; i=0; while [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done; "
            f"exit {FLAKY_EXIT}'")


@dataclass
class Fleet:
    """The plan's simulated view of the fleet at the time being drawn."""

    tasks: int
    up_at: List[float] = field(default_factory=list)  # when each supervisor is up and settled again
    frozen_until: List[float] = field(default_factory=list)  # a worker of the task is SIGSTOPped until then
    paused: List[bool] = field(default_factory=list)
    worker_free: Dict[Tuple[int, str], float] = field(default_factory=dict)
    etcd_free: float = 0.0
    engine_free: float = 0.0

    def __post_init__(self) -> None:
        self.up_at = [0.0] * self.tasks
        self.frozen_until = [0.0] * self.tasks
        self.paused = [False] * self.tasks

    def up(self, t: float) -> List[int]:
        return [i for i in range(self.tasks) if self.up_at[i] <= t]


def draw(seed: int, minutes: float, tasks: int) -> Plan:
    rng = random.Random(seed)
    task_plans = []
    for index in range(tasks):
        if index == 0:
            life = round(rng.uniform(12.0, 30.0), 1)
            task_plans.append(TaskPlan(index, "flaky", flaky(life), "on-failure", life))
        else:
            flavour = "busy" if index % 2 == 0 else "polite"
            task_plans.append(TaskPlan(index, flavour, BUSY if flavour == "busy" else POLITE))
    fleet = Fleet(tasks)
    faults: List[Fault] = []
    resumes: List[Tuple[float, int]] = []  # (at, task): a pause's resume, planned when the pause is
    duration = minutes * 60.0
    t = rng.uniform(*GAP)

    def add(at: float, kind: str, **kw) -> Fault:
        fault = Fault(len(faults) + 1, round(at, 2), kind, **kw)
        faults.append(fault)
        return fault

    while t < duration:
        for at, task in sorted(resumes):
            if at <= t:
                resumes.remove((at, task))
                if fleet.paused[task]:  # a stop in between ended the pause
                    fleet.paused[task] = False
                    add(at, "control", task=task, action="resume")
        for _ in range(20):  # a kind with nothing to act on now is drawn again
            kind = rng.choices(KINDS, WEIGHTS)[0]
            if draw_one(rng, fleet, kind, t, add, resumes):
                break
        task = faults[-1].task if faults and faults[-1].at == round(t, 2) else None
        if task is not None and rng.random() < BURST:
            second = t + rng.uniform(0.3, 2.0)
            for _ in range(10):
                if draw_one(rng, fleet, rng.choices(BURST_KINDS, BURST_WEIGHTS)[0], second, add, resumes, only=task):
                    break
        t += rng.uniform(*GAP)
    for at, task in sorted(resumes):  # a pause near the end is still resumed
        if fleet.paused[task]:
            add(at, "control", task=task, action="resume")
    faults.sort(key=lambda f: (f.at, f.n))
    renumbered = tuple(Fault(i + 1, f.at, f.kind, f.task, f.role, f.member, f.action, f.hold, f.burst)
                       for i, f in enumerate(faults))
    return Plan(seed, minutes, tuple(task_plans), renumbered)


def draw_one(rng: random.Random, fleet: Fleet, kind: str, t: float, add, resumes: List[Tuple[float, int]],
             only: Optional[int] = None) -> bool:
    """Add one fault of ``kind`` at ``t`` if it makes sense then (on task ``only``, for a burst's second
    fault); False when it does not."""
    up = [i for i in fleet.up(t) if only is None or i == only]
    if only is not None:
        add = functools.partial(add, burst=True)
    if kind in ("kill-worker", "stop-worker"):
        choices = [(i, role) for i in up for role in ROLES if fleet.worker_free.get((i, role), 0.0) <= t]
        if not choices:
            return False
        task, role = rng.choice(choices)
        hold = round(rng.uniform(1.0, 5.0), 1) if kind == "stop-worker" else 0.0
        fleet.worker_free[(task, role)] = t + hold + WORKER_REST
        if hold:
            fleet.frozen_until[task] = max(fleet.frozen_until[task], t + hold + 1.0)
        add(t, kind, task=task, role=role, hold=hold)
        return True
    if kind == "kill-supervisor":
        # Not while one of its workers is SIGSTOPped: a frozen worker cannot notice its parent's death
        # until it is thawed, which would make the orphan check judge the fault injection, not horizon.
        calm = [i for i in up if fleet.frozen_until[i] <= t]
        if not calm:
            return False
        task = rng.choice(calm)
        hold = round(rng.uniform(1.0, 4.0), 1)
        fleet.up_at[task] = t + hold + SETTLE
        add(t, kind, task=task, hold=hold)
        return True
    if kind in ("freeze-etcd", "kill-etcd"):
        if fleet.etcd_free > t:
            return False
        member = rng.randrange(MEMBERS)
        hold = round(rng.uniform(2.0, 12.0) if kind == "freeze-etcd" else rng.uniform(1.0, 8.0), 1)
        fleet.etcd_free = t + hold + 1.0
        add(t, kind, member=member, hold=hold)
        return True
    if kind == "control":
        if not up:
            return False
        task = rng.choice(up)
        action = "stop" if fleet.paused[task] or rng.random() < 1 / 3 else "pause"
        if action == "pause":
            fleet.paused[task] = True
            resumes.append((t + round(rng.uniform(3.0, 15.0), 1), task))
            add(t, kind, task=task, action=action)
        else:
            fleet.paused[task] = False
            resumes[:] = [r for r in resumes if r[1] != task]  # the stop ends the pause: no resume
            hold = round(rng.uniform(4.0, 15.0), 1)
            fleet.up_at[task] = t + hold + SETTLE
            add(t, kind, task=task, action=action, hold=hold)
        return True
    if kind == "engine-restart":
        if fleet.engine_free > t:
            return False
        hold = round(rng.uniform(0.0, 4.0), 1)
        fleet.engine_free = t + ENGINE_EVERY
        add(t, kind, hold=hold)
        return True
    raise ValueError(f"unknown fault kind {kind!r}")
