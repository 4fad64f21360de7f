"""The container worker's control path, on a fake container: stop, pause and resume frames are read for
the worker's own task only; pause and resume move the task's state (and publish it) only when the engine
did what was asked; a paused container is adopted as paused, and unpaused before it is stopped; a worker
restarted after its predecessor recorded the task's end never runs the task again."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import docker.errors
import pytest

from supervisor import channel
from supervisor.config import build
from supervisor.frames import TaskKey
from supervisor.link import EXIT_DONE
from supervisor.shm import SharedMemory
from supervisor.state import Status, TaskState
from tests.unit.memory import TASK
from workers.container import ContainerWorker
from workers.process import Pulse


class FakeContainer:
    def __init__(self, status: str = "running", fail: bool = False) -> None:
        self.status = status
        self.fail = fail
        self.calls: List[str] = []
        self.name = "web.task-1"
        self.id = "c0ffee"
        self.attrs: Dict[str, Any] = {"State": {"StartedAt": "2026-11-30T06:00:00.5Z", "Pid": 1}}

    def _act(self, call: str, status: str) -> None:
        self.calls.append(call)
        if self.fail:
            raise docker.errors.APIError(f"cannot {call}")
        self.status = status

    def pause(self) -> None:
        self._act("pause", "paused")

    def unpause(self) -> None:
        self._act("unpause", "running")

    def stop(self, timeout: int) -> None:
        self._act("stop", "exited")

    def reload(self) -> None:
        pass


class FakeOutput:
    """What the worker publishes, in order."""

    key = TASK

    def __init__(self) -> None:
        self.statuses: List[Status] = []
        self.emitted: List[str] = []
        self.last: Optional[Status] = None  # what a previous worker of this supervisor published

    def last_status(self) -> Optional[Status]:
        return self.last

    def status(self, status: Status) -> None:
        self.statuses.append(status)

    def emit(self, kind: str, body: Dict[str, Any]) -> None:
        self.emitted.append(kind)

    @property
    def states(self) -> List[str]:
        return [status.state.value for status in self.statuses]


@pytest.fixture
def worker():
    read_fd, write_fd = channel.pipe()
    shm = SharedMemory(roles=["container"], tasks=[TASK])
    config = build({"task": {"image": "busybox", "command": "sleep 1", "service": "web", "name": "task-1"}},
                   lambda section, key: f"[{section}] {key}", "test", None)
    parent = channel.Outbox(write_fd)
    output = FakeOutput()
    process = SimpleNamespace(inbox=channel.Inbox(read_fd), outbox=None, watch=None,
                              pulse=Pulse(shm.heartbeats["container"], 0.1))
    yield ContainerWorker(config, output, process), parent, output  # type: ignore[arg-type]
    os.close(read_fd)
    os.close(write_fd)


def running(container_worker: ContainerWorker, status: str = "running") -> FakeContainer:
    container = FakeContainer(status)
    container_worker.mark_started(container)  # type: ignore[arg-type]
    return container


def test_control_frames_are_read_for_the_workers_own_task_only(worker) -> None:
    container_worker, parent, _ = worker
    parent.send("control", TaskKey("web", "another"), {"action": "stop"})
    parent.send("control", TASK, {"action": "pause"})
    container_worker.read_control()
    assert container_worker.stop_requested is False and container_worker.pause_requested is True
    parent.send("control", TASK, {"action": "resume"})
    parent.send("control", TASK, {"action": "stop"})
    container_worker.read_control()
    assert container_worker.stop_requested is True and container_worker.pause_requested is False


def test_pause_then_resume_moves_the_state_and_publishes_it(worker) -> None:
    container_worker, _, output = worker
    container = running(container_worker)
    container_worker.pause_or_resume(container, pause=True)
    container_worker.pause_or_resume(container, pause=False)
    assert container.calls == ["pause", "unpause"]
    assert output.states == ["running", "paused", "running"]
    assert container_worker.machine.state is TaskState.RUNNING and container_worker.pause_requested is None


@pytest.mark.parametrize("status, pause", [("running", False), ("paused", True)])
def test_a_request_that_does_not_apply_does_nothing(worker, status: str, pause: bool) -> None:
    container_worker, _, output = worker
    container = running(container_worker, status)
    before = list(output.states)
    container_worker.pause_or_resume(container, pause=pause)
    assert container.calls == [] and output.states == before


def test_an_engine_that_refuses_to_pause_leaves_the_state_alone(worker) -> None:
    container_worker, _, output = worker
    container = running(container_worker)
    container.fail = True
    container_worker.pause_or_resume(container, pause=True)
    assert container.calls == ["pause"] and output.states == ["running"]
    assert container_worker.machine.state is TaskState.RUNNING


def test_a_paused_container_is_adopted_as_paused_and_unpaused_before_its_stop(worker) -> None:
    container_worker, _, output = worker
    container = running(container_worker, "paused")
    assert output.states == ["paused"] and output.emitted == ["info"]
    container_worker.stop(container)  # type: ignore[arg-type]
    assert container.calls == ["unpause", "stop"] and output.states == ["paused", "stopping"]


def test_a_worker_restarted_after_the_task_ended_says_so_again_and_runs_nothing(worker, monkeypatch) -> None:
    first, _, output = worker
    output.last = Status(TaskState.EXITED, updated_at="2026-11-30T06:00:00.000Z", exit_code=0, restarts=2)
    process = SimpleNamespace(inbox=first.inbox, outbox=first.outbox, watch=first.watch, pulse=first.pulse)
    container_worker = ContainerWorker(first.config, output, process)  # type: ignore[arg-type]
    assert container_worker.machine.restarts == 2  # the count goes on from what was published
    removed: List[str] = []
    monkeypatch.setattr(container_worker, "connect", lambda: pytest.fail("the engine was asked to run the task"))
    monkeypatch.setattr(container_worker, "remove_leftover", lambda: removed.append("leftover"))
    monkeypatch.setattr("workers.container.drain", lambda *args: None)
    assert container_worker.run() == EXIT_DONE
    assert output.states == ["exited"] and removed == ["leftover"]  # remove = true: the container goes too
