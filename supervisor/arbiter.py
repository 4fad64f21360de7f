"""Generic supervision of worker processes: spawn, reap, restart with backoff and give up, find hung
workers, dispatch signals, ping systemd's watchdog. What the workers are for is not known here: each
worker has a ``Role`` (supervisor/roles.py) and the program's course is a ``Conductor``'s
(supervisor/taskflow.py).

Like gunicorn's arbiter, the signal handlers only queue the signal; the single-threaded main loop
(a select over the workers' pipes, their process sentinels and the signal wakeup pipe) dispatches
``handle_<signal>``. Nothing here blocks on etcd or Docker.

A worker's exit code tells what its end means (``Role.on_exit``): a worker that finished its job is not
restarted; one that crashed is restarted with a doubling delay, and after ``Policy.max_tries`` deaths
in a row the role gives up (``Role.on_give_up``), so a worker that cannot work is never restarted
forever. A worker past its heartbeat's promise by the conductor's ``hang_grace`` is hung (SIGSTOPped,
or in a call that never returns): it is killed, and restarted like any dead worker. When the parent
itself did not run for a while (the whole host or process group was stalled), every worker gets that
grace to beat again before it is judged: they were stalled with it, not hung.
"""

from __future__ import annotations

import abc
import enum
import logging
import multiprocessing
import os
import select
import signal
import sys
import time
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from supervisor import HELD_SIGNALS, channel
from supervisor.frames import Frame, TaskKey
from supervisor.link import EXIT_ORPHANED, WorkerStart
from supervisor.notify import Notifier
from supervisor.restarts import Restarts, State
from supervisor.shm import Heartbeat, SharedMemory

log = logging.getLogger("supervisor")

STARTUP_ALLOWANCE = 15.0  # seconds a new worker may take to import its libraries and beat once
SHUTDOWN_GRACE = 2.0
IDLE_WAKE = 30.0  # nothing due (no worker runs): look around anyway this often
WATCHDOG_RETRY = 0.5  # seconds before a withheld watchdog ping is tried again


class Verdict(enum.Enum):
    RESTART = "restart"  # it crashed (or hung): restart it, with backoff
    DONE = "done"  # its job is over: let it be


class Child:
    """One running worker process and its two pipes."""

    def __init__(self, process: multiprocessing.process.BaseProcess, inbox: channel.Inbox, outbox: channel.Outbox) -> None:
        self.process = process
        self.inbox = inbox
        self.outbox = outbox
        self.hung = False  # killed by us for missing its heartbeat

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


class Role(abc.ABC):
    """One kind of worker: what it is given, what a (re)started one is told, what its frames and its exit
    mean. Subclasses set ``name`` (also its heartbeat's and its process's) and ``module`` (whose
    ``entry`` function, ``entry(start, *entry_args())``, is the worker; imported in the child, after the fork)."""

    name: str
    module: str
    entry = "run"

    def __init__(self, restarts: Optional[Restarts] = None) -> None:
        self.restarts = restarts or Restarts()
        self.child: Optional[Child] = None
        self.spawned = 0  # workers started in all: the restarts are the ones after the first
        self.retired = False  # its job is over, or it was given up: never (re)start it again

    @property
    def wanted(self) -> bool:
        """Whether a worker should run now (a dead one is restarted once its backoff is over)."""
        return not self.retired

    @abc.abstractmethod
    def entry_args(self) -> Tuple[Any, ...]:
        """What the worker module's ``run`` takes after its ``WorkerStart``."""

    def kept_fds(self) -> Sequence[int]:
        """The parent's descriptors this worker keeps open (all others are closed in the child)."""
        return ()

    def replay(self) -> None:
        """Bring a (re)started worker up to date."""

    def on_frame(self, frame: Frame) -> None:
        log.error("bug: the %s worker sent a %s frame, which it never should", self.name, frame.kind)

    @abc.abstractmethod
    def on_exit(self, code: Optional[int]) -> Verdict:
        """What the worker's exit (its code; negative: killed by that signal) means."""

    @abc.abstractmethod
    def on_give_up(self, message: str) -> None:
        """The worker died too often in a row: it is not restarted again."""

    def send(self, kind: str, task: TaskKey, body: Dict[str, Any]) -> None:
        if self.child is not None:
            try:
                self.child.outbox.send(kind, task, body)
            except BrokenPipeError:
                pass  # it died; its sentinel will say so

    def send_encoded(self, kind: str, task: TaskKey, data: bytes) -> None:
        if self.child is not None:
            try:
                self.child.outbox.send_encoded(kind, task, data)
            except BrokenPipeError:
                pass


