"""What the chaos soak runs and breaks: the Docker engine, the supervisors as systemd runs them (``Unit``),
the ``Timeline`` of what was done to them (what the oracle judges against), and the ``Injector`` that
carries out each fault of the plan (bench/chaos_plan.py) and undoes it when its time comes.

The engine is a dockerd of the soak's own with live-restore (tests/integration/test_engine_faults.py's
``PrivateEngine``: its own data, exec root and socket), so restarting it touches nobody else's
containers. When no private dockerd can start here the soak uses the shared engine and leaves the
engine fault out (every other fault still runs), and says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import psutil

from bench.chaos_plan import Fault, TaskPlan
from tests.support import IMAGE, ROOT
from tests.support.etcd_cluster import Cluster
from tests.support.supervisor import ROLES, Supervisor

HORIZON = Path(sys.executable).parent / "horizon"  # the venv's console script, beside its python
CONTROL_TIMEOUT = 30  # horizon stop|pause|resume --timeout: its wait for the effect
ENDPOINT_GRACE = 6.0  # seconds after its own worker's fault an endpoint may stay silent (restart + imports)
START_GRACE = 10.0  # seconds a (re)started supervisor has to serve and write its record
SETTLE = 6.0  # seconds after a fault before its task's record must be current again


class Clock:
    """Seconds since the soak's start (monotonic), and the wall time, for every log line."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def stamp(self) -> str:
        wall = time.time()
        return f"[+{self.now():8.2f} s {time.strftime('%H:%M:%S', time.localtime(wall))}.{int(wall % 1 * 1000):03d}]"


class Say:
    """Every line the soak prints goes through here (one lock: threads print whole lines)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.Lock()

    def __call__(self, message: str) -> None:
        with self.lock:
            print(f"{self.clock.stamp()} {message}", flush=True)


# -- the Docker engine --------------------------------------------------------------------------------

class Engine:
    """A private dockerd with live-restore (restartable), or the shared engine (never restarted)."""

    def __init__(self, root: Path, say: Say) -> None:
        self.root = root
        self.say = say
        self.private = None  # the PrivateEngine, once started
        self.why_shared = ""
        self.lock = threading.Lock()
        self._client = None
        self.down = False

    @property
    def host(self) -> Optional[str]:
        """DOCKER_HOST for the supervisors (None: the shared engine, the environment's own)."""
        return self.private.host if self.private is not None else None

    def start(self, want_private: bool) -> None:
        if not want_private:
            self.why_shared = "asked for (--shared-engine)"
            return
        from tests.integration.test_engine_faults import PrivateEngine  # the fault tests' private dockerd

        if subprocess.run(["which", "dockerd"], capture_output=True).returncode != 0:
            self.why_shared = "dockerd is not installed"
            return
        engine = PrivateEngine(self.root)
        try:
            engine.start(live_restore=True)
            saved = subprocess.run(["docker", "save", IMAGE], capture_output=True, check=True, timeout=120).stdout
            subprocess.run(["docker", "-H", engine.host, "load", "-q"], input=saved, capture_output=True, check=True,
                           timeout=120)
        except (RuntimeError, AssertionError, subprocess.SubprocessError, OSError) as exc:
            self.why_shared = f"a private dockerd cannot start here: {str(exc)[-300:]}"
            try:
                engine.close()
            except Exception:  # noqa: BLE001
                pass
            return
        self.private = engine

    def client(self):
        import docker

        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host or "unix:///var/run/docker.sock", timeout=10)
        return self._client

    def containers(self, services: List[str]) -> Optional[Dict[str, List[Tuple[str, str]]]]:
        """Service -> [(short id, status)] of every container horizon made for it; None when the engine
        does not answer."""
        try:
            with self.lock:
                found = self.client().containers.list(all=True, filters={"label": "horizon.service"}, ignore_removed=True)
        except Exception:  # noqa: BLE001 - the engine is restarting, or slow
            return None
        out: Dict[str, List[Tuple[str, str]]] = {s: [] for s in services}
        for container in found:
            service = container.labels.get("horizon.service")
            if service in out:
                out[service].append((container.short_id, container.status))
        return out

    def inspect(self, name: str) -> Optional[dict]:
        try:
            with self.lock:
                return self.client().api.inspect_container(name)
        except Exception:  # noqa: BLE001 - gone, or the engine is away
            return None

    def restart(self, downtime: float) -> float:
        """Stop dockerd (live-restore keeps the containers), wait ``downtime``, start it again; the
        seconds it did not answer."""
        assert self.private is not None
        self.down = True
        started = time.monotonic()
        try:
            self.private.stop()
            time.sleep(downtime)
            self.private.start(live_restore=True)
        finally:
            self.down = False
        return time.monotonic() - started

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.private is not None:
            self.private.close()


