"""The course of a task tree: the parent's side of its tasks, from start to exit status.

``supervise`` takes the task's lock, binds the endpoint's sockets, maps the shared memory and runs the
``Arbiter`` with a ``TaskFlow`` as its conductor. The flow keeps a ``TaskView`` per task (the latest
documents, replayed to a restarted publisher; the state etcd holds), relays the container worker's
frames to the publisher as they came (no decoding and re-encoding), tells systemd when the task is
ready, and moves the ``Ending`` along: a stop asks the container worker to stop the container, the
task's end asks the publisher for the final record, and deadlines bound each wait.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from supervisor.arbiter import Arbiter, parent_figures
from supervisor.config import Config, EndpointSection, EtcdSection
from supervisor.ending import Ending, Phase, StartupError
from supervisor.frames import Frame, TaskKey
from supervisor.link import BEAT_SLACK, MAX_WAIT, STOP_GRACE
from supervisor.lock import AlreadySupervised, TaskLock
from supervisor.notify import Notifier
from supervisor.roles import ContainerRole, EndpointRole, FlowRole, PublisherRole
from supervisor.selfstats import SelfReport
from supervisor.shm import SharedMemory
from supervisor.sockets import bind
from supervisor.state import LIVE_STATES, Status, fresh_within

log = logging.getLogger("supervisor")

MIN_HANG_GRACE = 1.2  # seconds past its promised beat before a worker is hung, at the least
RESTART_MARGIN = 0.8  # seconds to reap a killed worker, back off 0.1 s and start the next one, with room


class TaskView:
    """The parent's view of one task: its latest frames as they came, and what etcd holds."""

    def __init__(self, key: TaskKey) -> None:
        self.key = key
        self.documents: Dict[str, bytes] = {}  # kind -> the latest encoded frame
        self.status: Optional[Status] = None
        self.etcd: Dict[str, Any] = {}  # the publisher's latest ``etcd`` report
        self.pending: Optional[Dict[str, Any]] = None  # the pause or resume passed on and not settled yet
        self.ready_sent = False
        self.live_since: Optional[float] = None  # monotonic: since when its status says it lives

    def take_status(self, status: Status) -> None:
        live = status.state in LIVE_STATES
        if live and self.live_since is None:
            self.live_since = time.monotonic()
        elif not live:
            self.live_since = None
        self.status = status
        self.settle()

    def take_document(self, frame: Frame, relay: Callable[[str, TaskKey, bytes], None]) -> None:
        """An info, status or metrics frame from the container worker: kept for replay, relayed (``relay``:
        the publisher's ``send_encoded``) as it came; a status is the task's status from now on."""
        self.documents[frame.kind] = frame.data
        relay(frame.kind, frame.task, frame.data)
        if frame.kind == "status":
            self.take_status(Status.from_dict(frame.body))

    def replay_documents(self, send: Callable[[str, TaskKey, bytes], None]) -> None:
        """The latest documents again, as they came, to a restarted publisher (``send``: its ``send_encoded``)."""
        for kind in ("info", "status", "metrics"):
            if kind in self.documents:
                send(kind, self.key, self.documents[kind])

    def finished(self, published: bool, named: bool = False) -> None:
        """The publisher is done with the task: when the final record of a task it had recorded (there is
        an info) could not be written, say so (``named``: the line names the task, as a host tree's do)."""
        if not published and "info" in self.documents:
            where = f"task {self.key.path}: " if named else ""
            log.warning("%sthe final record could not be written to etcd; its TTL will expire it", where)

    def pass_on(self, request: Dict[str, Any], send: Callable[[str, TaskKey, Dict[str, Any]], None]) -> None:
        """A pause or resume for the container worker (``send``: its role's ``send``), kept pending (replayed
        to a restarted container worker) until a status settles it."""
        self.pending = {"action": request.get("action"), "id": str(request.get("id") or "")}
        send("control", self.key, self.pending)
        self.settle()

    def settle(self) -> None:
        """Forget the pending pause or resume once the latest status shows it done, refused, or moot."""
        if self.pending is not None and self.status is not None and self.status.settles(self.pending["action"], self.pending["id"]):
            self.pending = None

    def stale(self, written_at: float, interval: float, now: float) -> Optional[str]:
        """What is wrong when the task lives and its latest sample (written at ``written_at``) is stale."""
        if self.status is None or self.live_since is None or self.status.state not in LIVE_STATES:
            return None
        age = now - max(written_at, self.live_since)  # a task just (re)started has no sample yet
        return f"task {self.key.path}: no sample for {age:.1f} s" if age > fresh_within(interval) else None

    def ready(self, etcd_required: bool) -> Optional[str]:
        """Where the task stands once it runs (or was adopted paused) and etcd holds that state (or, unless
        etcd is required, etcd is away): what READY=1's STATUS= says; None until then."""
        live = self.status is not None and self.status.state in LIVE_STATES  # an adopted paused task too
        registered = live and self.status is not None and self.etcd.get("state") == self.status.state.value
        if not live or not (registered or (not etcd_required and self.etcd.get("connected") is False)):
            return None
        state = self.status.state.value if self.status else "running"
        return f"task {state}; " + ("registered in etcd" if registered else "etcd unreachable, retrying")


