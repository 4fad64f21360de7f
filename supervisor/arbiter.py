"""The parent process: starts the workers, relays their frames, restarts the ones that die, and decides
how the whole program ends.

    container --info/status/metrics--> parent --relay--> publisher --> etcd
        |                                 ^                  |
        +--> shared memory --> endpoint   +----registry------+

Like gunicorn's arbiter, the signal handlers only queue the signal; the single-threaded main loop
(a select over the workers' pipes, their process sentinels and the signal wakeup pipe) dispatches
``handle_<signal>``. Nothing here blocks on etcd or Docker. The parent binds the endpoint's sockets
before forking, so port errors are reported at once and a restarted endpoint keeps its port.

Phases: RUNNING -> STOPPING (a stop signal: the container worker stops the container) -> FINISHING
(the task ended: the publisher writes the final record, bounded in time) -> DONE.
"""

from __future__ import annotations

import enum
import errno
import importlib
import logging
import multiprocessing
import os
import select
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from supervisor import HELD_SIGNALS
from supervisor.config import Config
from supervisor.lock import AlreadySupervised, TaskLock
from supervisor.notify import Notifier
from supervisor.restarts import Restarts, State
from workers import channel, frames
from workers.frames import Frame
from workers.latest import Latest
from workers.process import EXIT_DONE, EXIT_FATAL

log = logging.getLogger("supervisor")

STOP_GRACE = 20.0  # seconds beyond stop_timeout for the engine to report the stop
ENDPOINT_GRACE = 2.0
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


@dataclass
class Worker:
    name: str
    restarts: Restarts = field(default_factory=Restarts)
    process: Optional[multiprocessing.process.BaseProcess] = None
    inbox: Optional[channel.Inbox] = None  # frames from the worker
    outbox: Optional[channel.Outbox] = None  # frames to the worker
    wanted: bool = True  # restart it when it dies

    @property
    def alive(self) -> bool:
        return self.process is not None

    def send(self, kind: str, body: Dict[str, Any]) -> None:
        if self.outbox is not None:
            try:
                self.outbox.send(kind, body)
            except BrokenPipeError:
                pass  # it died; its sentinel will say so

    def send_encoded(self, kind: str, data: bytes) -> None:
        if self.outbox is not None:
            try:
                self.outbox.send_encoded(kind, data)
            except BrokenPipeError:
                pass


def bind_sockets(host: str, port: int, backlog: int = 128) -> List[socket.socket]:
    """Listening sockets on every address of host (as tornado.netutil.bind_sockets, without importing
    tornado and asyncio into the parent: every forked worker would carry their pages in its RSS)."""
    sockets: List[socket.socket] = []
    # a name can resolve to the same address twice (/etc/hosts): bind each once, IPv4 first
    addresses = sorted(set(socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                              socket.AI_PASSIVE)), key=lambda found: found[0])
    try:
        for family, kind, proto, _, address in addresses:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:  # e.g. ::1 for localhost on a host without IPv6
                    continue
                raise
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # one port for every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.setblocking(False)
            sock.bind(address)
            sock.listen(backlog)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind(config: Config) -> List[socket.socket]:
    host, port = config.endpoint.host, config.endpoint.port
    try:
        return bind_sockets(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"{config.source}: [endpoint] port {port} on {host} is in use: choose another port, or 0 for any free port"
            ) from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
            raise StartupError(
                f"{config.source}: [endpoint] host {host!r} is not an address of this host: use 127.0.0.1 or 0.0.0.0"
            ) from None
        if exc.errno == errno.EACCES:
            raise StartupError(f"{config.source}: [endpoint] port {port} needs privileges: use a port above 1023") from None
        raise StartupError(f"{config.source}: [endpoint] cannot listen on {host}:{port}: {exc}") from None


def endpoint_document(config: Config, port: int) -> Dict[str, Any]:
    host = config.endpoint.advertise
    shown = f"[{host}]" if ":" in host else host
    return {"host": host, "port": port, "url": f"http://{shown}:{port}"}


def run_worker(name: str, *args: Any) -> None:
    """A worker's entry point, imported in the child after the fork: the parent never imports docker,
    python-etcd or tornado, so each worker's RSS holds only its own library (~40 MB less in all)."""
    importlib.import_module(f"workers.{name}").run(*args)


