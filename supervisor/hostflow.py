"""The course of a host tree: many tasks, one parent, the same three workers (``python -m supervisor DIR``).

The tree runs until SIGTERM; each task has a course of its own, and one task's end, failure, restarts
or stop never touch another's::

    running ──stop (its file removed or changed, horizon stop, SIGTERM)──► stopping ──its end──► finishing ──► gone
       └──────────────── the task ended by itself (or could not start) ───────────────────────┘

``stopping`` waits for the container worker's ``ended`` frame and ``finishing`` for the publisher's
``finished`` (the final record is written); each wait has a deadline. ``gone`` drops the task from every
worker, frees its block of shared memory and its lock; a changed file's new task starts then. SIGHUP
reads the directory again: a new file starts its task, a removed one stops its task, a changed one stops
its task and starts it again; the others are not touched. SIGTERM stops every task and ends the tree
once every final record is written (exit 0; 1 when a worker gave up).
"""

from __future__ import annotations

import collections
import enum
import logging
import socket
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from supervisor.arbiter import Arbiter, parent_figures
from supervisor.config import Config, ConfigError
from supervisor.ending import EXIT_ERROR
from supervisor.frames import Frame, TaskKey
from supervisor.hostconfig import HostConfig, TaskFile, load_host, scan
from supervisor.hostroles import HostContainerRole, HostEndpointRole, HostPublisherRole, HostRole
from supervisor.link import EXIT_DONE, STOP_GRACE
from supervisor.lock import AlreadySupervised, TaskLock
from supervisor.notify import Notifier
from supervisor.selfstats import SelfReport
from supervisor.shm import SharedMemory
from supervisor.sockets import bind
from supervisor.taskflow import TaskView, endpoint_document, etcd_refusal, hang_grace

log = logging.getLogger("supervisor")

STOP_PER_TASK = 0.25  # seconds more a stop may take for each task stopping at the same time