def parent_figures(roles: Sequence[Role], relayed: int) -> Dict[str, Any]:
    """The parent's own report (supervisor/selfstats.py): frames relayed and dropped, workers restarted."""
    malformed = sum(role.child.inbox.malformed for role in roles if role.child is not None)
    return {"frames_relayed": relayed, "frames_malformed": malformed,
            "restarts": {role.name: max(0, role.spawned - 1) for role in roles}}


class Conductor(Protocol):
    """What the arbiter asks of the program it runs."""

    @property
    def roles(self) -> Sequence[Role]: ...

    @property
    def over(self) -> bool: ...

    @property
    def hang_grace(self) -> float: ...

    def wake_at(self) -> Optional[float]: ...

    def tick(self, now: float) -> None: ...

    def stop(self, why: str) -> None: ...

    def reload(self) -> None: ...

    def problem(self, now: float) -> Optional[str]: ...

    def parent_fds(self) -> List[int]: ...


def run_worker(module: str, entry: str, start: WorkerStart, *args: Any) -> None:
    """A worker's entry point, imported in the child after the fork: the parent never imports docker,
    python-etcd or tornado, so each worker's RSS holds only its own library (~40 MB less in all).

    A pipe to the parent broken under a worker's write means the parent was killed: the worker leaves as
    an orphan does (the container stays for the next supervisor to adopt), with one line, no traceback."""
    try:
        getattr(__import__(module, fromlist=[entry]), entry)(start, *args)
    except BrokenPipeError:
        logging.getLogger(start.role).warning("the supervisor is gone (its pipe is closed); exiting")
        sys.exit(EXIT_ORPHANED)