class Arbiter:
    def __init__(self, config: Config, log_level: int = logging.INFO, notifier: Optional[Notifier] = None) -> None:
        self.config = config
        self.log_level = log_level
        self.notifier = notifier or Notifier()
        self.ctx = multiprocessing.get_context("fork")  # workers inherit the shared pages and the sockets
        self.phase = Phase.RUNNING
        self.workers = {name: Worker(name) for name in ("publisher", "container", "endpoint")}
        self.documents: Dict[str, bytes] = {}  # latest info/status/metrics frames, replayed to a new publisher
        self.status: Dict[str, Any] = {}
        self.registry: Dict[str, Any] = {}
        self.error: Optional[str] = None
        self.stop_requested = False
        self.ready_sent = False
        self.deadline: Optional[float] = None
        self.signals: List[int] = []
        self.next_watchdog = 0.0
        self.lock = TaskLock(config)

    # -- set-up -------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.lock.acquire()
        except AlreadySupervised as exc:
            raise StartupError(f"task {self.config.task.service}/{self.config.task.name}: {exc}", EXIT_ERROR) from None
        try:
            return self.supervise()
        finally:
            self.lock.release()

    def supervise(self) -> int:
        self.sockets = bind(self.config)
        self.endpoint = endpoint_document(self.config, self.sockets[0].getsockname()[1])
        self.latest = Latest()
        self._wake_r, self._wake_w = channel.pipe()
        self.install_signals()
        log.info(
            "task %s/%s: image %s, endpoint %s", self.config.task.service, self.config.task.name,
            self.config.task.image, self.endpoint["url"],
        )
        self.workers["container"].wanted = not self.config.etcd.required  # then it waits for etcd first
        try:
            for worker in self.workers.values():
                if worker.wanted:
                    self.spawn(worker)
            self.loop()
        finally:
            self.shutdown()
        return self.exit_code()

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
        fds = [self._wake_r, self._wake_w]
        if self.lock.fd is not None:
            fds.append(self.lock.fd)  # so a killed parent's lock is free at once
        for worker in self.workers.values():
            fds += [end.fd for end in (worker.inbox, worker.outbox) if end is not None]
        return fds

    def spawn(self, worker: Worker) -> None:
        to_r, to_w = channel.pipe()
        from_r, from_w = channel.pipe()
        parent_fds = self.parent_fds() + [to_w, from_r]
        if worker.name != "endpoint":
            parent_fds += [sock.fileno() for sock in self.sockets]
        args = (worker.name, *self.entry_args(worker.name, to_r, from_w, parent_fds))
        process = self.ctx.Process(target=run_worker, args=args, name=f"horizon-{worker.name}", daemon=True)
        process.start()
        os.close(to_r)
        os.close(from_w)
        worker.process, worker.inbox, worker.outbox = process, channel.Inbox(from_r), channel.Outbox(to_w)
        worker.restarts.started(time.monotonic())
        log.debug("started %s worker, pid %s", worker.name, process.pid)
        self.on_spawned(worker)

    def entry_args(self, name: str, inbox_fd: int, outbox_fd: int, parent_fds: List[int]) -> tuple:
        """The arguments of the worker module's ``run``."""
        if name == "container":
            return self.config, self.latest, inbox_fd, outbox_fd, parent_fds, self.log_level
        if name == "publisher":
            return self.config, self.endpoint, inbox_fd, outbox_fd, parent_fds, self.log_level
        # The endpoint says nothing (it closes its outbox); its inbox only tells it when to go.
        return (self.latest, self.sockets, self.endpoint, self.config.metrics.interval, inbox_fd,
                parent_fds + [outbox_fd], self.log_level)

    def on_spawned(self, worker: Worker) -> None:
        """Bring a (re)started worker up to date."""
        if worker.name == "publisher":
            for kind in ("info", "status", "metrics"):
                if kind in self.documents:
                    worker.send_encoded(kind, self.documents[kind])
            if self.phase is Phase.FINISHING:
                worker.send("finish", {})
        elif worker.name == "container" and self.stop_requested:
            worker.send("stop", {})

    # -- the loop -----------------------------------------------------------------------------

    def loop(self) -> None:
        while self.phase is not Phase.DONE:
            readers: List[Any] = [self._wake_r]
            writers: List[int] = []
            for worker in self.workers.values():
                if worker.process is not None:
                    readers.append(worker.process.sentinel)
                if worker.inbox is not None and not worker.inbox.eof:
                    readers.append(worker.inbox.fd)
                if worker.outbox is not None and worker.outbox.pending:
                    writers.append(worker.outbox.fd)
            readable, writable, _ = select.select(readers, writers, [], self.timeout())
            if self._wake_r in readable:
                self.dispatch_signals()
            for worker in self.workers.values():
                if worker.inbox is not None and worker.inbox.fd in readable:
                    self.receive(worker)
                if worker.outbox is not None and worker.outbox.fd in writable:
                    try:
                        worker.outbox.flush()
                    except BrokenPipeError:
                        pass
            for worker in self.workers.values():
                if worker.process is not None and worker.process.sentinel in readable:
                    self.reap(worker)
            self.tick(time.monotonic())

    def timeout(self) -> float:
        now = time.monotonic()
        wake = [now + 1.0]
        wake += [w.restarts.restart_at for w in self.workers.values() if w.restarts.restart_at is not None]
        if self.deadline is not None:
            wake.append(self.deadline)
        if self.notifier.watchdog_interval:
            wake.append(self.next_watchdog)
        return max(0.0, min(wake) - now)

    def tick(self, now: float) -> None:
        for worker in self.workers.values():
            if worker.process is None and worker.wanted and worker.restarts.due(now):
                log.info("restarting the %s worker (try %d)", worker.name, worker.restarts.tries)
                self.spawn(worker)
        if self.notifier.watchdog_interval and now >= self.next_watchdog:
            self.notifier.send("WATCHDOG=1")
            self.next_watchdog = now + self.notifier.watchdog_interval
        if self.deadline is not None and now >= self.deadline:
            self.deadline_passed()
        if self.phase is Phase.FINISHING and not self.workers["publisher"].alive and not self.workers["publisher"].wanted:
            self.phase = Phase.DONE

    # -- signals ------------------------------------------------------------------------------

    def dispatch_signals(self) -> None:
        try:
            os.read(self._wake_r, 512)
        except BlockingIOError:
            pass
        while self.signals:
            signum = self.signals.pop(0)
            name = signal.Signals(signum).name.lower()
            getattr(self, f"handle_{name}", self.handle_stop)(signum)

    def handle_sighup(self, signum: int) -> None:
        log.info("SIGHUP: the configuration is read once at start; restart the supervisor to change it")

    def handle_stop(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.stop_requested:
            log.info("%s: already stopping; waiting for the task's end to be recorded", name)
            return
        log.info("%s: stopping the task", name)
        self.stop_requested = True
        self.notifier.send("STOPPING=1", "STATUS=stopping the task")
        box = self.workers["container"]
        if self.phase is Phase.RUNNING and box.wanted:
            self.phase = Phase.STOPPING
            self.deadline = time.monotonic() + self.config.task.stop_timeout + STOP_GRACE
            box.send("stop", {})
        elif self.phase is Phase.RUNNING:
            self.begin_finishing()

    # -- frames -------------------------------------------------------------------------------

    def receive(self, worker: Worker) -> None:
        assert worker.inbox is not None
        for frame in worker.inbox.read():
            getattr(self, f"on_{worker.name}_frame")(frame)

    def on_container_frame(self, frame: Frame) -> None:
        if frame.kind == "error":
            self.error = frame.body.get("message", "the container worker failed")
            return
        if frame.kind not in ("info", "status", "metrics"):
            return
        encoded = frames.encode(frame.kind, frame.body)
        self.documents[frame.kind] = encoded
        self.workers["publisher"].send_encoded(frame.kind, encoded)
        if frame.kind == "status":
            self.status = frame.body
            self.maybe_ready()

    def on_publisher_frame(self, frame: Frame) -> None:
        if frame.kind == "registry":
            self.registry = frame.body
            waiting = not self.workers["container"].wanted and self.phase is Phase.RUNNING
            if waiting and self.registry.get("connected"):
                self.workers["container"].wanted = True
                if not self.stop_requested:
                    self.spawn(self.workers["container"])
            elif waiting and self.registry.get("connected") is False:
                hosts = ",".join(f"{h}:{p}" for h, p in self.config.etcd.hosts)
                refused = self.registry.get("refused")
                self.error = (
                    f"etcd at {hosts} refused horizon ({refused}) and [etcd] required = true: "
                    "check [etcd] username and password_file, or ca_cert, cert and key"
                    if refused else
                    f"etcd at {hosts} does not answer and [etcd] required = true: start etcd, or set required = false"
                )
                self.begin_finishing()
            self.maybe_ready()
        elif frame.kind == "finished":
            self.workers["publisher"].wanted = False
            if not frame.body.get("published") and "info" in self.documents:
                log.warning("the final record could not be written to etcd; its TTL will expire it")

    def on_endpoint_frame(self, frame: Frame) -> None:
        pass

    def maybe_ready(self) -> None:
        """READY=1 once the task runs and etcd says so (or, unless etcd is required, etcd is away)."""
        running = self.status.get("state") == "running"
        registered = self.registry.get("state") == "running"
        etcd_settled = registered or (not self.config.etcd.required and self.registry.get("connected") is False)
        if running and etcd_settled and not self.ready_sent:
            self.ready_sent = True
            where = "registered in etcd" if registered else "etcd unreachable, retrying"
            self.notifier.send("READY=1", f"STATUS=task running; {where}; endpoint {self.endpoint['url']}")
            log.info("task running; %s", where)

    # -- worker deaths ------------------------------------------------------------------------

    def reap(self, worker: Worker) -> None:
        assert worker.process is not None
        worker.process.join()
        code = worker.process.exitcode
        if worker.inbox is not None:
            self.receive(worker)  # its last words
            worker.inbox.close()
        if worker.outbox is not None:
            worker.outbox.close()
        worker.process, worker.inbox, worker.outbox = None, None, None
        getattr(self, f"reaped_{worker.name}")(worker, code)

    def restart_or_fail(self, worker: Worker, code: Optional[int]) -> None:
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if worker.restarts.died(time.monotonic()) is State.FATAL:
            self.error = f"the {worker.name} worker died {worker.restarts.tries} times in a row ({how}); giving up"
            worker.wanted = False
            log.error(self.error)
            if worker.name == "container":
                self.begin_finishing()
            else:
                self.handle_stop(signal.SIGTERM)
        else:
            log.warning("the %s worker died (%s); restarting it", worker.name, how)

    def reaped_container(self, worker: Worker, code: Optional[int]) -> None:
        if code in (EXIT_DONE, EXIT_FATAL):
            worker.wanted = False
            self.begin_finishing()
        else:
            self.restart_or_fail(worker, code)

    def reaped_publisher(self, worker: Worker, code: Optional[int]) -> None:
        if code == EXIT_DONE and not worker.wanted:
            return
        self.restart_or_fail(worker, code)

    def reaped_endpoint(self, worker: Worker, code: Optional[int]) -> None:
        if worker.wanted:
            self.restart_or_fail(worker, code)

    # -- ending -------------------------------------------------------------------------------

    def begin_finishing(self) -> None:
        if self.phase in (Phase.FINISHING, Phase.DONE):
            return
        self.phase = Phase.FINISHING
        etcd_ = self.config.etcd
        self.deadline = time.monotonic() + 2 * etcd_.timeout * len(etcd_.hosts) + 5
        self.workers["publisher"].send("finish", {})

    def deadline_passed(self) -> None:
        if self.phase is Phase.STOPPING:
            self.error = f"the container did not report its stop within {self.config.task.stop_timeout + STOP_GRACE:.0f} s"
            log.error(self.error)
            self.workers["container"].wanted = False
            self.begin_finishing()
        elif self.phase is Phase.FINISHING:
            log.warning("the publisher did not finish in time; leaving the record to its TTL")
            self.workers["publisher"].wanted = False
            self.phase = Phase.DONE

    def shutdown(self) -> None:
        """End whatever still runs (normally just the endpoint): EOF on its inbox, then SIGKILL."""
        for worker in self.workers.values():
            worker.wanted = False
            if worker.outbox is not None:
                worker.outbox.close()
                worker.outbox = None
        deadline = time.monotonic() + ENDPOINT_GRACE
        for worker in self.workers.values():
            if worker.process is not None:
                worker.process.join(max(0.0, deadline - time.monotonic()))
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()
        for sock in self.sockets:
            sock.close()
        signal.set_wakeup_fd(-1)

    def exit_code(self) -> int:
        if self.error:
            return EXIT_ERROR
        state = self.status.get("state")
        if state == "stopped" or (state is None and self.stop_requested):  # stopped before the container existed
            return 0
        code = self.status.get("exit_code")
        if state == "failed" and code == 0:  # e.g. restart = always gave up on a task that exits 0
            return EXIT_ERROR
        return code if isinstance(code, int) and 0 <= code < 256 else EXIT_ERROR
