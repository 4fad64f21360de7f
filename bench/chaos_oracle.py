"""The chaos soak's oracle: it watches the fleet while faults come and judges it, continuously and at the
end, printing every violation with its evidence the moment it is found.

What it holds horizon to (issue 13), and how it looks:

- ``seq-endpoint``: ``seq`` at a task's ``GET /metrics`` never decreases within a run of the task (a
  poller per task, every 0.25 s). A run ends once its end is recorded (its supervisor exited by itself,
  not killed, and removed the seq file), as after ``horizon stop``: the next one numbers from 1 again, by
  design; after a kill -9 ``seq`` must go on.
- ``seq-etcd`` / ``stale-etcd``: every write etcd makes to a task's ``metrics`` and ``status`` (a watch per
  task, tests/support's ``history()``): ``seq`` never decreases within a run, a sample's timestamp and a
  status's ``updated_at`` never go back, and nothing but a new run follows a final status.
- ``containers``: never two containers for one task (the engine, every second).
- ``endpoint``: the endpoint answers (any HTTP status) while its supervisor lives, outside a short window
  after its own worker's fault, a (re)start, or a stop it was told: silent for ``SILENCE`` s is a violation.
- ``record``: with etcd and the engine quiet for ``QUIET`` s and the task left alone as long, each live
  record is whole (the five keys; v3 on one live lease, v2 a directory with a TTL), ``running`` agrees
  with the state, the state is the endpoint's, the container is the engine's, and etcd's metrics are at
  most ``3 * publish_every + 2`` samples behind the endpoint. A problem must hold over three looks (about
  4 s): a record caught between two writes is not a violation.
- ``exit``: no supervisor exits unless it was told to (SIGTERM, ``horizon stop``), killed, or its task
  ended by itself (then its record says so, with the exit code it exits with); a supervisor that could
  not reach the engine at its start while the engine was restarting is explained too.
- ``orphans``: a killed supervisor's workers are gone within 3 s.
- ``control``: ``horizon stop|pause|resume`` that asked something gets its effect: the command says so
  (exit 0), the engine agrees (the container paused, running again, or gone), and a stopped
  supervisor exits 0.
- ``end``: after SIGTERM every supervisor exits 0, every record is ``stopped`` (``running`` false), and no
  container, process, /dev/shm entry or run-directory file is left.

Every change the watches saw goes to ``logs/etcd-events.log`` (kept with the soak's files when something
was found). A live record removed from etcd (rewritten whole by its publisher, as it must be) is a note,
not a violation: the notes come in the summary with the faults just before them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import psutil

from bench.chaos_faults import CONTROL_TIMEOUT, START_GRACE, ControlResult, Exit, Unit, World
from bench.chaos_plan import FLAKY_EXIT, Fault
from tests.support.leftovers import group_processes
from tests.support.net import http_get

KEYS = {"info", "endpoint", "metrics", "status", "running"}
FINAL = {"exited", "failed", "stopped"}
QUIET = 5.0  # seconds etcd and the engine must have been left alone before records are judged
SILENCE = 5.0  # seconds an endpoint may not answer before it is a violation
POLL_EVERY = 0.25
ORPHAN_LIMIT = 3.0  # seconds a killed supervisor's workers have to exit
LOOKS = 3  # a record problem must be seen this many times in a row (about 2 s apart)
CONTROL_WORDS = ("horizon pause", "horizon resume", "horizon stop", "control request", "hung", "died", "gone",
                 "failed to", "adopting", "bug", "ended while")  # a supervisor's log lines about a request's fate
SHM_NAMES = ("psm_", "horizon")  # what multiprocessing.shared_memory (or a named segment of ours) would leave


@dataclass
class Violation:
    n: int
    at: float
    check: str
    task: Optional[int]
    message: str
    evidence: List[str]

    def text(self) -> str:
        who = f" task {self.task}" if self.task is not None else ""
        return "\n".join([f"VIOLATION #{self.n} [+{self.at:.2f} s] {self.check}{who}: {self.message}",
                          *[f"    {line}" for line in self.evidence]])


def iso_seconds(value: Any) -> Optional[float]:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def clock_text(wall: float) -> str:
    """A wall time as HH:MM:SS.mmm."""
    return f"{time.strftime('%H:%M:%S', time.localtime(wall))}.{int(wall % 1 * 1000):03d}"


def short(document: Any, limit: int = 400) -> str:
    text = json.dumps(document, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass
class Written:
    """The last value etcd was seen to write to one key of a task, by the watch."""

    seq: int = -1
    timestamp: float = 0.0
    updated: float = 0.0
    state: str = ""
    received: float = 0.0
    raw: str = ""


@dataclass
class Watch:
    """What the oracle keeps of one task."""

    unit: Unit
    member: int  # the member its etcd history watches
    history: Any = None
    metrics: Optional[Written] = None
    status: Optional[Written] = None
    writes: int = 0
    endpoint_last: Optional[Tuple[int, int, float, int]] = None  # (run, seq, timestamp, generation)
    endpoint_max: int = 0
    polls: int = 0
    answers: int = 0
    silent_since: Optional[float] = None
    silent_reported: bool = False
    record_looks: List[List[str]] = field(default_factory=list)
    record_open: bool = False
    containers_open: bool = False
    gaps: int = 0


class Oracle:
    def __init__(self, world: World, interval: float, publish_every: int) -> None:
        self.clock, self.say, self.units = world.clock, world.say, world.units
        self.cluster, self.engine, self.timeline = world.cluster, world.engine, world.timeline
        self.namespace = world.namespace
        self.events = open(world.work / "logs" / "etcd-events.log", "a")  # every change the watches saw
        self.interval = interval
        self.fresh = 3 * publish_every + 2
        self.violations: List[Violation] = []
        self.notes: List[str] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads: List[threading.Thread] = []
        self.watches = [Watch(unit, unit.index % len(self.cluster.members)) for unit in self.units]
        self.shm_before: Set[str] = set()
        self.checks = {"records judged with etcd quiet": 0, "container listings": 0, "killed supervisors watched": 0,
                       "control effects": 0, "unexpected exits": 0}
        self._reader = 0
        self.outcomes: Optional[Callable[[], List[Any]]] = None  # the injector's outcomes, for evidence

    # -- reporting

    def report(self, check: str, task: Optional[int], message: str, evidence: List[str]) -> None:
        with self.lock:
            violation = Violation(len(self.violations) + 1, self.clock.now(), check, task, message, evidence)
            self.violations.append(violation)
        self.say(violation.text())

    def note(self, message: str) -> None:
        with self.lock:
            self.notes.append(f"[+{self.clock.now():.2f} s] {message}")
        self.say(f"note: {message}")

    # -- life

    def start(self) -> None:
        self.shm_before = shm_entries()
        for watch in self.watches:
            watch.history = self.history(watch)
            self.thread(f"endpoint-{watch.unit.index}", lambda w=watch: self.poll_endpoint(w))
        self.thread("checker", self.check_loop)

    def thread(self, name: str, work) -> None:
        thread = threading.Thread(target=work, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def history(self, watch: Watch):
        unit = watch.unit
        return self.cluster.members[watch.member].client().history(self.task_prefix(unit))

    def task_prefix(self, unit: Unit) -> str:
        return f"{self.namespace}/services/{unit.service}/{unit.task}"

    def stop(self) -> None:
        """Stop polling; read every task's etcd history up to now and judge what is left of it."""
        self.done.set()
        for thread in self.threads:
            thread.join(10)
        for watch in self.watches:
            try:
                watch.history.stop()
            except (AssertionError, Exception) as exc:  # noqa: BLE001 - a history cut short is a gap, said so
                watch.gaps += 1
                self.note(f"task {watch.unit.index}: etcd history could not be read to the end: {exc}")
            self.consume(watch)
        self.events.close()

    # -- the endpoint

    def poll_endpoint(self, watch: Watch) -> None:
        unit = watch.unit
        index = unit.index
        while not self.done.is_set():
            time.sleep(POLL_EVERY)
            gen, run, sent = unit.gen, unit.epoch, self.clock.now()
            if not unit.alive or unit.expect is not None or unit.ended:
                watch.silent_since = None
                continue
            status, body = http_get(f"{unit.url}/metrics", timeout=2)
            received = self.clock.now()
            if unit.gen != gen or not unit.alive or unit.expect is not None:
                continue  # the supervisor died, was restarted or told something meanwhile
            watch.polls += 1
            if status is None:
                excused = sent - unit.started < START_GRACE or self.timeline.endpoint_excused_at(index, sent)
                if excused:
                    watch.silent_since = None
                    continue
                if watch.silent_since is None:
                    watch.silent_since = sent
                if received - watch.silent_since >= SILENCE and not watch.silent_reported:
                    watch.silent_reported = True
                    self.report("endpoint", index, f"{unit.url} did not answer for {received - watch.silent_since:.1f} s "
                                f"while its supervisor (pid {unit.pid}, generation {gen}) lives",
                                [f"supervisor up since +{unit.started:.2f} s; workers now {unit.workers()}",
                                 *self.recent(index), *unit.tail()])
                continue
            watch.silent_since = None
            watch.silent_reported = False
            watch.answers += 1
            if status == 200 and isinstance(body, dict) and isinstance(body.get("seq"), int):
                self.endpoint_seq(watch, run, gen, body["seq"], float(body.get("timestamp") or 0.0))

    def endpoint_seq(self, watch: Watch, run: int, gen: int, seq: int, timestamp: float) -> None:
        last = watch.endpoint_last
        if last is not None and last[0] == run and seq < last[1]:
            self.report("seq-endpoint", watch.unit.index, f"seq went back at the endpoint: {last[1]} -> {seq}",
                        [f"before: seq {last[1]} (sample at {last[2]:.3f}, generation {last[3]}); now: seq {seq} "
                         f"(sample at {timestamp:.3f}, generation {gen}); run {run}", *self.recent(watch.unit.index),
                         *watch.unit.tail()])
        watch.endpoint_last = (run, seq, timestamp, gen)
        watch.endpoint_max = max(watch.endpoint_max, seq)

    # -- the loop of everything else

    def check_loop(self) -> None:
        next_containers = next_records = 0.0
        while not self.done.is_set():
            now = self.clock.now()
            for watch in self.watches:
                self.consume(watch)
            if now >= next_containers:
                next_containers = now + 1.0
                self.check_containers()
            if now >= next_records:
                next_records = now + 2.0
                self.check_records(now)
            self.done.wait(0.5)

    # -- etcd's writes, as the watch saw them

    def consume(self, watch: Watch) -> None:
        history = watch.history
        events = history.events
        new = events[:]
        del events[:len(new)]  # judged: let them go (the watch's thread only appends)
        for change in new:
            self.log_event(watch, change)
            if change.value is None:
                self.removed(watch, change)
                continue
            name = change.key.rsplit("/", 1)[-1]
            if name == "metrics":
                self.metrics_written(watch, change)
            elif name == "status":
                self.status_written(watch, change)
        if history.error is not None and not self.done.is_set():
            watch.gaps += 1
            self.note(f"task {watch.unit.index}: the etcd watch on member {watch.member} ended ({history.error}); "
                      "watching again from now on another member (a gap in what the oracle saw)")
            watch.member = (watch.member + 1) % len(self.cluster.members)
            watch.history = self.history(watch)

    def log_event(self, watch: Watch, change) -> None:
        """One line of logs/etcd-events.log: when the watch saw it, what, and the gist of the value."""
        value = change.value
        gist = ""
        if value is not None:
            try:
                document = json.loads(value)
            except ValueError:
                document = value
            if isinstance(document, dict):
                gist = " ".join(f"{k}={document.get(k)}" for k in ("seq", "timestamp", "state", "updated_at", "reason")
                                if k in document)
            else:
                gist = str(document)[:80]
        self.events.write(f"{clock_text(change.received)} task "
                          f"{watch.unit.index} gen {watch.unit.gen} {change.action} {change.key.rsplit('/', 1)[-1]} "
                          f"{gist}\n")

    def removed(self, watch: Watch, change) -> None:
        """A live task's record removed (its status key, or its v2 directory): not a violation when the
        publisher writes it again whole at once, as it must; said as a note, with the faults around it."""
        unit = watch.unit
        prefix = self.task_prefix(unit)
        if change.action not in ("delete", "expire", "compareAndDelete"):
            return  # v2 says "update" of a directory whose TTL was set: nothing was removed
        if change.key not in (prefix, f"{prefix}/status") or not unit.alive or unit.expect is not None:
            return
        if self.clock.now() - unit.started < START_GRACE:
            return  # the killed generation's lease may lapse after the new one started
        self.note(f"task {unit.index}: its record was removed from etcd ({change.action} {change.key.rsplit('/', 1)[-1]}) "
                  f"while its supervisor (generation {unit.gen}) lived; faults just before: "
                  + "; ".join(self.recent(unit.index, self.clock.now() - 15)))

    def new_run_between(self, unit: Unit, before: float, after: float) -> bool:
        return any(before < wall <= after for wall in unit.epoch_walls)

    def document(self, watch: Watch, change, name: str, fields: Tuple[str, ...]) -> Optional[Dict[str, Any]]:
        """The JSON document etcd was seen to write to ``name``, if it has ``fields``; else reported."""
        try:
            document = json.loads(change.value)
            if isinstance(document, dict) and all(f in document for f in fields):
                return document
        except ValueError:
            pass
        self.report("record", watch.unit.index, f"etcd holds a {name} value that is not a {name} document",
                    [change.value[:300]])
        return None

    def metrics_written(self, watch: Watch, change) -> None:
        document = self.document(watch, change, "metrics", ("seq", "timestamp"))
        if document is None:
            return
        seq, timestamp = int(document["seq"]), float(document["timestamp"])
        watch.writes += 1
        last = watch.metrics
        if last is not None:
            if timestamp < last.timestamp:
                self.went_back(watch, "stale-etcd", f"an older sample was written over a newer one in etcd: seq "
                               f"{last.seq} -> {seq}, sample time {last.timestamp:.3f} -> {timestamp:.3f}",
                               f"write seen at {clock_text(change.received)}; the one before at {clock_text(last.received)}")
            elif seq < last.seq and not self.new_run_between(watch.unit, last.timestamp, timestamp):
                self.went_back(watch, "seq-etcd", f"seq went back in etcd within one run: {last.seq} -> {seq}",
                               f"sample times {last.timestamp:.3f} -> {timestamp:.3f}; no new run started between")
        watch.metrics = Written(seq=seq, timestamp=timestamp, received=change.received)

    def status_written(self, watch: Watch, change) -> None:
        document = self.document(watch, change, "status", ("state",))
        if document is None:
            return
        state = str(document["state"])
        updated = iso_seconds(document.get("updated_at")) or 0.0
        last = watch.status
        if last is not None:
            if updated < last.updated:
                self.went_back(watch, "stale-etcd", f"an older status was written over a newer one in etcd: {last.state} "
                               f"(updated {last.raw}) -> {state} (updated {document.get('updated_at')})", short(document))
            elif last.state in FINAL and state not in FINAL and not self.new_run_between(watch.unit, last.updated, updated):
                self.went_back(watch, "stale-etcd", f"state {state} written after the final state {last.state}, with no "
                               "new run between", short(document))
        watch.status = Written(updated=updated, state=state, received=change.received,
                               raw=str(document.get("updated_at")))

    def went_back(self, watch: Watch, check: str, message: str, detail: str) -> None:
        self.report(check, watch.unit.index, message,
                    [detail, *self.recent(watch.unit.index, self.clock.now() - 30), *watch.unit.tail(10)])

    # -- containers

    def check_containers(self) -> None:
        services = [unit.service for unit in self.units]
        found = self.engine.containers(services)
        if found is None:
            return
        self.checks["container listings"] += 1
        for watch in self.watches:
            listed = found[watch.unit.service]
            if len(listed) > 1 and not watch.containers_open:
                watch.containers_open = True
                self.report("containers", watch.unit.index, f"{len(listed)} containers for one task: {listed}",
                            self.recent(watch.unit.index))
            elif len(listed) <= 1:
                watch.containers_open = False

    # -- records, with etcd quiet

    def reader(self):
        """A client of a member that runs (in turn, so every member's view is read)."""
        members = self.cluster.members
        for _ in range(len(members)):
            self._reader = (self._reader + 1) % len(members)
            member = members[self._reader]
            if member.proc is not None and not member.exited() and not member.frozen:
                return member.client()
        return members[0].client()

    def eligible(self, unit: Unit, now: float) -> bool:
        return (unit.alive and unit.expect is None and not unit.ended and now - unit.started >= START_GRACE
                and self.timeline.settled(unit.index, now) and self.timeline.told[unit.index] is None)

    def check_records(self, now: float) -> None:
        quiet = self.timeline.quiet(now, QUIET)
        for watch in self.watches:
            unit = watch.unit
            if not quiet or not self.eligible(unit, now):
                watch.record_looks = []
                continue
            problems, evidence = self.look(unit)
            if not self.eligible(unit, self.clock.now()) or not self.timeline.quiet(self.clock.now(), QUIET):
                watch.record_looks = []
                continue
            self.checks["records judged with etcd quiet"] += 1
            if not problems:
                watch.record_looks = []
                watch.record_open = False
                continue
            watch.record_looks.append([f"look {len(watch.record_looks) + 1} at +{now:.2f} s: {'; '.join(problems)}",
                                       *evidence])
            if len(watch.record_looks) >= LOOKS and not watch.record_open:
                watch.record_open = True
                self.report("record", unit.index, f"with etcd quiet, the record is not current: {'; '.join(problems)}",
                            [line for look in watch.record_looks for line in look] + self.recent(unit.index) + unit.tail())

    def look(self, unit: Unit) -> Tuple[List[str], List[str]]:
        """One look at a live task: its record (one read), its endpoint and its container."""
        client = self.reader()
        node = client.task(self.task_prefix(unit))
        metrics = http_get(f"{unit.url}/metrics", timeout=2)
        status = http_get(f"{unit.url}/status", timeout=2)
        containers = self.engine.containers([unit.service])
        problems: List[str] = []
        keys: Dict[str, Any] = node.keys if node is not None else {}
        evidence = [f"etcd ({client.address}): keys {sorted(keys)}, ttl {node.ttl if node else None}, "
                    f"leases {sorted(node.leases) if node else None}; status {short(keys.get('status'), 300)}; "
                    f"running {keys.get('running')}; metrics seq {(keys.get('metrics') or {}).get('seq')}",
                    f"endpoint: /metrics {metrics[0]} seq {(metrics[1] or {}).get('seq') if isinstance(metrics[1], dict) else None}; "
                    f"/status {status[0]} {short(status[1], 200)}",
                    f"engine: {containers[unit.service] if containers else 'not answering'}"]
        if node is None:
            return ["no record in etcd"], evidence
        if set(keys) != KEYS:
            problems.append(f"keys {sorted(keys)} (missing {sorted(KEYS - set(keys))}, extra {sorted(set(keys) - KEYS)})")
        if client.api == "v3":
            if node.lease is None:
                problems.append(f"the keys are not on one lease ({sorted(node.leases)})")
            elif not node.ttl:
                problems.append("its lease is gone")
        elif not node.ttl:
            problems.append("the directory has no TTL")
        state = (keys.get("status") or {}).get("state") if isinstance(keys.get("status"), dict) else None
        running = keys.get("running")
        if running is not (state == "running"):
            problems.append(f"running = {running} but the state is {state}")
        if status[0] == 200 and isinstance(status[1], dict) and status[1].get("state") != state:
            problems.append(f"etcd says {state}, the endpoint {status[1].get('state')}")
        etcd_seq = (keys.get("metrics") or {}).get("seq") if isinstance(keys.get("metrics"), dict) else None
        endpoint_seq = metrics[1].get("seq") if metrics[0] == 200 and isinstance(metrics[1], dict) else None
        if isinstance(etcd_seq, int) and isinstance(endpoint_seq, int):
            if endpoint_seq - etcd_seq > self.fresh:
                problems.append(f"etcd's metrics are {endpoint_seq - etcd_seq} samples behind the endpoint "
                                f"(seq {etcd_seq} against {endpoint_seq}; at most {self.fresh})")
            elif etcd_seq > endpoint_seq:
                problems.append(f"etcd's seq {etcd_seq} is ahead of the endpoint's {endpoint_seq}")
        elif etcd_seq is None and "metrics" in keys:
            problems.append("etcd's metrics carry no seq")
        container_id = (keys.get("info") or {}).get("container_id") if isinstance(keys.get("info"), dict) else None
        if containers is not None and container_id:
            listed = [short_id for short_id, _ in containers[unit.service]]
            if listed and not any(container_id.startswith(short_id) for short_id in listed):
                problems.append(f"etcd names container {container_id[:12]}, the engine runs {listed}")
        return problems, evidence

    # -- what the injector and the soak tell the oracle

    def supervisor_killed(self, unit: Unit, workers: Dict[str, int], at: float) -> None:
        """A killed supervisor's workers must be gone within ORPHAN_LIMIT s of the kill."""
        procs = {}
        for role, pid in workers.items():
            try:
                procs[role] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                pass

        def alive(proc: psutil.Process) -> bool:
            try:
                return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return False

        def watch() -> None:
            self.checks["killed supervisors watched"] += 1
            while self.clock.now() - at < ORPHAN_LIMIT:
                if not any(alive(p) for p in procs.values()):
                    return
                time.sleep(0.05)
            left = {role: p.pid for role, p in procs.items() if alive(p)}
            if not left:
                return
            states = []
            for role, proc in procs.items():
                try:
                    states.append(f"{role} pid {proc.pid}: {proc.status()}")
                except psutil.NoSuchProcess:
                    states.append(f"{role} pid {proc.pid}: gone")
            while self.clock.now() - at < 15 and any(alive(p) for p in procs.values()):
                time.sleep(0.1)
            still = {role: p.pid for role, p in procs.items() if alive(p)}
            self.report("orphans", unit.index, f"workers of the killed supervisor (generation {unit.gen - 1 if unit.alive else unit.gen}) "
                        f"still ran {ORPHAN_LIMIT:.0f} s after the kill: {left}",
                        states + [f"15 s after the kill: {still or 'all gone'}"])
            for proc in procs.values():
                if alive(proc):
                    try:
                        proc.kill()
                    except psutil.NoSuchProcess:
                        pass

        self.thread(f"orphans-{unit.index}", watch)

    def supervisor_exited(self, unit: Unit, exit: Exit) -> bool:
        """Judge an exit nobody asked for; True when it is explained."""
        self.checks["unexpected exits"] += 1
        output = unit.output(exit.gen)
        started = unit.started  # the generation that exited is the latest one
        never_had_it = "adopting" not in output and "created container" not in output
        if (exit.code == 1 and "cannot reach the Docker engine" in output and never_had_it
                and self.timeline.engine_was_down(started - 1, started + START_GRACE)):
            self.note(f"task {unit.index}: supervisor generation {exit.gen} exited 1: the engine was restarting at "
                      "its start (one line, exit 1, as documented); restarted like systemd would")
            return True
        node = self.reader().task(self.task_prefix(unit))
        status = (node.keys.get("status") if node else None) or {}
        reason = str(status.get("reason") or "")
        # Only the flaky task ends by itself, with FLAKY_EXIT (its restart policy giving up, say): any other
        # end was not the task's own, whatever the record says.
        if (unit.plan.flavour == "flaky" and exit.code == FLAKY_EXIT and status.get("state") == "failed"
                and status.get("exit_code") == FLAKY_EXIT and f"exited with code {FLAKY_EXIT}" in reason):
            self.note(f"task {unit.index}: supervisor generation {exit.gen} exited {exit.code}: the task ended by "
                      f"itself ({reason})")
            return True
        told = {"kill": "it was killed", "stop": "horizon stop asked it to stop", "term": "it was sent SIGTERM"}
        asked = f" (expected: {told[exit.expected]}, so exit {'-9' if exit.expected == 'kill' else '0'})" if exit.expected else ""
        self.report("exit", unit.index, f"supervisor generation {exit.gen} exited {exit.code}{asked} without being "
                    "told to, and its task did not end by itself",
                    [f"its record: {short(status, 500)}", *self.recent(unit.index), *unit.tail(25, exit.gen)])
        return False

    def control_done(self, fault: Fault, unit: Unit, result: ControlResult, asked: float, gen: int) -> None:
        """The effect of a request horizon took (not one it refused); ``gen``: the supervisor's generation
        when it was asked."""
        self.checks["control effects"] += 1
        container = f"{unit.service}.{unit.task}"
        evidence = [f"horizon {fault.action} exit {result.code} after {result.seconds:.2f} s: "
                    + " | ".join(result.output.strip().splitlines()[-4:])]
        if result.code != 0:  # what became of the request, in every generation since it was asked
            evidence += [f"  log {unit.service}.{g}: {line}" for g in range(max(1, gen), unit.gen + 1)
                         for line in unit.output(g).splitlines() if any(word in line for word in CONTROL_WORDS)][-16:]
        if result.code != 0:
            state = http_get(f"{unit.url}/status", timeout=2)
            want = {"pause": "paused", "resume": "running", "stop": "stopped"}[fault.action or ""]
            now_state = state[1].get("state") if isinstance(state[1], dict) else None
            effect = (f"yet the task is {want} at its endpoint: the request took effect, horizon's report is wrong"
                      if now_state == want else f"and the task is {now_state or 'not answering'} at its endpoint")
            self.report("control", unit.index, f"horizon {fault.action} (fault #{fault.n}, asked at +{asked:.2f} s) "
                        f"exited {result.code}, {effect}",
                        evidence + [f"endpoint /status now: {state[0]} {short(state[1], 300)}",
                                    *self.recent(unit.index, asked - 15)])
            return
        if fault.action == "stop":
            gen = unit.gen
            deadline = time.monotonic() + CONTROL_TIMEOUT
            while unit.gen == gen and unit.alive and time.monotonic() < deadline:
                time.sleep(0.1)
            code = unit.sup.proc.returncode if unit.sup is not None and unit.sup.proc is not None else None
            problems = []
            if unit.gen == gen and unit.alive:
                problems.append(f"its supervisor still runs {CONTROL_TIMEOUT} s after the record said stopped")
            elif unit.gen == gen and code != 0:
                problems.append(f"its supervisor exited {code}, not 0")
            containers = None
            deadline = time.monotonic() + 30  # the engine may be restarting: ask until it answers
            while containers is None and time.monotonic() < deadline:
                time.sleep(1.0)
                containers = self.engine.containers([unit.service])
            if unit.gen == gen and containers is not None and containers[unit.service]:
                problems.append(f"its container is still there after the supervisor's end: {containers[unit.service]}")
            if problems:
                self.report("control", unit.index, f"horizon stop (fault #{fault.n}): {'; '.join(problems)}",
                            evidence + self.recent(unit.index, asked - 15) + unit.tail(gen=gen))
            return
        want_paused = fault.action == "pause"
        deadline = time.monotonic() + 5
        seen: Any = None
        while time.monotonic() < deadline:
            attrs = self.engine.inspect(container)
            seen = (attrs or {}).get("State", {}).get("Paused") if attrs else None
            if seen is want_paused or self.engine.down:
                return
            if not unit.alive or unit.expect is not None:
                return  # killed or stopped meanwhile: nothing to judge
            time.sleep(0.2)
        self.report("control", unit.index, f"horizon {fault.action} (fault #{fault.n}) said done, but the engine says "
                    f"the container is {'not ' if want_paused else ''}paused (Paused = {seen})",
                    evidence + self.recent(unit.index, asked - 15))

    # -- the end

    def final(self, units: List[Unit], run_dir: str) -> None:
        """After every supervisor's SIGTERM: records stopped; no container, process, shm entry or file left."""
        client = self.reader()
        for unit in units:
            node = None
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                node = client.task(self.task_prefix(unit))
                if node is not None:
                    break
                time.sleep(0.5)
                client = self.reader()
            keys = node.keys if node is not None else {}
            status = keys.get("status") if isinstance(keys.get("status"), dict) else {}
            if status.get("state") != "stopped" or keys.get("running") is not False:
                self.report("end", unit.index, f"after SIGTERM the record says state {status.get('state')}, running "
                            f"{keys.get('running')} (want stopped, false)", [short(keys, 600), *unit.tail()])
        containers = self.engine.containers([unit.service for unit in units])
        left = {service: listed for service, listed in (containers or {}).items() if listed}
        if containers is None:
            self.report("end", None, "the engine did not answer at the end: containers unchecked", [])
        elif left:
            self.report("end", None, f"containers left after SIGTERM: {left}", [])
        deadline = time.monotonic() + 3
        stray: Dict[int, List[int]] = {}
        while time.monotonic() < deadline:
            stray = {pgid: pids for unit in units for pgid in unit.pgids if (pids := group_processes(pgid))}
            if not stray:
                break
            time.sleep(0.2)
        if stray:
            details = []
            for pids in stray.values():
                for pid in pids:
                    try:
                        proc = psutil.Process(pid)
                        details.append(f"pid {pid} {proc.name()} {proc.status()}: {' '.join(proc.cmdline())[:120]}")
                    except psutil.NoSuchProcess:
                        pass
            self.report("end", None, f"processes left after SIGTERM (process group: pids): {stray}", details)
        new_shm = shm_entries() - self.shm_before
        if new_shm:
            self.report("end", None, f"left in /dev/shm: {sorted(new_shm)}", [])
        files = sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []
        if files:
            self.report("end", None, f"left in the run directory {run_dir}: {files}", [])

    # -- evidence

    def recent(self, task: Optional[int], since: Optional[float] = None) -> List[str]:
        """This task's own and the fleet-wide faults since ``since`` (default: the last 20 s), for a
        violation's evidence."""
        if self.outcomes is None:
            return []
        since = self.clock.now() - 20.0 if since is None else since
        lines = [f"fault #{o.fault.n} at +{o.at:.2f} s: {o.fault.describe()}{'' if o.done else ' (skipped)'}"
                 for o in sorted(self.outcomes(), key=lambda o: o.at)
                 if o.at >= since and (task is None or o.fault.task in (None, task))]
        return lines or [f"no fault to this task or fleet-wide since +{since:.2f} s"]


def shm_entries() -> Set[str]:
    try:
        return {name for name in os.listdir("/dev/shm") if name.startswith(SHM_NAMES)}
    except OSError:
        return set()