def hang_grace(interval: float) -> float:
    """How late past its promise a worker may be before it is killed as hung: as late as keeps a hung
    worker replaced within 3 intervals + 2 s (its promise is at most MAX_WAIT + BEAT_SLACK away), so
    a busy host's scheduling delays are forgiven as far as that allows (3.5 s at a 1 s interval)."""
    return max(MIN_HANG_GRACE, 3 * interval + 2 - MAX_WAIT - BEAT_SLACK - RESTART_MARGIN)


def etcd_refusal(report: Dict[str, Any], etcd: EtcdSection) -> Optional[str]:
    """With ``required = true``, the failure an ``etcd`` report means (refused, or no answer), else None."""
    if report.get("connected") is not False:
        return None
    hosts = ",".join(f"{h}:{p}" for h, p in etcd.hosts)
    refused = report.get("refused")
    if refused:
        return f"etcd at {hosts} refused horizon ({refused}) and [etcd] required = true: {report.get('fix')}"
    return f"etcd at {hosts} does not answer and [etcd] required = true: start etcd, or set required = false"


def endpoint_document(endpoint: EndpointSection, port: int, path: str = "") -> Dict[str, Any]:
    """Where the task is served, as etcd and /info show it: ``path`` is its place on a host tree's endpoint."""
    host = endpoint.advertise
    shown = f"[{host}]" if ":" in host else host
    return {"host": host, "port": port, "url": f"http://{shown}:{port}{path}", "path": path}


