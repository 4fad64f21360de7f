"""The three worker roles of a task tree. Each owns its worker's entry arguments, what it replays to a
(re)started worker, what that worker's frames mean, and what its exit means; the course of the whole
program (stop, finish, exit status) is the ``TaskFlow``'s, which every role reports to.

    role        worker module       frames it sends            its exit
    container   workers.container   info, status, metrics,     EXIT_DONE / EXIT_FATAL: the task's end is
                                    error                      recorded (or cannot be): finish
    publisher   workers.publisher   etcd, finished, control    EXIT_DONE after ``finished``: done
    endpoint    workers.endpoint    none                       any: restart it, until the end
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Protocol, Sequence, Tuple

from supervisor.arbiter import Role, Verdict
from supervisor.ending import Phase
from supervisor.frames import Frame, TaskKey
from supervisor.link import EXIT_DONE, EXIT_FATAL

if TYPE_CHECKING:
    from supervisor.taskflow import TaskFlow


class FlowRole(Role):
    """A role of a task tree: it reports to the flow, and is retired once its job is over."""

    def __init__(self, flow: "TaskFlow") -> None:
        super().__init__()
        self.flow = flow


class ContainerRole(FlowRole):
    name = "container"
    module = "workers.container"

    def __init__(self, flow: "TaskFlow") -> None:
        super().__init__(flow)
        self.held = flow.config.etcd.required  # with a required etcd, the container waits for it to answer

    @property
    def wanted(self) -> bool:
        return not self.retired and not self.held

    def entry_args(self) -> Tuple[Any, ...]:
        return self.flow.config, self.flow.shm

    def replay(self) -> None:
        """A stop asked, or a pause or resume not yet seen done: the worker that died may not have acted."""
        for key, view in self.flow.views.items():
            if self.flow.ending.stop_requested:
                self.send("control", key, {"action": "stop"})
            elif view.pending is not None:
                self.send("control", key, view.pending)

    def on_frame(self, frame: Frame) -> None:
        if frame.kind == "error":
            self.flow.ending.fail(str(frame.body.get("message") or "the container worker failed"))
        elif frame.kind in ("info", "status", "metrics"):
            self.flow.task_document(frame)
        else:
            super().on_frame(frame)

    def on_exit(self, code: Optional[int]) -> Verdict:
        if code in (EXIT_DONE, EXIT_FATAL):
            self.retired = True
            self.flow.finish()
            return Verdict.DONE
        return Verdict.RESTART

    def on_give_up(self, message: str) -> None:
        # The container is left running, for the next supervisor to adopt: only this worker may stop it.
        self.retired = True
        self.flow.ending.fail(message)
        self.flow.finish()


class PublisherFlow(Protocol):
    """What a publisher's ``etcd`` and ``control`` frames are reported to: a task tree's flow or a host tree's."""

    def etcd_report(self, key: TaskKey, report: Dict[str, Any]) -> None: ...

    def control(self, key: TaskKey, request: Dict[str, Any]) -> None: ...


def publisher_report(flow: PublisherFlow, frame: Frame) -> bool:
    """A publisher's ``etcd`` (connected, state held, refusal) or ``control`` (a request from the fleet)
    frame, reported to the flow, in a task tree and a host tree alike; False for any other frame."""
    if frame.kind == "etcd":
        flow.etcd_report(frame.task, frame.body)
    elif frame.kind == "control":
        flow.control(frame.task, frame.body)
    else:
        return False
    return True


class PublisherRole(FlowRole):
    name = "publisher"
    module = "workers.publisher"

    def entry_args(self) -> Tuple[Any, ...]:
        return self.flow.config, self.flow.endpoint, self.flow.shm

    def replay(self) -> None:
        for key, view in self.flow.views.items():
            view.replay_documents(self.send_encoded)
            if self.flow.ending.phase is Phase.FINISHING:
                self.send("finish", key, {})

    def on_frame(self, frame: Frame) -> None:
        if frame.kind == "finished":
            self.retired = True
            view = self.flow.view(frame.task)
            if view is not None:
                view.finished(bool(frame.body.get("published")))
        elif not publisher_report(self.flow, frame):
            super().on_frame(frame)

    def on_exit(self, code: Optional[int]) -> Verdict:
        return Verdict.DONE if self.retired and code == EXIT_DONE else Verdict.RESTART

    def on_give_up(self, message: str) -> None:
        self.retired = True
        self.flow.ending.fail(message)
        self.flow.stop("the publisher worker gave up")


class EndpointRole(FlowRole):
    name = "endpoint"
    module = "workers.endpoint"

    def entry_args(self) -> Tuple[Any, ...]:
        flow = self.flow
        return flow.shm, flow.config.key, flow.sockets, flow.endpoint, flow.config.metrics.interval

    def kept_fds(self) -> Sequence[int]:
        return [sock.fileno() for sock in self.flow.sockets]

    def on_exit(self, code: Optional[int]) -> Verdict:
        return Verdict.DONE if self.retired else Verdict.RESTART

    def on_give_up(self, message: str) -> None:
        self.retired = True
        self.flow.ending.fail(message)
        self.flow.stop("the endpoint worker gave up")