class Course(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHING = "finishing"
    GONE = "gone"


class HostTask:
    """One task of the tree, from its file to its block of shared memory and its lock."""

    def __init__(self, file: TaskFile, config: Config, index: int, lock: TaskLock, endpoint: Dict[str, Any]) -> None:
        self.file = file
        self.config = config
        self.key = config.key
        self.index = index
        self.lock = lock
        self.endpoint = endpoint
        self.view = TaskView(self.key)
        self.course = Course.RUNNING
        self.deadline: Optional[float] = None
        self.stop_asked = False
        self.stop_started = 0.0
        self.ended = False  # its container worker's thread is done: it is not handed to a new worker again
        self.then: Optional[TaskFile] = None  # its changed file: started once this task is gone

    @property
    def finishing(self) -> bool:
        return self.course is Course.FINISHING

    def body(self) -> Dict[str, Any]:
        """What a ``task`` frame carries."""
        return {"slot": self.index, "config": self.config.to_document(), "endpoint": self.endpoint}


class HostFlow:
    def __init__(self, host: HostConfig, sockets: List[socket.socket], notifier: Notifier) -> None:
        self.host = host
        self.sockets = sockets
        self.notifier = notifier
        self.base = endpoint_document(host.endpoint, sockets[0].getsockname()[1])
        self.container_role = HostContainerRole(self)
        self.publisher_role = HostPublisherRole(self)
        self.endpoint_role = HostEndpointRole(self)
        self.roles: Sequence[HostRole] = (self.publisher_role, self.container_role, self.endpoint_role)
        self.shm = SharedMemory(roles=[role.name for role in self.roles], history=host.host.history,
                                capacity=host.host.capacity)
        self.report = SelfReport(self.shm.reports["supervisor"])
        self.free = collections.deque(range(host.host.capacity))  # blocks of shared memory, the longest free first
        self.tasks: Dict[TaskKey, HostTask] = {}
        self.files: Dict[str, str] = {}  # task file -> the stamp of the version last taken on
        self.stopping = False
        self.failure: Optional[str] = None
        self.ready_sent = False
        self.relayed = 0
        files = scan(host)
        self.reread(files)
        intervals = [task.config.metrics.interval for task in self.tasks.values()]
        self.grace = hang_grace(min(intervals, default=1.0))
        if not files:
            log.info("no task files in %s: nothing runs until one is added and the supervisor reloaded (SIGHUP)",
                     host.directory)

    # -- what the arbiter asks ------------------------------------------------------------------

    @property
    def over(self) -> bool:
        return self.stopping and not self.tasks

    @property
    def hang_grace(self) -> float:
        return self.grace

    def wake_at(self) -> Optional[float]:
        return min((task.deadline for task in self.tasks.values() if task.deadline is not None), default=None)

    def parent_fds(self) -> List[int]:
        locks = [task.lock.fd for task in self.tasks.values() if task.lock.fd is not None]
        return [*locks, *(sock.fileno() for sock in self.sockets)]

    def figures(self) -> Dict[str, Any]:
        return parent_figures(self.roles, self.relayed)

    def tick(self, now: float) -> None:
        self.report.maybe(self.figures)
        for task in list(self.tasks.values()):
            if task.deadline is None or now < task.deadline:
                continue
            if task.course is Course.STOPPING:
                log.error("task %s: the container did not report its stop within %.0f s", task.key.path,
                          now - task.stop_started)
                self.finish(task)
            elif task.course is Course.FINISHING:
                log.warning("task %s: the publisher did not finish in time; leaving the record to its TTL", task.key.path)
                self.gone(task)

    def stop(self, why: str) -> None:
        """Stop every task cleanly and end the tree once their ends are recorded: once, however often asked."""
        if self.stopping:
            log.info("%s: already stopping; waiting for every task's end to be recorded", why)
            return
        self.stopping = True
        log.info("%s: stopping %d task%s", why, len(self.tasks), "s" * (len(self.tasks) != 1))
        self.notifier.send("STOPPING=1", "STATUS=stopping every task")
        for task in list(self.tasks.values()):
            task.then = None
            self.stop_task(task, why)

    def reload(self) -> None:
        """SIGHUP: read the directory again, and act on what changed."""
        if self.stopping:
            log.info("SIGHUP: the tree is stopping; nothing is reloaded")
            return
        try:
            host = load_host(self.host.directory)
        except ConfigError as exc:  # a mistake in horizon.ini now: the tree runs on as it started
            log.error("SIGHUP: %s; the tasks are reloaded with the settings the tree started with", exc)
        else:
            if host != self.host:
                log.error("SIGHUP: %s changed: its settings take effect at the next start (restart the service); "
                          "the tasks are reloaded with the settings the tree started with", self.host.source)
        log.info("SIGHUP: reading %s again", self.host.directory)
        self.reread(scan(self.host))
        self.announce()

    def problem(self, now: float) -> Optional[str]:
        for task in self.tasks.values():
            stale = task.view.stale(self.shm.tasks[task.key].metrics.written_at, task.config.metrics.interval, now)
            if stale is not None:
                return stale
        return None

    # -- the directory ------------------------------------------------------------------------

    def reread(self, files: List[TaskFile]) -> None:
        """Start, stop and restart tasks as the directory now says."""
        seen = {file.path for file in files}
        for path in [path for path in self.files if path not in seen]:
            del self.files[path]
            for task in self.by_path(path):
                task.then = None
                self.stop_task(task, f"its file {path} was removed")
        for file in files:
            running = self.by_path(file.path)
            if file.error is not None:
                ran = f"; task {running[0].key.path} runs on as it was" if running else ""
                log.error("%s%s", file.error, ran)
                continue
            if self.files.get(file.path) == file.stamp:
                continue  # unchanged: running, or ended (its file must change for it to run again)
            live = [task for task in running if task.course is not Course.GONE]
            if live:
                self.files[file.path] = file.stamp
                live[0].then = file
                self.stop_task(live[0], f"its file {file.path} changed")
            elif self.add(file):
                self.files[file.path] = file.stamp  # a file refused (no room, held elsewhere) is tried again

    def by_path(self, path: str) -> List[HostTask]:
        return [task for task in self.tasks.values() if task.file.path == path]

    def add(self, file: TaskFile) -> bool:
        """Take a task on: its lock, a block of shared memory, and a ``task`` frame to every worker; False
        when it is refused (one line says why)."""
        config = file.config
        assert config is not None
        ending = self.tasks.get(config.key)
        if ending is not None and ending.course is not Course.RUNNING and ending.file.path == file.path:
            ending.then = file  # its file is back while it ends: it starts again once gone
            return True
        if ending is not None:
            log.error("%s: task %s is %s's already: give [task] name a value of its own",
                      file.path, config.key.path, ending.file.path)
            return False
        if not self.free:
            log.error("%s: the tree holds %d tasks already, its capacity: raise [host] capacity in %s",
                      file.path, self.host.host.capacity, self.host.source)
            return False
        lock = TaskLock(config)
        try:
            lock.acquire()
        except AlreadySupervised as exc:
            log.error("%s: task %s: %s", file.path, config.key.path, exc)
            return False
        index = self.free.popleft()
        task = HostTask(file, config, index, lock, endpoint_document(self.host.endpoint, self.base["port"],
                                                                     f"/tasks/{config.key.path}"))
        self.tasks[config.key] = task
        self.shm.attach(config.key, index)  # the parent reads its samples' age (the watchdog)
        log.info("task %s (%s): image %s, endpoint %s", config.key.path, file.path, config.task.image, task.endpoint["url"])
        for role in self.roles:
            role.take_on(task)
        return True

    def announce(self) -> None:
        running = sum(task.course is Course.RUNNING for task in self.tasks.values())
        self.notifier.send(f"STATUS={running} task{'s' * (running != 1)} running; endpoint {self.base['url']}")

    # -- each task's course ---------------------------------------------------------------------

    def task(self, key: TaskKey) -> Optional[HostTask]:
        task = self.tasks.get(key)
        if task is None:
            log.debug("a frame about %s, a task this tree no longer runs", key.path)
        return task

    def stop_task(self, task: HostTask, why: str) -> None:
        if task.course is not Course.RUNNING:
            return
        log.info("task %s: %s: stopping it", task.key.path, why)
        task.stop_asked = True
        if task.ended or not self.container_role.wanted:
            self.finish(task)  # nothing runs it (it ended, or no container worker will run)
            return
        task.course = Course.STOPPING
        task.stop_started = time.monotonic()
        task.deadline = task.stop_started + task.config.task.stop_timeout + STOP_GRACE
        self.container_role.send("control", task.key, {"action": "stop"})
        # Stops at once share the engine and the container worker: each of them gets longer (200 at once: the
        # last one reported its stop 22 s after its stop_timeout, 2 s past the deadline of a stop alone).
        stopping = [other for other in self.tasks.values() if other.course is Course.STOPPING]
        for other in stopping:
            assert other.deadline is not None
            other.deadline = max(other.deadline, task.deadline + STOP_PER_TASK * len(stopping))

    def finish(self, task: HostTask) -> None:
        """The task ended (or will never run): the publisher writes its final record, in bounded time."""
        if task.course in (Course.FINISHING, Course.GONE):
            return
        etcd_ = self.host.etcd
        task.course = Course.FINISHING
        task.deadline = time.monotonic() + 2 * etcd_.timeout * len(etcd_.hosts) + 5
        self.publisher_role.send("finish", task.key, {})
        if not self.publisher_role.wanted:
            self.gone(task)

    def gone(self, task: HostTask) -> None:
        """Every worker forgets the task; its block and its lock are free for the next one."""
        task.course, task.deadline = Course.GONE, None
        for role in self.roles:
            role.send("drop", task.key, {})
        del self.tasks[task.key]
        self.shm.detach(task.key)
        self.shm.clear(task.index)
        self.free.append(task.index)
        task.lock.release()
        log.info("task %s: done", task.key.path)
        if task.then is not None and not self.stopping and not self.add(task.then):
            self.files.pop(task.then.path, None)  # refused: tried again at the next reload
        self.announce()

    # -- what the roles report ------------------------------------------------------------------

    def task_document(self, frame: Frame) -> None:
        task = self.task(frame.task)
        if task is None:
            return
        task.view.take_document(frame, self.publisher_role.send_encoded)
        self.relayed += 1
        if frame.kind == "status":
            self.maybe_ready()

    def task_error(self, key: TaskKey, message: str) -> None:
        log.error("task %s: %s", key.path, message)

    def task_ended(self, key: TaskKey, code: int) -> None:
        task = self.task(key)
        if task is not None:
            task.ended = True
            if code != EXIT_DONE:
                log.error("task %s could not run; its file must change (then SIGHUP) for it to run again", key.path)
            self.finish(task)
            self.maybe_ready()

    def task_finished(self, key: TaskKey, published: bool) -> None:
        task = self.task(key)
        if task is None or task.course is not Course.FINISHING:
            return
        task.view.finished(published, named=True)
        self.gone(task)

    def etcd_report(self, key: TaskKey, report: Dict[str, Any]) -> None:
        task = self.task(key)
        if task is not None:
            task.view.etcd = report
        if self.container_role.held:
            if report.get("connected"):
                self.container_role.held = False  # the arbiter starts it on its next turn
            failure = etcd_refusal(report, self.host.etcd)
            if failure is not None:
                self.fail(failure)
                self.stop(failure)
        self.maybe_ready()

    def control(self, key: TaskKey, request: Dict[str, Any]) -> None:
        """A request from the fleet for one task: a stop ends that task alone (its file stays; it runs again
        when the file changes); pause and resume go to the container worker."""
        task, action, by = self.task(key), request.get("action"), request.get("by") or "someone"
        if task is None:
            return
        if action == "stop":
            task.then = None
            self.stop_task(task, f"horizon stop from {by}")
        elif action in ("pause", "resume") and task.course is Course.RUNNING and not task.ended:
            log.info("task %s: horizon %s from %s", key.path, action, by)
            task.view.pass_on(request, self.container_role.send)
        elif action in ("pause", "resume"):
            log.info("task %s: horizon %s from %s: ignored, the task is ending", key.path, action, by)
        else:
            log.error("bug: a control request with action %r", action)

    def fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = message

    def give_up_containers(self, message: str) -> None:
        """The container worker died too often: its containers are left running for the next supervisor to
        adopt; the tree ends (exit 1) once every record is final or left to its TTL."""
        self.fail(message)
        self.stopping = True
        for task in list(self.tasks.values()):
            self.finish(task)

    def maybe_ready(self) -> None:
        """READY=1 once every task the tree started with runs and is registered, or ended."""
        if self.ready_sent:
            return
        waiting = [task for task in self.tasks.values()
                   if task.course is Course.RUNNING and not task.ended and task.view.ready(self.host.etcd.required) is None]
        if not waiting:
            self.ready_sent = True
            self.notifier.send("READY=1")
            self.announce()
            log.info("%d task%s running; endpoint %s", len(self.tasks), "s" * (len(self.tasks) != 1), self.base["url"])

    def exit_code(self) -> int:
        return EXIT_ERROR if self.failure else 0


def supervise_host(host: HostConfig, log_level: int, notifier: Optional[Notifier] = None) -> Tuple[int, Optional[str]]:
    """Run the directory's tasks until SIGTERM: (exit status, the failure to print or None)."""
    sockets = bind(host.endpoint, host.source)
    flow: Optional[HostFlow] = None
    try:
        notifier = notifier or Notifier()
        flow = HostFlow(host, sockets, notifier)
        flow.maybe_ready()
        Arbiter(flow, flow.shm, log_level, notifier).run()
        return flow.exit_code(), flow.failure
    finally:
        for sock in sockets:
            sock.close()
        if flow is not None:
            for task in flow.tasks.values():
                task.lock.release()