class Arbiter:
    def __init__(self, conductor: Conductor, shm: SharedMemory, log_level: int = logging.INFO,
                 notifier: Optional[Notifier] = None) -> None:
        self.conductor = conductor
        self.roles = list(conductor.roles)
        self.grace = conductor.hang_grace
        self.heartbeats: Dict[str, Heartbeat] = shm.heartbeats
        self.log_level = log_level
        self.notifier = notifier or Notifier()
        self.ctx = multiprocessing.get_context("fork")  # workers inherit the shared pages and the sockets
        self.signals: List[int] = []
        self.wake_at = self.returned_at = time.monotonic()  # when select was meant to return, and did
        self.judge_hangs_from = 0.0  # after a stall of our own, heartbeats are not judged until then
        self.next_watchdog = 0.0
        self.reported_problem: Optional[str] = None

    # -- set-up -------------------------------------------------------------------------------

    def run(self) -> None:
        self._wake_r, self._wake_w = channel.pipe()
        self.install_signals()
        try:
            for role in self.roles:
                if role.wanted:
                    self.spawn(role)
            self.loop()
        finally:
            self.shutdown()

    def install_signals(self) -> None:
        """Handle the stop signals from now on, including one that came during the start-up: the entry
        points block them first thing (``hold_signals``), so it waited, pending, instead of killing us."""
        signal.set_wakeup_fd(self._wake_w)
        for signum in HELD_SIGNALS:
            signal.signal(signum, self.queue_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)

    def queue_signal(self, signum: int, frame: Any) -> None:
        if len(self.signals) < 8:
            self.signals.append(signum)

    def parent_fds(self) -> List[int]:
        fds = [self._wake_r, self._wake_w, *self.conductor.parent_fds()]
        for role in self.roles:
            if role.child is not None:
                fds += [role.child.inbox.fd, role.child.outbox.fd]
        return fds

    def spawn(self, role: Role) -> None:
        to_r, to_w = channel.pipe()
        from_r, from_w = channel.pipe()
        kept = set(role.kept_fds())
        close = tuple(fd for fd in self.parent_fds() + [to_w, from_r] if fd not in kept)
        heartbeat = self.heartbeats[role.name]
        heartbeat.promise(STARTUP_ALLOWANCE)
        start = WorkerStart(role.name, to_r, from_w, close, self.log_level, heartbeat)
        process = self.ctx.Process(
            target=run_worker, args=(role.module, role.entry, start, *role.entry_args()), name=f"horizon-{role.name}", daemon=True,
        )
        process.start()
        os.close(to_r)
        os.close(from_w)
        role.child = Child(process, channel.Inbox(from_r), channel.Outbox(to_w))
        role.spawned += 1
        role.restarts.started(time.monotonic())
        log.debug("started the %s worker, pid %s", role.name, process.pid)
        role.replay()

    # -- the loop -----------------------------------------------------------------------------

    def loop(self) -> None:
        while not self.conductor.over:
            readers: List[Any] = [self._wake_r]
            writers: List[int] = []
            for role in self.roles:
                child = role.child
                if child is not None:
                    readers.append(child.process.sentinel)
                    if not child.inbox.eof:
                        readers.append(child.inbox.fd)
                    if child.outbox.pending:
                        writers.append(child.outbox.fd)
            timeout = self.timeout()
            self.wake_at = time.monotonic() + timeout
            readable, writable, _ = select.select(readers, writers, [], timeout)
            self.returned_at = time.monotonic()
            if self._wake_r in readable:
                self.dispatch_signals()
            for role in self.roles:
                child = role.child
                if child is None:
                    continue
                if child.inbox.fd in readable:
                    self.receive(role, child)
                if child.outbox.fd in writable:
                    try:
                        child.outbox.flush()
                    except BrokenPipeError:
                        pass
                if child.process.sentinel in readable:
                    self.reap(role, child)
            self.tick(time.monotonic())

    def timeout(self) -> float:
        now = time.monotonic()
        wake = [now + IDLE_WAKE]
        for role in self.roles:
            if role.child is not None and not role.child.hung:
                wake.append(max(self.heartbeats[role.name].due + self.grace, self.judge_hangs_from))
            elif role.child is None and role.wanted and role.restarts.restart_at is not None:
                wake.append(role.restarts.restart_at)
        deadline = self.conductor.wake_at()
        if deadline is not None:
            wake.append(deadline)
        if self.notifier.watchdog_interval:
            wake.append(self.next_watchdog)
        return max(0.0, min(wake) - now)

    def tick(self, now: float) -> None:
        # Woken far later than meant to, or held up after waking: we did not run either (a stalled host).
        stalled = max(self.returned_at - self.wake_at, now - self.returned_at)
        if stalled > self.grace:
            log.warning("the supervisor did not run for %.1f s (a stalled host?); its workers get %.1f s to beat again",
                        stalled, self.grace)
            self.judge_hangs_from = now + self.grace
        for role in self.roles:
            if role.child is not None:
                if not role.child.hung and now >= self.judge_hangs_from:
                    self.check_heartbeat(role, role.child, now)
            elif role.wanted and role.restarts.due(now):
                log.info("restarting the %s worker (try %d)", role.name, role.restarts.tries)
                self.spawn(role)
            elif role.wanted and role.restarts.state is State.RUNNING:
                self.spawn(role)  # wanted from now on (the container worker, once etcd answers)
        self.conductor.tick(now)
        if self.notifier.watchdog_interval and now >= self.next_watchdog:
            self.ping_watchdog(now)
            # A ping withheld is tried again soon: waiting a whole period would leave systemd a gap of WatchdogSec.
            retry = WATCHDOG_RETRY if self.reported_problem else self.notifier.watchdog_interval
            self.next_watchdog = now + min(retry, self.notifier.watchdog_interval)

    def check_heartbeat(self, role: Role, child: Child, now: float) -> None:
        due = self.heartbeats[role.name].due
        late = now - due
        if late > self.grace:
            log.error("the %s worker (pid %d) made no progress for %.1f s past its heartbeat (due at %.3f): hung; "
                      "killing it", role.name, child.pid, late, due)
            child.hung = True
            try:
                os.kill(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it just ended: its sentinel says so

    # -- systemd's watchdog -------------------------------------------------------------------

    def problem(self, now: float) -> Optional[str]:
        """What is wrong right now, or None: every wanted worker runs and keeps its heartbeat, and the
        conductor sees nothing wrong (a fresh sample)."""
        for role in self.roles:
            if role.wanted and role.child is None:
                return f"the {role.name} worker is not running"
            if role.child is not None and now > self.heartbeats[role.name].due:
                return f"the {role.name} worker is late with its heartbeat"
        return self.conductor.problem(now)

    def ping_watchdog(self, now: float) -> None:
        """WATCHDOG=1 only while all is well; otherwise a STATUS= line says what is wrong, once per problem,
        and another one says when all is well again."""
        problem = self.problem(now)
        if problem is None:
            self.notifier.send("WATCHDOG=1", *(["STATUS=all workers well"] if self.reported_problem else []))
        elif problem != self.reported_problem:
            self.notifier.send(f"STATUS={problem}")
            log.warning("withholding the watchdog ping: %s", problem)
        self.reported_problem = problem

    # -- signals ------------------------------------------------------------------------------

    def dispatch_signals(self) -> None:
        try:
            os.read(self._wake_r, 512)
        except BlockingIOError:
            pass
        while self.signals:
            signum = self.signals.pop(0)
            handler = {
                signal.SIGTERM: self.handle_stop, signal.SIGINT: self.handle_stop,
                signal.SIGQUIT: self.handle_stop, signal.SIGHUP: self.handle_sighup,
            }[signal.Signals(signum)]
            handler(signum)

    def handle_sighup(self, signum: int) -> None:
        self.conductor.reload()

    def handle_stop(self, signum: int) -> None:
        self.conductor.stop(signal.Signals(signum).name)

    # -- frames and deaths --------------------------------------------------------------------

    def receive(self, role: Role, child: Child) -> None:
        for frame in child.inbox.read():
            role.on_frame(frame)

    def reap(self, role: Role, child: Child) -> None:
        child.process.join()
        code = child.process.exitcode
        self.receive(role, child)  # its last words
        child.inbox.close()
        child.outbox.close()
        role.child = None
        if role.on_exit(code) is Verdict.DONE or not role.wanted:
            return  # its job is over, or no worker of its role is wanted any more: no death to count
        how = "killed as hung" if child.hung else f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if role.restarts.died(time.monotonic()) is State.FATAL:
            message = f"the {role.name} worker died {role.restarts.tries} times in a row ({how}); giving up"
            log.error("%s", message)
            role.on_give_up(message)
        else:
            log.warning("the %s worker died (%s); restarting it", role.name, how)

    # -- the end ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """End whatever still runs (normally just the endpoint): EOF on its inbox, then SIGKILL."""
        for role in self.roles:
            if role.child is not None:
                role.child.outbox.close()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for role in self.roles:
            if role.child is not None:
                role.child.process.join(max(0.0, deadline - time.monotonic()))
                if role.child.process.is_alive():
                    role.child.process.kill()
                    role.child.process.join()
                role.child.inbox.close()
                role.child = None
        signal.set_wakeup_fd(-1)
