"""The restart state machine shared by dead workers and restarted tasks: backoff, give-up, reset; and a
task's series carried across restarts of its container worker (killed while backing off, while restarting
the container, or while it runs), so that a worker dying again and again never resets it."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator, List

import docker
import msgpack
import pytest

from supervisor import channel
from supervisor.config import build
from supervisor.link import EXIT_DONE
from supervisor.restarts import Policy, Restarts, State
from supervisor.shm import SharedMemory
from supervisor.state import Status, TaskState
from tests.unit.memory import TASK
from workers.container import ContainerWorker, TaskOutput
from workers.process import Pulse
from workers.seqfile import SeqFile

POLICY = Policy(max_tries=3, first_delay=0.1, max_delay=0.3, stable_after=10.0)


def test_delays_double_up_to_the_cap_then_fatal() -> None:
    restarts = Restarts(POLICY)
    restarts.started(0.0)
    delays = []
    for _ in range(3):
        assert restarts.died(1.0) is State.BACKOFF
        delays.append(round(restarts.restart_at - 1.0, 6))
    assert delays == [0.1, 0.2, 0.3]
    assert restarts.died(1.0) is State.FATAL
    assert restarts.restart_at is None and not restarts.due(100.0)


def test_due_only_once_the_delay_has_passed() -> None:
    restarts = Restarts(POLICY)
    restarts.started(0.0)
    restarts.died(5.0)
    assert not restarts.due(5.05)
    assert restarts.due(5.1)
    restarts.started(5.1)
    assert restarts.state is State.RUNNING and not restarts.due(6.0)


def test_a_stable_run_starts_a_fresh_series() -> None:
    restarts = Restarts(POLICY)
    restarts.started(0.0)
    for _ in range(3):
        restarts.died(0.5)
        restarts.started(0.5)
    # up for stable_after seconds: the earlier deaths are forgiven
    assert restarts.died(0.5 + 10.0) is State.BACKOFF
    assert restarts.tries == 1
    assert restarts.restart_at == pytest.approx(10.5 + 0.1)


def test_deaths_in_quick_succession_are_not_forgiven() -> None:
    restarts = Restarts(POLICY)
    now = 0.0
    for _ in range(3):
        restarts.started(now)
        now += 9.0  # just under stable_after
        assert restarts.died(now) is State.BACKOFF
    restarts.started(now)
    assert restarts.died(now + 1.0) is State.FATAL


def test_zero_tries_gives_up_on_the_first_death() -> None:
    restarts = Restarts(Policy(max_tries=0))
    restarts.started(0.0)
    assert restarts.died(0.0) is State.FATAL


def test_deaths_without_a_start_in_between_are_never_forgiven() -> None:
    """A task whose start is refused never runs: its deaths add up, however far apart in time."""
    restarts = Restarts(POLICY)
    states = [restarts.died(now) for now in (100.0, 200.0, 300.0, 400.0)]
    assert states == [State.BACKOFF] * 3 + [State.FATAL]


def test_a_series_carried_to_another_process_goes_on_where_it_was() -> None:
    restarts = Restarts(POLICY)
    restarts.started(0.0)
    restarts.died(1.0)
    restarts.started(1.1)
    restarts.died(2.0)  # second try: restart due at 2.2
    resumed = Restarts(POLICY)
    resumed.resume(msgpack.unpackb(msgpack.packb(restarts.carried())))  # as a status frame carries it
    assert (resumed.tries, resumed.state, resumed.restart_at, resumed.started_at) == (2, State.BACKOFF, 2.2, 1.1)
    assert not resumed.due(2.1) and resumed.due(2.2)
    resumed.started(2.2)
    assert resumed.died(2.3) is State.BACKOFF and resumed.restart_at == pytest.approx(2.3 + 0.3)
    assert resumed.died(2.3) is State.FATAL  # max_tries in a row, across both processes


# -- a task's restarts across restarts of its container worker ----------------------------------------


class Killed(BaseException):
    """The container worker killed (kill -9) at this point: nothing after it runs."""


class FailingContainer:
    """A container whose command fails at once: each start is a run of its own (a new StartedAt) that has
    ended by the time the worker looks."""

    def __init__(self) -> None:
        self.name, self.id, self.short_id, self.client = "web.task-1", "c0ffee", "c0ffee", None
        self.status = "exited"
        self.starts = 0
        self.attrs: Dict[str, Any] = {}
        self.ran()

    def ran(self) -> None:
        second = f"{self.starts:02d}"
        self.attrs = {"State": {"StartedAt": f"2026-11-30T06:00:{second}.1Z", "FinishedAt": f"2026-11-30T06:00:{second}.2Z",
                                "ExitCode": 1, "OOMKilled": False, "Error": "", "Pid": 0}}

    def start(self) -> None:
        self.starts += 1
        self.ran()

    def reload(self) -> None:
        pass

    def remove(self, force: bool = False) -> None:
        pass


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Iterator[Callable[..., ContainerWorker]]:
    """Container workers of one task, one after another, on the same shared memory (as the parent keeps
    it across its worker's restarts); each writes its frames to a pipe nobody reads."""
    monkeypatch.setenv("HORIZON_RUN_DIR", str(tmp_path))
    monkeypatch.setattr("workers.container.drain", lambda *args: None)
    shm = SharedMemory(roles=["container"], tasks=[TASK])
    config = build({"task": {"image": "busybox", "command": "false", "service": "web", "name": "task-1",
                             "restart": "on-failure", "max_restarts": "3", "restart_delay": "0.05"}},
                   lambda section, key: f"[{section}] {key}", "test", None)
    fds: List[int] = []

    def worker() -> ContainerWorker:
        inbox_r, inbox_w = channel.pipe()
        outbox_r, outbox_w = channel.pipe()
        fds.extend((inbox_r, inbox_w, outbox_r, outbox_w))
        outbox = channel.Outbox(outbox_w)
        link = SimpleNamespace(inbox=channel.Inbox(inbox_r), outbox=outbox, watch=SimpleNamespace(gone=lambda: False),
                               pulse=Pulse(shm.heartbeats["container"], 0.1))
        output = TaskOutput(TASK, shm.tasks[TASK], outbox, 1, SeqFile(config))
        return ContainerWorker(config, output, link)  # type: ignore[arg-type]

    yield worker
    for fd in fds:
        os.close(fd)


def killed_in_its_nth_back_off(worker: ContainerWorker, monkeypatch, n: int) -> None:
    waits = []

    def idle_until(deadline: float, until_stop: bool = False) -> None:
        waits.append(deadline)
        if len(waits) == n:
            raise Killed()

    monkeypatch.setattr(worker, "idle_until", idle_until)


def status_of(worker: ContainerWorker) -> Status:
    status = worker.output.last_status()
    assert status is not None
    return status


def test_a_worker_killed_while_backing_off_leaves_the_next_one_the_tries_and_the_delay(tree, monkeypatch) -> None:
    container = FailingContainer()  # ended while no worker watched it: its end meets the restart policy
    first = tree()
    killed_in_its_nth_back_off(first, monkeypatch, 2)  # after one restart, backing off to the second
    with pytest.raises(Killed):
        first.supervise(container)  # type: ignore[arg-type]
    assert container.starts == 1 and status_of(first).state is TaskState.RESTARTING
    due = first.restarts.restart_at
    assert due is not None and first.restarts.tries == 2
    second = tree()
    waits: List[float] = []
    monkeypatch.setattr(second, "idle_until", lambda deadline, until_stop=False: waits.append(deadline))
    assert second.supervise(container) == EXIT_DONE  # type: ignore[arg-type]
    assert waits[0] == due  # the rest of the same delay, not a new one from now
    final = status_of(second)
    assert final.state is TaskState.FAILED and final.reason == "gave up after 3 restarts: exited with code 1"
    assert container.starts == 3 and final.restarts == 3  # max_restarts in all, however often the worker died


def test_a_worker_killed_after_each_restart_still_gives_up_after_max_restarts(tree, monkeypatch) -> None:
    container = FailingContainer()
    for _ in range(10):
        worker = tree()
        killed_in_its_nth_back_off(worker, monkeypatch, 2)  # each worker restarts the task once, then dies
        try:
            worker.supervise(container)  # type: ignore[arg-type]
        except Killed:
            continue
        break
    final = status_of(worker)
    assert final.state is TaskState.FAILED and final.reason == "gave up after 3 restarts: exited with code 1"
    assert container.starts == 3


def test_a_run_started_after_the_last_status_counts_as_the_restart_it_was(tree, monkeypatch) -> None:
    """Killed between starting the container again and publishing anything: the new run is not the one
    the status (restarting) knew, so it is that restart, and its end is a new one."""
    container = FailingContainer()
    first = tree()
    monkeypatch.setattr(container, "reload", lambda: (_ for _ in ()).throw(Killed()) if container.starts == 1 else None)
    with pytest.raises(Killed):
        first.supervise(container)  # type: ignore[arg-type]
    assert container.starts == 1 and status_of(first).restarts == 0  # it said: restarting, 0 restarts so far
    monkeypatch.setattr(container, "reload", lambda: None)
    second = tree()
    assert second.supervise(container) == EXIT_DONE  # type: ignore[arg-type]
    final = status_of(second)
    assert final.reason == "gave up after 3 restarts: exited with code 1" and container.starts == 3


def test_an_adopted_run_keeps_its_start_so_a_long_run_still_forgives_the_earlier_tries(tree) -> None:
    container = FailingContainer()
    first = tree()
    first.restarts.tries = 3  # the last try: one more death in a row gives up
    first.restarts.started(time.monotonic() - 120)  # up for two minutes (restart_reset: 60 s)
    first.mark_started(container)  # type: ignore[arg-type]
    first.move(TaskState.RUNNING)
    container.status = "running"
    second = tree()  # the first one killed; the run goes on
    assert second.take_over(container) is False  # type: ignore[arg-type]
    assert second.restarts.tries == 3 and second.restarts.started_at == first.restarts.started_at
    assert second.restarts.died(time.monotonic()) is State.BACKOFF and second.restarts.tries == 1


class RefusedContainer(FailingContainer):
    """A container whose start the engine refuses (executable not found): it stays created, never started."""

    def __init__(self) -> None:
        super().__init__()
        self.status = "created"
        self.attrs = {"State": {"StartedAt": "0001-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z",
                                "ExitCode": 0, "OOMKilled": False, "Error": "", "Pid": 0}}

    def start(self) -> None:
        self.starts += 1
        raise docker.errors.APIError("exec: \"nope\": executable file not found in $PATH")


def test_a_refused_start_waited_out_by_a_killed_worker_is_restarted_after_the_rest_of_its_delay(tree, monkeypatch) -> None:
    """The last status says restarting, the container is still created: the next worker waits out the rest
    of the delay, makes that restart, and counts the ends after it toward max_restarts."""
    container = RefusedContainer()
    due = []
    for _ in range(10):
        worker = tree()
        killed_in_its_nth_back_off(worker, monkeypatch, 1 if not due else 2)  # each worker dies backing off
        try:
            worker.supervise(container)  # type: ignore[arg-type]
        except Killed:
            due.append(worker.restarts.restart_at)
            continue
        break
    final = status_of(worker)
    assert final.state is TaskState.FAILED and final.reason.startswith("gave up after 3 restarts: cannot start"), final.reason
    assert container.starts == 4 and final.restarts == 3  # the first start and max_restarts restarts