class TaskFlow:
    def __init__(self, config: Config, sockets: List[socket.socket], notifier: Notifier,
                 lock_fds: Sequence[int] = ()) -> None:
        self.config = config
        self.sockets = sockets
        self.notifier = notifier
        self.lock_fds = list(lock_fds)
        self.endpoint = endpoint_document(config.endpoint, sockets[0].getsockname()[1])
        self.ending = Ending()
        self.views = {config.key: TaskView(config.key)}
        self.container_role = ContainerRole(self)
        self.publisher_role = PublisherRole(self)
        self.endpoint_role = EndpointRole(self)
        self.roles: Sequence[FlowRole] = (self.publisher_role, self.container_role, self.endpoint_role)
        self.shm = SharedMemory(roles=[role.name for role in self.roles], tasks=self.views,
                                history=config.metrics.history)
        self.report = SelfReport(self.shm.reports["supervisor"])
        self.relayed = 0  # frames passed on from the container worker to the publisher

    # -- what the arbiter asks ------------------------------------------------------------------

    @property
    def over(self) -> bool:
        return self.ending.phase is Phase.DONE

    @property
    def hang_grace(self) -> float:
        return hang_grace(self.config.metrics.interval)

    def wake_at(self) -> Optional[float]:
        return self.ending.deadline

    def parent_fds(self) -> List[int]:
        """The parent's own descriptors, closed in every worker (but the ones its role keeps): the lock,
        so a killed parent's lock is free at once, and the sockets, which only the endpoint serves."""
        return [*self.lock_fds, *(sock.fileno() for sock in self.sockets)]

    def figures(self) -> Dict[str, Any]:
        return parent_figures(self.roles, self.relayed)

    def tick(self, now: float) -> None:
        self.report.maybe(self.figures)
        ending = self.ending
        if ending.deadline is not None and now >= ending.deadline:
            if ending.phase is Phase.STOPPING:
                message = f"the container did not report its stop within {self.config.task.stop_timeout + STOP_GRACE:.0f} s"
                log.error("%s", message)
                ending.fail(message)
                self.container_role.retired = True
                self.finish()
            elif ending.phase is Phase.FINISHING:
                log.warning("the publisher did not finish in time; leaving the record to its TTL")
                self.publisher_role.retired = True
                ending.done()
        if ending.phase is Phase.FINISHING and self.publisher_role.retired and self.publisher_role.child is None:
            ending.done()

    def stop(self, why: str) -> None:
        """Stop the task cleanly (a stop signal, or a worker that gave up): once, however often asked."""
        if not self.ending.request_stop(why):
            log.info("%s: already stopping; waiting for the task's end to be recorded", why)
            return
        log.info("%s: stopping the task", why)
        self.notifier.send("STOPPING=1", "STATUS=stopping the task")
        if self.ending.phase is not Phase.RUNNING:
            return
        if self.container_role.wanted:
            self.ending.stopping(time.monotonic() + self.config.task.stop_timeout + STOP_GRACE)
            for key in self.views:
                self.container_role.send("control", key, {"action": "stop"})
        else:  # no container worker will run (etcd is required and has not answered): nothing to stop
            self.finish()

    def reload(self) -> None:
        log.info("SIGHUP: a task file is read once at start; restart the supervisor to change it")

    def control(self, key: TaskKey, request: Dict[str, Any]) -> None:
        """A control request from the fleet (``horizon stop|pause|resume``, through etcd): a stop is the
        same clean stop as SIGTERM; pause and resume go to the container worker, which owns the task."""
        action, by = request.get("action"), request.get("by") or "someone"
        if action == "stop":
            self.stop(f"horizon stop from {by}")
        elif action in ("pause", "resume") and self.ending.phase is Phase.RUNNING and self.container_role.wanted:
            log.info("horizon %s from %s", action, by)
            view = self.view(key)
            if view is not None:
                view.pass_on(request, self.container_role.send)
        elif action in ("pause", "resume"):
            log.info("horizon %s from %s: ignored, the task is ending", action, by)
        else:
            log.error("bug: a control request with action %r", action)

    def problem(self, now: float) -> Optional[str]:
        """A live task whose latest sample is stale: sampling stopped, whatever the workers' heartbeats say."""
        for key, view in self.views.items():
            stale = view.stale(self.shm.tasks[key].metrics.written_at, self.config.metrics.interval, now)
            if stale is not None:
                return stale
        return None

    # -- what the roles report ----------------------------------------------------------------

    def finish(self) -> None:
        """The task ended (or will never run): have the publisher write the final record, in bounded time."""
        etcd_ = self.config.etcd
        if self.ending.finishing(time.monotonic() + 2 * etcd_.timeout * len(etcd_.hosts) + 5):
            for key in self.views:
                self.publisher_role.send("finish", key, {})

    def view(self, key: TaskKey) -> Optional[TaskView]:
        view = self.views.get(key)
        if view is None:
            log.error("bug: a frame about %s, a task this supervisor does not run", key.path)
        return view

    def task_document(self, frame: Frame) -> None:
        """An info, status or metrics frame from the container worker: kept for replay, relayed as it came."""
        view = self.view(frame.task)
        if view is None:
            return
        view.take_document(frame, self.publisher_role.send_encoded)
        self.relayed += 1
        if frame.kind == "status":
            self.ending.status = view.status
            self.maybe_ready(view)

    def etcd_report(self, key: TaskKey, report: Dict[str, Any]) -> None:
        view = self.view(key)
        if view is None:
            return
        view.etcd = report
        if self.container_role.held and self.ending.phase is Phase.RUNNING:
            self.etcd_required(report)
        self.maybe_ready(view)

    def etcd_required(self, report: Dict[str, Any]) -> None:
        """With ``required = true`` the container waits for etcd's first answer, and a refusal or silence fails."""
        if report.get("connected"):
            self.container_role.held = False  # the arbiter starts it on its next turn
        failure = etcd_refusal(report, self.config.etcd)
        if failure is not None:
            self.ending.fail(failure)
            self.finish()

    def maybe_ready(self, view: TaskView) -> None:
        """READY=1 once the task runs (or was adopted paused) and etcd holds that state (or, unless etcd
        is required, etcd is away)."""
        where = view.ready(self.config.etcd.required)
        if where is not None and not view.ready_sent:
            view.ready_sent = True
            self.notifier.send("READY=1", f"STATUS={where}; endpoint {self.endpoint['url']}")
            log.info("%s", where)


def supervise(config: Config, log_level: int, notifier: Optional[Notifier] = None) -> Tuple[int, Optional[str]]:
    """Run the task to its end: (exit status, the failure to print or None). StartupError before anything runs."""
    lock = TaskLock(config)
    try:
        lock.acquire()
    except AlreadySupervised as exc:
        raise StartupError(f"task {config.task.service}/{config.task.name}: {exc}", 1) from None
    try:
        sockets = bind(config.endpoint, config.source)
        try:
            notifier = notifier or Notifier()
            flow = TaskFlow(config, sockets, notifier, [lock.fd] if lock.fd is not None else [])
            log.info("task %s: image %s, endpoint %s", config.key.path, config.task.image, flow.endpoint["url"])
            Arbiter(flow, flow.shm, log_level, notifier).run()
            return flow.ending.exit_code(), flow.ending.failure
        finally:
            for sock in sockets:
                sock.close()
    finally:
        lock.release()
