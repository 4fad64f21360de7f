"""The three worker roles of a host tree: the same workers as a task tree's, each serving every task.

A worker of a host tree starts with no task: it is handed each task in a ``task`` frame (and a
restarted one every task it still has a part in, by ``replay``), and lets it go on ``drop``. Its exit
never means a task's end (a task's end is a frame, ``ended`` or ``finished``), so any exit but the
tree's own is a crash: the worker is restarted, and given up after too many, as in a task tree.

    role        worker module          frames it sends                   a give-up means
    container   workers.containers     info, status, metrics, error,     containers left to the next
                                       ended (a task's thread is done)   supervisor; records finished
    publisher   workers.publisher      etcd, finished, control           every task stopped
    endpoint    workers.endpoint_host  none                              every task stopped
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple

from supervisor.arbiter import Role, Verdict
from supervisor.frames import Frame
from supervisor.roles import publisher_report

if TYPE_CHECKING:
    from supervisor.hostflow import HostFlow, HostTask

class HostRole(Role):
    def __init__(self, flow: "HostFlow") -> None:
        super().__init__()
        self.flow = flow

    def has_part(self, task: "HostTask") -> bool:
        """Whether this role's worker serves the task now (a restarted worker is handed it again)."""
        return True

    def take_on(self, task: "HostTask") -> None:
        """Hand a task to the running worker (one started later gets it in ``replay``)."""
        self.send("task", task.key, task.body())

    def replay(self) -> None:
        for task in list(self.flow.tasks.values()):
            if self.has_part(task):
                self.take_on(task)
                self.catch_up(task)

    def catch_up(self, task: "HostTask") -> None:
        """What else a restarted worker must be told about a task it was handed again."""

    def on_exit(self, code: Optional[int]) -> Verdict:
        return Verdict.DONE if self.retired else Verdict.RESTART

    def on_give_up(self, message: str) -> None:
        self.retired = True
        self.flow.fail(message)
        self.flow.stop(f"the {self.name} worker gave up")


class HostContainerRole(HostRole):
    name = "container"
    module = "workers.containers"

    def __init__(self, flow: "HostFlow") -> None:
        super().__init__(flow)
        self.held = flow.host.etcd.required  # with a required etcd, no container starts before it answers

    @property
    def wanted(self) -> bool:
        return not self.retired and not self.held

    def entry_args(self) -> Tuple[Any, ...]:
        return (self.flow.shm,)

    def has_part(self, task: "HostTask") -> bool:
        return not task.ended

    def catch_up(self, task: "HostTask") -> None:
        """A stop asked, or a pause or resume not yet seen done: the worker that died may not have acted."""
        if task.stop_asked:
            self.send("control", task.key, {"action": "stop"})
        elif task.view.pending is not None:
            self.send("control", task.key, task.view.pending)

    def on_frame(self, frame: Frame) -> None:
        if frame.kind == "error":
            self.flow.task_error(frame.task, str(frame.body.get("message") or "the container worker failed"))
        elif frame.kind in ("info", "status", "metrics"):
            self.flow.task_document(frame)
        elif frame.kind == "ended":
            self.flow.task_ended(frame.task, int(frame.body.get("code", -1)))
        else:
            super().on_frame(frame)

    def on_give_up(self, message: str) -> None:
        self.retired = True
        self.flow.give_up_containers(message)


class HostPublisherRole(HostRole):
    name = "publisher"
    module = "workers.publisher"
    entry = "run_host"

    def entry_args(self) -> Tuple[Any, ...]:
        return (self.flow.host, self.flow.shm)

    def catch_up(self, task: "HostTask") -> None:
        task.view.replay_documents(self.send_encoded)
        if task.finishing:
            self.send("finish", task.key, {})

    def on_frame(self, frame: Frame) -> None:
        if frame.kind == "finished":
            self.flow.task_finished(frame.task, bool(frame.body.get("published")))
        elif not publisher_report(self.flow, frame):
            super().on_frame(frame)


class HostEndpointRole(HostRole):
    name = "endpoint"
    module = "workers.endpoint_host"

    def entry_args(self) -> Tuple[Any, ...]:
        return self.flow.shm, self.flow.sockets

    def kept_fds(self) -> Sequence[int]:
        return [sock.fileno() for sock in self.flow.sockets]
