"""The container worker's control path, on a fake container: stop, pause and resume frames are read for
the worker's own task only; pause and resume move the task's state (and publish it) only when the engine
did what was asked; a paused container is adopted as paused, and unpaused before it is stopped; a worker
restarted after its predecessor recorded the task's end never runs the task again."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import time

import docker.errors
import pytest
import requests

from supervisor import channel
from supervisor.config import build
from supervisor.frames import TaskKey
from supervisor.link import EXIT_DONE
from supervisor.shm import SharedMemory
from supervisor.state import Status, TaskState
from tests.unit.memory import TASK
from workers.container import ContainerWorker, FatalError
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
        self.seq = 0  # no sample yet: a first start

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
    process = SimpleNamespace(inbox=channel.Inbox(read_fd), outbox=None, watch=SimpleNamespace(gone=lambda: False),
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
    assert container_worker.stop_requested is False and container_worker.pause_requested == {"action": "pause"}
    parent.send("control", TASK, {"action": "resume", "id": "r1"})
    parent.send("control", TASK, {"action": "stop"})
    container_worker.read_control()
    assert container_worker.stop_requested is True
    assert container_worker.pause_requested == {"action": "resume", "id": "r1"}


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


def test_an_engine_that_refuses_to_pause_leaves_the_state_alone_and_answers_the_request(worker) -> None:
    container_worker, _, output = worker
    container = running(container_worker)
    container.fail = True
    container_worker.pause_or_resume(container, pause=True, request_id="abc")
    assert container.calls == ["pause"] and output.states == ["running", "running"]
    assert container_worker.machine.state is TaskState.RUNNING
    answer = output.statuses[-1]
    assert answer.refused == {"id": "abc", "action": "pause",
                              "reason": "the Docker engine failed to pause the container: cannot pause"}
    assert answer.settles("pause", "abc") and not answer.settles("pause", "another")
    container.fail = False
    container_worker.pause_or_resume(container, pause=True, request_id="abd")
    assert output.statuses[-1].state is TaskState.PAUSED and output.statuses[-1].refused is None


def test_a_pause_asked_while_restarting_is_answered_with_the_state(worker) -> None:
    container_worker, _, output = worker
    running(container_worker)
    container_worker.machine.move(TaskState.RESTARTING)
    container_worker.pause_or_resume(FakeContainer(), pause=True, request_id="r9")  # type: ignore[arg-type]
    assert output.statuses[-1].refused == {"id": "r9", "action": "pause", "reason": "the task is restarting"}


class EngineAway(FakeContainer):
    """A container whose engine does not answer for its first ``away`` calls (dockerd restarting)."""

    def __init__(self, status: str = "running", away: int = 2) -> None:
        super().__init__(status)
        self.away = away

    def _act(self, call: str, status: str) -> None:
        if self.away > 0:
            self.away -= 1
            self.calls.append(f"{call}: away")
            raise requests.exceptions.ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file'))")
        super()._act(call, status)

    def start(self) -> None:
        self._act("start", "running")


@pytest.fixture
def quick_retries(monkeypatch) -> None:
    """ride_out's one-second pause between tries, made instant."""
    monkeypatch.setattr(ContainerWorker, "wait_until", lambda self, deadline: time.sleep(0.001))
    monkeypatch.setattr("workers.container.time.monotonic", FastClock())


class FastClock:
    """A monotonic clock where each reading is half a second after the previous one."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def test_a_stop_rides_out_an_engine_restart_and_then_stops(worker, quick_retries) -> None:
    container_worker, _, output = worker
    container = EngineAway()
    container_worker.mark_started(container)  # type: ignore[arg-type]
    assert container_worker.stop(container) is None  # type: ignore[arg-type]
    assert container.calls == ["stop: away", "stop: away", "stop"] and container.status == "exited"


def test_a_stop_the_engine_never_answers_is_not_recorded_as_stopped(worker, quick_retries) -> None:
    container_worker, _, _ = worker
    container = EngineAway(away=10_000)
    container_worker.mark_started(container)  # type: ignore[arg-type]
    problem = container_worker.stop(container)  # type: ignore[arg-type]
    assert problem is not None and problem.startswith("the Docker engine failed to stop the container (")
    assert problem.endswith("it is left for the next supervisor")
    assert len(container.calls) > 2 and container.status == "running"


def test_a_start_rides_out_an_engine_restart(worker, quick_retries) -> None:
    container_worker, _, output = worker
    container = EngineAway(status="created")
    assert container_worker.start(container) is True  # type: ignore[arg-type]
    assert container.calls == ["start: away", "start: away", "start"] and output.states == ["running"]


def test_a_start_cut_by_an_engine_restart_rides_out_the_engine_restoring(worker, quick_retries) -> None:
    """The first try reached the engine before it went; the engine, back, refuses the next one with a
    server error until it has cleaned up what the restart left (seen in the soak: exit 128)."""
    container_worker, _, output = worker
    container = EngineAway(status="created", away=1)
    refusals = [docker.errors.APIError("task 3596e68a: already exists", response=SimpleNamespace(status_code=500))]

    def start() -> None:
        if container.away == 0 and refusals:
            container.calls.append("start: restoring")
            raise refusals.pop()
        EngineAway.start(container)

    container.start = start  # type: ignore[method-assign]
    assert container_worker.start(container) is True  # type: ignore[arg-type]
    assert container.calls == ["start: away", "start: restoring", "start"] and output.states == ["running"]


def test_a_start_the_engine_refuses_without_an_outage_is_not_tried_again(worker, quick_retries) -> None:
    container_worker, _, output = worker
    container = FakeContainer(status="created", fail=True)
    container.start = lambda: container._act("start", "running")  # type: ignore[attr-defined]
    assert container_worker.start(container) is False  # type: ignore[arg-type]
    assert container.calls == ["start"] and container_worker.start_error == "cannot start"


def test_a_first_start_without_the_engine_fails_at_once_a_restarted_one_waits(worker, monkeypatch, quick_retries) -> None:
    container_worker, _, _ = worker
    tries: List[str] = []

    def no_engine(**kwargs: Any) -> Any:
        tries.append("from_env")
        raise docker.errors.DockerException("Error while fetching server API version: connection refused")

    monkeypatch.setattr("workers.container.docker.from_env", no_engine)
    with pytest.raises(FatalError, match="cannot reach the Docker engine .*: start dockerd, or point DOCKER_HOST at it"):
        container_worker.connect()
    assert tries == ["from_env"]
    container_worker.output.seq = 42  # type: ignore[attr-defined]  # this task ran before: ride out a restart
    tries.clear()
    with pytest.raises(FatalError):
        container_worker.connect()
    assert len(tries) > 10


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