# -- the supervisors, as systemd runs them ------------------------------------------------------------

@dataclass
class Exit:
    gen: int
    code: Optional[int]
    at: float  # soak seconds
    expected: Optional[str]  # kill, stop, term, or None: nobody asked


@dataclass
class Unit:
    """One task's supervisor as ``horizon-task@NAME`` runs it: ``python -m supervisor NAME.ini``, started
    again with the same file after a kill -9 (``Restart=``), after any other death, and by an operator
    after a stop. Each start is a generation with a log of its own."""

    index: int
    plan: TaskPlan
    service: str
    task: str
    namespace: str
    ini: Path
    port: int
    log_dir: Path
    env: Dict[str, str]
    run_dir: Path
    reader: object  # an etcd client of the soak's cluster, for Supervisor's record reads
    gen: int = 0
    epoch: int = 0  # a run of the task: a new one starts once the old one's end was recorded
    sup: Optional[Supervisor] = None
    started: float = 0.0  # soak seconds of the latest start
    started_wall: float = 0.0
    expect: Optional[str] = None  # what we asked of the running generation: kill, stop, term
    restart_at: Optional[float] = None
    restart_why: str = ""
    exits: List[Exit] = field(default_factory=list)
    epoch_walls: List[float] = field(default_factory=list)  # wall time of each new epoch's start
    pgids: List[int] = field(default_factory=list)
    ended: bool = False  # the soak's end: never started again

    @property
    def name(self) -> str:
        return f"{self.service}/{self.task}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def seq_file(self) -> Path:
        return self.run_dir / f"{self.service}.{self.task}.seq"

    @property
    def pid(self) -> Optional[int]:
        return self.sup.proc.pid if self.sup is not None and self.sup.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.sup is not None and self.sup.proc is not None and self.sup.proc.poll() is None

    def start(self, clock: Clock) -> None:
        # A new run of the task (seq from 1 again) only once the last one's end was recorded: its supervisor
        # ended by itself (not killed) and removed the seq file. After a kill -9, seq must go on.
        ended = bool(self.exits) and self.exits[-1].code is not None and self.exits[-1].code >= 0
        if self.epoch == 0 or (ended and not self.seq_file.exists()):
            self.epoch += 1
            self.epoch_walls.append(time.time())
        self.gen += 1
        self.expect = None
        self.restart_at = None
        sup = Supervisor(self.service, self.log_dir / f"{self.service}.{self.gen}.log", self.namespace, self.reader,
                         self.port)
        self.started = clock.now()
        self.started_wall = time.time()
        sup.start(["-m", "supervisor", str(self.ini)], env=self.env)
        self.sup = sup
        assert sup.proc is not None
        self.pgids.append(sup.proc.pid)

    def workers(self) -> Dict[str, int]:
        """Role -> pid of the live generation's workers (those it has right now)."""
        if not self.alive or self.sup is None:
            return {}
        pid = self.pid
        found = {}
        for proc in psutil.process_iter(["pid", "ppid", "name"]):
            name = proc.info["name"] or ""
            if proc.info["ppid"] == pid and name.startswith("hz-") and name[3:] in ROLES:
                found[name[3:]] = proc.info["pid"]
        return found

    def output(self, gen: Optional[int] = None) -> str:
        path = self.log_dir / f"{self.service}.{gen or self.gen}.log"
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 12, gen: Optional[int] = None) -> List[str]:
        return [f"  log {self.service}.{gen or self.gen}: {line}" for line in self.output(gen).splitlines()[-lines:]]

    def close_log(self) -> None:
        if self.sup is not None and self.sup.proc is not None and self.sup.proc.poll() is not None:
            try:
                self.sup.log.close()
            except Exception:  # noqa: BLE001
                pass


