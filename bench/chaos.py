"""``python -m bench chaos --seed N --minutes M --tasks K [--api v2|v3]``: a seeded chaos soak (issue 13).

K supervisors (task files, as systemd runs them; task 0 with ``restart = on-failure`` and a task that fails
every so often) on a 3-member etcd cluster of the soak's own (loopback) and a Docker engine of its own
with live-restore, while faults drawn from ``random.Random(seed)`` come every 3-8 s: kill -9 and SIGSTOP
of workers, kill -9 of supervisors (restarted 1-4 s later with the same file), SIGSTOP and kill -9 of etcd
members (restarted on their data directory), ``horizon stop|pause|resume`` (a stopped task started again
later, as an operator would), and restarts of the engine. The plan is in bench/chaos_plan.py (``--plan``
prints it), the faults and the fleet in bench/chaos_faults.py, and the oracle, which judges continuously
and at the end and prints every violation with its evidence, in bench/chaos_oracle.py.

Every fault is logged with its time (soak seconds and wall clock). At the end every supervisor gets
SIGTERM and the oracle checks that nothing is left. A summary follows (faults by kind, violations), and,
under ``python -m bench``, the rows for bench/RESULTS.md. Exit status 0 with no violation, 1 otherwise.
The soak's files (task files, each supervisor generation's log, the etcd members' logs) are kept when
something was found, or with ``--keep``.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import psutil

from bench.chaos_faults import START_GRACE, Clock, Engine, Exit, Injector, Say, Timeline, Unit, World, write_ini
from bench.chaos_oracle import QUIET, Oracle
from bench.chaos_plan import KINDS, Plan, draw
from tests.support.etcd_cluster import Cluster
from tests.support.leftovers import group_processes
from tests.support.net import http_get
from tests.support.services import services_up

INTERVAL = 0.25
PUBLISH_EVERY = 4
TTL = 10
STOP_LIMIT = 40.0  # seconds a SIGTERMed supervisor has to exit (the unit's TimeoutStopSec)


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="the plan's seed (default: a random one, printed)")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long faults come (default 10)")
    parser.add_argument("--tasks", type=int, default=3, help="supervisors, one task each (default 3, at least 2)")
    parser.add_argument("--api", choices=("v2", "v3"), default="v3", help="etcd API of the cluster and the "
                        "supervisors (v3: etcd 3.5; v2: etcd 3.4 with --enable-v2)")
    parser.add_argument("--interval", type=float, default=INTERVAL, help=f"[metrics] interval (default {INTERVAL})")
    parser.add_argument("--plan", action="store_true", help="print the plan (tasks and every fault) and exit")
    parser.add_argument("--keep", action="store_true", help="keep the soak's files even when nothing was found")
    parser.add_argument("--record", action="store_true", help="append this run's row (with its date and commit) "
                        "to bench/CHAOS.md, which bench/RESULTS.md includes")
    parser.add_argument("--shared-engine", action="store_true", help="use the shared Docker engine (then the "
                        "engine is never restarted) instead of a private dockerd")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    if args.tasks < 2:
        parser.error("--tasks: at least 2 (task 0 is the flaky one)")
    if args.minutes <= 0:
        parser.error("--minutes: more than 0")
    return args


def free_low_port(rng: random.Random, taken: List[int]) -> int:
    """A loopback port below the ephemeral range, so no outgoing connection takes a task's port while its
    supervisor is down (it is bound again by the next one)."""
    while True:
        port = rng.randrange(20000, 32000)
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class Soak:
    def __init__(self, args: argparse.Namespace, plan: Plan) -> None:
        self.args = args
        self.plan = plan
        self.clock = Clock()
        self.say = Say(self.clock)
        self.run_id = uuid.uuid4().hex[:6]
        self.namespace = f"/horizon-chaos-{self.run_id}"
        self.work = Path(tempfile.mkdtemp(prefix=f"hz-chaos-{args.api}-", dir="/tmp"))
        self.run_dir = self.work / "run"
        self.logs = self.work / "logs"
        for folder in (self.run_dir, self.logs, self.work / "ini", self.work / "dockerd"):
            folder.mkdir()
        self.engine = Engine(self.work / "dockerd", self.say)
        self.cluster: Optional[Cluster] = None
        self.units: List[Unit] = []
        self.timeline = Timeline(len(plan.tasks), self.clock)
        self.oracle: Optional[Oracle] = None
        self.injector: Optional[Injector] = None
        self.timers: List[Tuple[float, int, str, Callable[[], None]]] = []
        self.timer_lock = threading.Lock()
        self.timer_n = 0
        self.systemd = random.Random(args.seed * 7919 + 1)  # restart delays after deaths nobody planned
        self.setup_error = ""
        self.took = 0.0
        self.tracebacks: List[str] = []  # supervisor generations whose log shows one

    # -- timers

    def later(self, at: float, label: str, work: Callable[[], None]) -> None:
        with self.timer_lock:
            self.timer_n += 1
            heapq.heappush(self.timers, (at, self.timer_n, label, work))

    def run_timers(self) -> None:
        while True:
            with self.timer_lock:
                if not self.timers or self.timers[0][0] > self.clock.now():
                    return
                _, _, label, work = heapq.heappop(self.timers)
            try:
                work()
            except Exception as exc:  # noqa: BLE001
                self.say(f"{label}: failed: {type(exc).__name__}: {exc}")

    # -- setup

    def setup(self) -> None:
        args = self.args
        self.say(f"chaos soak: etcd {args.api}, seed {args.seed}, {args.minutes:g} min, {args.tasks} tasks, plan "
                 f"{self.plan.digest()} ({len(self.plan.faults)} faults); files in {self.work}")
        services_up(quiet=True)
        self.engine.start(want_private=not args.shared_engine)
        if self.engine.private is not None:
            self.say(f"engine: a private dockerd with live-restore at {self.engine.host}")
        else:
            self.say(f"engine: the shared one; the engine-restart fault is left out: {self.engine.why_shared}")
        self.cluster = Cluster(3, api=args.api).start()
        self.say(f"etcd: 3 members ({args.api}) at {self.cluster.hosts}")
        env = {"HORIZON_RUN_DIR": str(self.run_dir)}
        if self.engine.host:
            env["DOCKER_HOST"] = self.engine.host
        ports: List[int] = []
        ports_rng = random.Random()
        for plan in self.plan.tasks:
            service = f"chaos{plan.index}-{self.run_id}"
            port = free_low_port(ports_rng, ports)
            ports.append(port)
            ini = self.work / "ini" / f"{service}.ini"
            write_ini(ini, plan, service, "t1", self.namespace, args.api, self.cluster.hosts, port, args.interval,
                      PUBLISH_EVERY, TTL)
            unit = Unit(plan.index, plan, service, "t1", self.namespace, ini, port, self.logs, env, self.run_dir,
                        self.cluster.client(plan.index % 3))
            self.units.append(unit)
        for unit in self.units:
            unit.start(self.clock)
        deadline = time.monotonic() + 90
        waiting = list(self.units)
        while waiting and time.monotonic() < deadline:
            for unit in list(waiting):
                if not unit.alive:
                    raise RuntimeError(f"the supervisor of task {unit.index} exited at start:\n" + "\n".join(unit.tail(20)))
                if http_get(f"{unit.url}/metrics", timeout=2)[0] == 200 and unit.sup.state() in ("running", "restarting"):
                    waiting.remove(unit)
            time.sleep(0.2)
        if waiting:
            raise RuntimeError(f"tasks {[u.index for u in waiting]} not serving and running in etcd within 90 s")
        for unit in self.units:
            self.say(f"task {unit.index} ({unit.plan.flavour}): {unit.name} at {unit.url}, supervisor pid {unit.pid}")
        world = World(self.clock, self.say, self.units, self.cluster, self.engine, self.timeline, args.api,
                      self.namespace, self.work)
        self.oracle = Oracle(world, args.interval, PUBLISH_EVERY)
        self.injector = Injector(world, self.later, self.oracle, self.reap)
        self.oracle.outcomes = lambda: list(self.injector.outcomes)
        self.clock.t0 = time.monotonic()  # the plan's times count from here
        for unit in self.units:
            unit.started = 0.0  # START_GRACE counts from their start, which was just now or before
        self.oracle.start()
        self.say("faults begin")

    # -- the run

    def reap(self) -> None:
        for unit in self.units:
            sup = unit.sup
            if sup is None or sup.proc is None or sup.proc.poll() is None:
                continue
            if unit.exits and unit.exits[-1].gen == unit.gen:
                continue  # seen already
            code = sup.proc.returncode
            exit = Exit(unit.gen, code, self.clock.now(), unit.expect)
            unit.exits.append(exit)
            unit.close_log()
            if unit.expect == "kill" and code == -signal.SIGKILL:
                continue  # the fault restarts it
            if unit.expect in ("stop", "term") and code == 0:
                if unit.expect == "stop":
                    self.say(f"task {unit.index}: supervisor generation {unit.gen} exited 0 after horizon stop")
                continue
            self.say(f"task {unit.index}: supervisor generation {unit.gen} exited {code} (expected: {unit.expect})")
            assert self.oracle is not None and self.injector is not None
            self.oracle.supervisor_exited(unit, exit)
            if unit.ended:
                continue
            if unit.restart_at is None:
                delay = self.systemd.uniform(1.0, 4.0) if code != 0 else 5.0
                unit.restart_at = self.clock.now() + delay
                why = ("Restart=on-failure" if code != 0 else "an operator") + f" after exit {code}"
                self.timeline.unsettle(unit.index, unit.restart_at + START_GRACE)
                self.later(unit.restart_at, f"restart task {unit.index}",
                           lambda u=unit, w=why: self.injector.restart_unit(u, w))

    def run(self) -> None:
        assert self.injector is not None
        faults = list(self.plan.faults)
        while True:
            now = self.clock.now()
            if now >= self.plan.duration and not faults:
                break
            while faults and faults[0].at <= now:
                self.injector.inject(faults.pop(0))
            self.run_timers()
            self.reap()
            time.sleep(0.05)
        self.say("the plan is done: undoing what is still undone, then the end")

    def settle(self) -> None:
        """Let every undo run (SIGCONT, members and supervisors restarted), every supervisor run, and the
        fleet be quiet, before the end's checks."""
        assert self.injector is not None and self.cluster is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            self.run_timers()
            self.reap()
            threads_busy = any(t.is_alive() for t in self.injector.threads)
            with self.timer_lock:
                pending = bool(self.timers)
            if not pending and not threads_busy:
                break
            time.sleep(0.1)
        self.injector.thaw_all()
        for index, member in enumerate(self.cluster.members):
            if member.frozen:
                member.thaw()
                self.timeline.etcd_restore(index)
            if member.exited():
                self.injector.restart_member(index)
        for unit in self.units:
            if not unit.alive:
                self.injector.restart_unit(unit, "for the end: every task is stopped by SIGTERM")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.reap()
            self.run_timers()
            now = self.clock.now()
            ready = all(unit.alive and now - unit.started >= START_GRACE and self.timeline.settled(unit.index, now)
                        for unit in self.units)
            if ready and self.timeline.quiet(now, QUIET + 3):
                break
            time.sleep(0.2)
        time.sleep(5)  # a couple of the oracle's looks at the quiet fleet

    def end(self) -> None:
        """SIGTERM to every supervisor, as systemd stops the units (KillMode=mixed: the main process)."""
        assert self.oracle is not None
        self.say("SIGTERM to every supervisor")
        for unit in self.units:
            unit.ended = True
            unit.expect = "term"
            self.timeline.stop_asked(unit.index, self.clock.now())
            if unit.alive and unit.pid:
                os.kill(unit.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_LIMIT
        while time.monotonic() < deadline and any(unit.alive for unit in self.units):
            time.sleep(0.1)
        for unit in self.units:
            if unit.alive:
                self.oracle.report("end", unit.index, f"the supervisor still runs {STOP_LIMIT:.0f} s after SIGTERM",
                                   unit.tail(25))
                unit.sup.signal_group(signal.SIGKILL)
                unit.sup.proc.wait(10)
            code = unit.sup.proc.returncode
            unit.exits.append(Exit(unit.gen, code, self.clock.now(), "term"))
            unit.close_log()
            if code != 0:
                self.oracle.report("end", unit.index, f"the supervisor exited {code} after SIGTERM, not 0", unit.tail(25))
        self.oracle.final(self.units, str(self.run_dir))

    def teardown(self) -> None:
        self.tracebacks = [f"{unit.service}.{gen}" for unit in self.units for gen in range(1, unit.gen + 1)
                           if "Traceback" in unit.output(gen)]
        if self.injector is not None:
            self.injector.thaw_all()
        if self.oracle is not None and not self.oracle.done.is_set():
            self.oracle.done.set()
        for unit in self.units:
            if unit.sup is not None:
                unit.sup.signal_group(signal.SIGKILL)
            for pgid in unit.pgids:
                for pid in group_processes(pgid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            if unit.sup is not None and unit.sup.proc is not None:
                try:
                    unit.sup.proc.wait(10)
                except Exception:  # noqa: BLE001
                    pass
            unit.close_log()
        try:
            found = self.engine.containers([unit.service for unit in self.units]) or {}
            ids = [short_id for listed in found.values() for short_id, _ in listed]
            for short_id in ids:
                with self.engine.lock:
                    self.engine.client().api.remove_container(short_id, force=True)
        except Exception as exc:  # noqa: BLE001
            self.say(f"teardown: containers: {exc}")
        if self.cluster is not None:
            for member in self.cluster.members:  # keep the members' logs with the soak's
                for log in Path(self.cluster.dir).glob(f"{member.name}.log*"):
                    shutil.copy(log, self.logs / f"etcd-{log.name}")
            self.cluster.stop()
        if self.engine.private is not None and self.engine.private.log.exists():
            shutil.copy(self.engine.private.log, self.logs / "dockerd.log")  # the engine's folder goes with it
        try:
            self.engine.close()
        except Exception as exc:  # noqa: BLE001
            self.say(f"teardown: engine: {exc}")
        # What the private engine may leave: a containerd shim (and its runc init) of a container whose start
        # was cut short by an engine restart outlives dockerd; every such process names the soak's folder.
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if str(self.work) in " ".join(proc.info["cmdline"] or ()):
                self.say(f"teardown: killing a process the private engine left: pid {proc.pid} "
                         f"{' '.join(proc.info['cmdline'])[:100]}")
                for victim in [*proc.children(recursive=True), proc]:
                    try:
                        victim.kill()
                    except psutil.NoSuchProcess:
                        pass

    # -- the summary

    def summary(self) -> str:
        args, plan = self.args, self.plan
        oracle, injector = self.oracle, self.injector
        lines = ["", "=" * 100,
                 f"chaos soak: etcd {args.api}, seed {args.seed}, {args.minutes:g} min of faults, {args.tasks} tasks, "
                 f"interval {args.interval} s, plan {plan.digest()}; {self.took / 60:.1f} min in all",
                 f"engine: {'private dockerd with live-restore' if self.engine.private is not None else 'shared (' + self.engine.why_shared + ')'}"]
        if self.setup_error:
            lines.append(f"SETUP FAILED: {self.setup_error}")
        outcomes = injector.outcomes if injector is not None else []
        done = sum(1 for o in outcomes if o.done)
        lines.append(f"faults: {len(plan.faults)} planned, {done} carried out, {len(outcomes) - done} skipped")
        for kind in KINDS:
            mine = [o for o in outcomes if o.fault.kind == kind]
            if kind == "control":
                detail = ", ".join(f"{a} {sum(1 for o in mine if o.fault.action == a and o.done)}/"
                                   f"{sum(1 for o in mine if o.fault.action == a)}" for a in ("stop", "pause", "resume"))
                extra = f" ({detail})"
            else:
                extra = ""
            lines.append(f"  {kind:<16s} {sum(1 for o in mine if o.done):4d} done, {sum(1 for o in mine if not o.done):3d} skipped{extra}")
        skipped = [o for o in outcomes if not o.done]
        reasons: Dict[str, int] = {}
        for o in skipped:
            reasons[o.detail.split(" (")[0]] = reasons.get(o.detail.split(" (")[0], 0) + 1
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"    skipped {count}×: {reason}")
        for unit in self.units:
            starts = unit.gen
            watch = oracle.watches[unit.index] if oracle is not None else None
            lines.append(f"task {unit.index} ({unit.plan.flavour}): supervisor starts {starts}, runs of the task {unit.epoch}; "
                         + (f"endpoint {watch.answers}/{watch.polls} polls answered, seq up to {watch.endpoint_max}; "
                            f"etcd {watch.writes} metrics writes seen, {watch.gaps} watch gaps" if watch else ""))
        if oracle is not None:
            lines.append(f"checks made: {', '.join(f'{k} {v}' for k, v in oracle.checks.items())}")
            for note in oracle.notes:
                lines.append(f"note {note}")
        if self.tracebacks:  # not a violation of the soak's list, but never meant to be seen
            lines.append(f"note: a Python traceback in the log of supervisor generation(s) {', '.join(self.tracebacks)}")
        violations = oracle.violations if oracle is not None else []
        by_check: Dict[str, int] = {}
        for v in violations:
            by_check[v.check] = by_check.get(v.check, 0) + 1
        lines.append(f"violations: {len(violations)}" + (f" ({', '.join(f'{k} {n}' for k, n in by_check.items())})"
                                                           if violations else ""))
        for v in violations:
            lines.append(v.text())
        ok = not violations and not self.setup_error
        lines.append(f"result: {'PASS' if ok else 'FAIL'}; files {'kept in ' + str(self.work) if self.work.exists() else 'removed'}")
        return "\n".join(lines)

    def violation_count(self) -> int:
        return len(self.oracle.violations) if self.oracle is not None else 0


def rows(soak: Soak) -> List[Tuple[str, object]]:
    from bench.common import Row

    args = soak.args
    outcomes = soak.injector.outcomes if soak.injector is not None else []
    done: Dict[str, int] = {}
    for o in outcomes:
        if o.done:
            done[o.fault.kind] = done.get(o.fault.kind, 0) + 1
    count = soak.violation_count() + (1 if soak.setup_error else 0)
    kinds = ", ".join(f"{kind} {done.get(kind, 0)}" for kind in KINDS)
    engine = "private dockerd, live-restore" if soak.engine.private is not None else "shared engine, no engine restarts"
    return [("chaos", Row(f"chaos soak, etcd {args.api}, seed {args.seed}, {args.minutes:g} min, {args.tasks} tasks",
                          f"{count} violations", f"{sum(done.values())} faults injected", "", "0 violations", count == 0,
                          f"faults: {kinds}; {engine}; interval {args.interval} s; plan {soak.plan.digest()}"))]


def main(argv: Optional[List[str]] = None, as_bench: bool = False) -> int:
    args = parse(argv)
    plan = draw(args.seed, args.minutes, args.tasks)
    if args.plan:
        print(plan.text())
        return 0
    soak = Soak(args, plan)
    started = time.monotonic()

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (a CI timeout): tear down what the soak started, as on Ctrl-C

    signal.signal(signal.SIGTERM, terminated)
    interrupted = False
    try:
        try:
            soak.setup()
        except Exception as exc:  # noqa: BLE001 - said in the summary; exit 1
            traceback.print_exc()
            soak.setup_error = f"{type(exc).__name__}: {exc}"
        if not soak.setup_error:
            soak.run()
            soak.settle()
            soak.end()
    except KeyboardInterrupt:
        interrupted = True
        soak.setup_error = soak.setup_error or "interrupted"
    finally:
        if soak.oracle is not None and not soak.oracle.done.is_set():
            try:
                soak.oracle.stop()
            except Exception as exc:  # noqa: BLE001
                soak.say(f"oracle: could not finish reading etcd's history: {exc}")
        soak.teardown()
        soak.took = time.monotonic() - started
        failed = soak.violation_count() > 0 or bool(soak.setup_error)
        if not failed and not args.keep:
            shutil.rmtree(soak.work, ignore_errors=True)
        print(soak.summary(), flush=True)
    if as_bench:
        from bench import report

        results = rows(soak)
        print(report.table(results))
        print("\nrows for bench/RESULTS.md:\n" + report.markdown(results))
    if args.record:
        from bench import report

        report.record_soak(rows(soak), soak.took)
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