def write_ini(path: Path, plan: TaskPlan, service: str, task: str, namespace: str, api: str, hosts: str, port: int,
              interval: float, publish_every: int, ttl: int) -> None:
    restart = (f"restart = {plan.restart}\nmax_restarts = 5\nrestart_delay = 1\nrestart_reset = 5\n"
               if plan.restart != "no" else "")
    path.write_text(
        f"[task]\nimage = {IMAGE}\ncommand = {plan.command}\nservice = {service}\nname = {task}\n"
        f"tags = chaos, {plan.flavour}\nnetwork = none\nstop_timeout = 3\n{restart}"
        f"[etcd]\napi = {api}\nhosts = {hosts}\nnamespace = {namespace}\nttl = {ttl}\n"
        f"[metrics]\ninterval = {interval}\npublish_every = {publish_every}\nhistory = 60\n"
        f"[endpoint]\nport = {port}\n"
    )


# -- what was done, for the oracle ------------------------------------------------------------------

class Timeline:
    """What the soak did and when (soak seconds), in the terms the oracle judges by: when a task's
    endpoint may be silent, when its record may be behind, when etcd and the engine were disturbed."""

    def __init__(self, tasks: int, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.endpoint_excused: Dict[int, List[Tuple[float, float]]] = {i: [] for i in range(tasks)}
        self.unsettled_until: Dict[int, float] = {i: 0.0 for i in range(tasks)}
        self.told: Dict[int, Optional[float]] = {i: None for i in range(tasks)}  # a stop was asked at
        self.etcd_disturbed: Dict[int, float] = {}  # member -> since
        self.etcd_calm_at = 0.0  # etcd whole again since
        self.engine_down_at: Optional[float] = None
        self.engine_windows: List[Tuple[float, float]] = []
        self.engine_calm_at = 0.0

    def excuse_endpoint(self, task: int, start: float, end: float) -> None:
        with self.lock:
            self.endpoint_excused[task].append((start, end))

    def endpoint_excused_at(self, task: int, at: float) -> bool:
        with self.lock:
            return any(a <= at <= b for a, b in self.endpoint_excused[task])

    def unsettle(self, task: int, until: float) -> None:
        with self.lock:
            self.unsettled_until[task] = max(self.unsettled_until[task], until)

    def settled(self, task: int, now: float) -> bool:
        with self.lock:
            return now >= self.unsettled_until[task]

    def stop_asked(self, task: int, at: Optional[float]) -> None:
        with self.lock:
            self.told[task] = at

    def etcd_disturb(self, member: int) -> None:
        with self.lock:
            self.etcd_disturbed[member] = self.clock.now()

    def etcd_restore(self, member: int) -> None:
        with self.lock:
            self.etcd_disturbed.pop(member, None)
            if not self.etcd_disturbed:
                self.etcd_calm_at = self.clock.now()

    def engine_down(self) -> None:
        with self.lock:
            self.engine_down_at = self.clock.now()

    def engine_up(self) -> None:
        with self.lock:
            now = self.clock.now()
            if self.engine_down_at is not None:
                self.engine_windows.append((self.engine_down_at, now))
            self.engine_down_at = None
            self.engine_calm_at = now

    def engine_was_down(self, start: float, end: float) -> bool:
        with self.lock:
            windows = self.engine_windows + ([(self.engine_down_at, end)] if self.engine_down_at is not None else [])
            return any(a <= end and b >= start for a, b in windows)

    def quiet(self, now: float, calm: float) -> bool:
        """etcd whole and the engine up, each for ``calm`` seconds."""
        with self.lock:
            return (not self.etcd_disturbed and now - self.etcd_calm_at >= calm and self.engine_down_at is None
                    and now - self.engine_calm_at >= calm)


@dataclass
class World:
    """Everything of the soak the injector acts on and the oracle looks at."""

    clock: Clock
    say: Say
    units: List[Unit]
    cluster: Cluster
    engine: Engine
    timeline: Timeline
    api: str
    namespace: str
    work: Path  # the soak's folder (kept when something was found)


# -- the faults --------------------------------------------------------------------------------------

@dataclass
class Outcome:
    fault: Fault
    at: float  # soak seconds it was carried out
    done: bool
    detail: str


class Injector:
    """Carries out the plan's faults; the undoing (SIGCONT, a member's or a supervisor's restart, an
    operator's start) is scheduled through ``later(at, what)``."""

    def __init__(self, world: World, later: Callable[[float, str, Callable[[], None]], None], oracle,
                 reap: Callable[[], None]) -> None:
        self.world = world
        self.clock, self.say, self.units = world.clock, world.say, world.units
        self.cluster, self.engine, self.timeline = world.cluster, world.engine, world.timeline
        self.later = later
        self.oracle = oracle
        self.reap = reap  # records (and judges) every exit: before a start, so none goes unseen
        self.outcomes: List[Outcome] = []
        self.frozen: Dict[int, float] = {}  # pid -> create time, SIGSTOPped by us
        self.threads: List[threading.Thread] = []
        self.lock = threading.Lock()
        self.control_locks = {unit.index: threading.Lock() for unit in self.units}

    def record(self, fault: Fault, done: bool, detail: str, at: Optional[float] = None) -> None:
        """Log a fault's outcome; ``at``: when it began, for one that took a while (a control request)."""
        began = self.clock.now() if at is None else at
        with self.lock:
            self.outcomes.append(Outcome(fault, began, done, detail))
        since = f" (begun at +{at:.2f} s)" if at is not None else ""
        self.say(f"fault #{fault.n} {fault.kind}{since}: {fault.describe()}: {'' if done else 'SKIPPED: '}{detail}")

    def inject(self, fault: Fault) -> None:
        try:
            getattr(self, fault.kind.replace("-", "_"))(fault)
        except Exception as exc:  # noqa: BLE001 - a fault that cannot be carried out must not end the soak
            self.record(fault, False, f"could not be carried out: {type(exc).__name__}: {exc}")

    def in_thread(self, name: str, work: Callable[[], None]) -> None:
        thread = threading.Thread(target=work, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    # -- workers and supervisors

    def signal_worker(self, fault: Fault, signum: int) -> Optional[int]:
        """Send the fault's worker ``signum``, its task excused for the fault's time; its pid (None: skipped)."""
        unit = self.units[fault.task]
        if not unit.alive or unit.expect == "stop":
            self.record(fault, False, "its supervisor is not running" if not unit.alive else "a horizon stop is under way")
            return None
        pid = unit.workers().get(fault.role)
        if pid is None:
            self.record(fault, False, f"no {fault.role} worker right now (being restarted)")
            return None
        now = self.clock.now()
        if fault.role == "endpoint":
            self.timeline.excuse_endpoint(unit.index, now, now + fault.hold + ENDPOINT_GRACE)
        self.timeline.unsettle(unit.index, now + fault.hold + SETTLE)
        created = psutil.Process(pid).create_time()
        os.kill(pid, signum)
        if signum == signal.SIGSTOP:
            self.frozen[pid] = created
        self.record(fault, True, f"pid {pid} (supervisor {unit.pid}, generation {unit.gen})")
        return pid

    def kill_worker(self, fault: Fault) -> None:
        self.signal_worker(fault, signal.SIGKILL)

    def stop_worker(self, fault: Fault) -> None:
        pid = self.signal_worker(fault, signal.SIGSTOP)
        if pid is not None:
            self.later(fault.at + fault.hold, f"SIGCONT pid {pid} (fault #{fault.n})", lambda: self.thaw_worker(pid))

    def thaw_worker(self, pid: int) -> None:
        created = self.frozen.pop(pid, None)
        try:
            proc = psutil.Process(pid)
            if created is not None and proc.create_time() == created:
                os.kill(pid, signal.SIGCONT)
                self.say(f"SIGCONT pid {pid}")
                return
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
        self.say(f"pid {pid} is gone already (killed as hung, as it should be): no SIGCONT")

    def thaw_all(self) -> None:
        for pid in list(self.frozen):
            self.thaw_worker(pid)

    def kill_supervisor(self, fault: Fault) -> None:
        unit = self.units[fault.task]
        if not unit.alive or unit.sup is None or unit.sup.proc is None:
            self.record(fault, False, "its supervisor is not running")
            return
        if unit.expect == "stop":
            self.record(fault, False, "a horizon stop is under way")
            return
        workers = unit.workers()
        now = self.clock.now()
        unit.expect = "kill"
        self.timeline.unsettle(unit.index, now + fault.hold + START_GRACE)
        pid = unit.pid
        os.kill(unit.sup.proc.pid, signal.SIGKILL)
        unit.sup.proc.wait(10)
        self.record(fault, True, f"pid {pid}, generation {unit.gen}, workers {workers}")
        self.oracle.supervisor_killed(unit, workers, now)
        self.later(fault.at + fault.hold, f"systemd restarts the supervisor of task {unit.index}",
                   lambda: self.restart_unit(unit, "Restart= after kill -9"))

    def restart_unit(self, unit: Unit, why: str) -> None:
        self.reap()
        if unit.alive or unit.ended:
            return
        unit.start(self.clock)
        self.timeline.unsettle(unit.index, self.clock.now() + START_GRACE)
        self.say(f"task {unit.index}: supervisor started again ({why}): pid {unit.pid}, generation {unit.gen}, "
                 f"run {unit.epoch}")

    # -- etcd

    def disturb(self, fault: Fault):
        """The fault's etcd member, marked disturbed; None (skipped) when it does not run."""
        member = self.cluster.members[fault.member]
        if member.exited() or member.frozen:
            self.record(fault, False, "the member is not running")
            return None
        self.timeline.etcd_disturb(fault.member)
        return member

    def freeze_etcd(self, fault: Fault) -> None:
        member = self.disturb(fault)
        if member is None:
            return
        member.freeze()
        self.record(fault, True, f"{member.name} at {member.address} (pid {member.proc.pid})")

        def thaw() -> None:
            member.thaw()
            self.timeline.etcd_restore(fault.member)
            self.say(f"etcd member {fault.member}: SIGCONT")

        self.later(fault.at + fault.hold, f"thaw etcd member {fault.member}", thaw)

    def kill_etcd(self, fault: Fault) -> None:
        member = self.disturb(fault)
        if member is None:
            return
        pid = member.proc.pid
        member.kill()
        self.record(fault, True, f"{member.name} at {member.address} (pid {pid})")
        self.later(fault.at + fault.hold, f"restart etcd member {fault.member}", lambda: self.restart_member(fault.member))

    def restart_member(self, index: int) -> None:
        member = self.cluster.members[index]
        log = Path(f"{member.data_dir}.log")
        if log.exists():  # keep each life's log: Member.start writes a new one
            n = 1
            while Path(f"{log}.{n}").exists():
                n += 1
            log.rename(f"{log}.{n}")
        initial = ",".join(f"{m.name}={m.peer_url()}" for m in self.cluster.members)
        member.start(initial, self.cluster.token)  # the same data directory: it rejoins with its own WAL
        self.say(f"etcd member {index}: started again on its data directory (pid {member.proc.pid})")

        def healthy() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if member.exited():
                    self.oracle.report("etcd", None, f"etcd member {index} exited after its restart",
                                       [log.read_text(errors='replace')[-600:]] if log.exists() else [])
                    break
                if member.healthy():
                    break
                time.sleep(0.2)
            self.timeline.etcd_restore(index)
            self.say(f"etcd member {index}: healthy again" if member.healthy() else f"etcd member {index}: not healthy 30 s after its restart")

        self.in_thread(f"member-{index}", healthy)

    # -- horizon stop / pause / resume

    def control(self, fault: Fault) -> None:
        """``horizon ACTION`` in a thread of its own; one request at a time per task, as an operator waits
        for one command before typing the next (so a late effect is never judged against a later request)."""
        self.in_thread(f"control-{fault.n}", lambda: self._control(fault, self.units[fault.task]))

    def _control(self, fault: Fault, unit: Unit) -> None:
        planned = self.clock.now()
        with self.control_locks[unit.index]:
            waited = self.clock.now() - planned
            after = f" (after waiting {waited:.1f} s for the task's previous request)" if waited > 0.5 else ""
            if fault.action == "stop":
                if not unit.alive or unit.expect is not None:
                    self.record(fault, False, "its supervisor is not running" + after)
                    return
                unit.expect = "stop"
                self.timeline.stop_asked(unit.index, self.clock.now())
                self.timeline.unsettle(unit.index, self.clock.now() + fault.hold + START_GRACE)
            asked, gen = self.clock.now(), unit.gen
            result = run_control(fault.action, unit, self.world.api, self.cluster.hosts, self.world.namespace)
            tries = 1
            while result.unavailable and tries < 3:  # an operator asks again when etcd did not answer
                time.sleep(2)
                result = run_control(fault.action, unit, self.world.api, self.cluster.hosts, self.world.namespace)
                tries += 1
            if result.refused:
                if fault.action == "stop" and unit.expect == "stop":
                    unit.expect = None
                    self.timeline.stop_asked(unit.index, None)
                self.record(fault, False, f"refused by horizon ({result.line}){after}", at=asked)
                return
            self.timeline.unsettle(unit.index, self.clock.now() + SETTLE)
            self.record(fault, True, f"horizon exit {result.code} after {result.seconds:.2f} s, "
                        f"{tries} tr{'y' if tries == 1 else 'ies'}: {result.line}{after}", at=asked)
            self.oracle.control_done(fault, unit, result, asked, gen)
            if fault.action == "stop":
                self.later(max(planned + fault.hold, self.clock.now() + 1), f"operator starts task {unit.index} again",
                           lambda: self.operator_start(unit, fault))

    def operator_start(self, unit: Unit, fault: Fault, waited: float = 0.0) -> None:
        if unit.alive and waited < 60:  # the stop has not ended it yet: look again in a second
            self.later(self.clock.now() + 1, f"operator starts task {unit.index} again",
                       lambda: self.operator_start(unit, fault, waited + 1))
            return
        self.timeline.stop_asked(unit.index, None)
        if unit.alive:  # the stop never ended it (the oracle said so): it is judged as a running task again
            if unit.expect == "stop":
                unit.expect = None
            return
        self.restart_unit(unit, f"an operator, after horizon stop (fault #{fault.n})")

    # -- the engine

    def engine_restart(self, fault: Fault) -> None:
        if self.engine.private is None:
            self.record(fault, False, f"the shared engine is never restarted ({self.engine.why_shared})")
            return
        if self.engine.down:
            self.record(fault, False, "the engine is restarting already")
            return
        self.record(fault, True, "stopping dockerd (SIGTERM; live-restore keeps the containers)")

        def restart() -> None:
            self.timeline.engine_down()
            try:
                took = self.engine.restart(fault.hold)
                self.say(f"engine: answers again after {took:.1f} s (fault #{fault.n})")
            except Exception as exc:  # noqa: BLE001
                self.oracle.report("engine", None, f"the private dockerd did not come back: {exc}", [])
            finally:
                self.timeline.engine_up()

        self.in_thread(f"engine-{fault.n}", restart)


@dataclass
class ControlResult:
    code: int
    output: str
    seconds: float

    @property
    def line(self) -> str:
        lines = [line for line in self.output.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    @property
    def refused(self) -> bool:
        """horizon said nothing was asked (no such task, ended, already in that state, not applicable)."""
        text = self.output
        return self.code == 1 and any(words in text for words in (
            "no such task", "has ended", "is already", "applies to a task that is"))

    @property
    def unavailable(self) -> bool:
        return self.code == 1 and "etcd does not answer" in self.output and not self.refused


def run_control(action: str, unit: Unit, api: str, hosts: str, namespace: str) -> ControlResult:
    """``horizon ACTION SERVICE/TASK`` against the soak's cluster, as an operator types it."""
    argv = [str(HORIZON), action, unit.name, "--api", api, "--etcd", hosts, "--namespace", namespace, "--yes",
            "--timeout", str(CONTROL_TIMEOUT)]
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CONTROL_TIMEOUT + 30, cwd=ROOT,
                              stdin=subprocess.DEVNULL)
        return ControlResult(done.returncode, done.stdout + done.stderr, time.monotonic() - started)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        return ControlResult(-1, out + f"\n(horizon {action} still running after {CONTROL_TIMEOUT + 30} s: killed)",
                             time.monotonic() - started)
