"""The task state machine: every allowed transition is applied, every other one is refused and logged
as a bug; the status document round-trips (the final one with the container's last lines); the ending
decides one exit status."""

from __future__ import annotations

import itertools
import json
import logging

import pytest

from supervisor import frames
from supervisor.ending import Ending, Phase
from supervisor.frames import TaskKey
from supervisor.state import FINAL_STATES, TRANSITIONS, Ended, Status, TaskMachine, TaskState

PAIRS = list(itertools.product(TaskState, TaskState))
ALLOWED = [(a, b) for a, b in PAIRS if b in TRANSITIONS[a]]
REFUSED = [(a, b) for a, b in PAIRS if b not in TRANSITIONS[a]]


def machine_in(state: TaskState) -> TaskMachine:
    machine = TaskMachine()
    machine.state = state
    return machine


def test_the_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(TaskState)


@pytest.mark.parametrize("before, after", ALLOWED, ids=[f"{a.value}->{b.value}" for a, b in ALLOWED])
def test_an_allowed_transition_is_applied(before: TaskState, after: TaskState, caplog) -> None:
    machine = machine_in(before)
    assert machine.move(after) is True
    assert machine.state is after and "bug" not in caplog.text


@pytest.mark.parametrize("before, after", REFUSED, ids=[f"{a.value}->{b.value}" for a, b in REFUSED])
def test_a_refused_transition_is_logged_as_a_bug_and_not_applied(before: TaskState, after: TaskState, caplog) -> None:
    machine = machine_in(before)
    with caplog.at_level(logging.ERROR, logger="state"):
        assert machine.move(after) is False
    assert machine.state is before
    assert f"bug: illegal task state transition {before.value} -> {after.value}" in caplog.text


def test_what_the_table_says_in_words() -> None:
    for final in FINAL_STATES:
        assert TRANSITIONS[final] == frozenset()  # nothing leaves a final state
    assert TaskState.RESTARTING in TRANSITIONS[TaskState.RESTARTING]  # a refused start is published again
    assert TRANSITIONS[TaskState.STOPPING] == FINAL_STATES
    assert TaskState.PAUSED in TRANSITIONS[TaskState.RUNNING] and TaskState.RUNNING in TRANSITIONS[TaskState.PAUSED]
    for live in (TaskState.STARTING, TaskState.RUNNING, TaskState.PAUSED, TaskState.RESTARTING):
        assert TaskState.STOPPING in TRANSITIONS[live]


def test_a_status_document_round_trips_and_says_whether_the_task_runs() -> None:
    machine = TaskMachine(restarts=2)
    machine.started_at = "2026-11-30T06:00:00.000Z"
    machine.move(TaskState.RUNNING)
    status = machine.status()
    document = status.to_dict()
    assert document["state"] == "running" and document["restarts"] == 2 and document["exit_code"] is None
    assert Status.from_dict(document) == status and status.running
    assert Status.from_dict({"state": "paused"}).running is False  # a minimal document (an older writer's)


def test_an_ended_run_gives_the_final_document() -> None:
    machine = machine_in(TaskState.RUNNING)
    ended = Ended(TaskState.FAILED, 7, "exited with code 7", started_at="2026-11-30T06:00:00.000Z")
    machine.move(TaskState.RESTARTING)
    status = machine.status(ended, restart_in_s=1.5)
    assert (status.state, status.exit_code, status.reason, status.restart_in_s) == (TaskState.RESTARTING, 7, "exited with code 7", 1.5)
    assert status.finished_at is not None and status.started_at == "2026-11-30T06:00:00.000Z"


def test_a_status_document_with_last_lines_round_trips() -> None:
    status = Status(TaskState.FAILED, updated_at="2026-11-30T06:00:00.000Z", exit_code=3, reason="exited with code 3",
                    last_logs=["line 1", "oops é"])
    document = status.to_dict()
    assert document["last_logs"] == ["line 1", "oops é"]
    assert Status.from_dict(json.loads(json.dumps(document))) == status  # as the publisher writes it, and back
    assert Status.from_dict(frames.decode(frames.encode("status", TaskKey("web", "t1"), document)).body) == status
    assert Status.from_dict({"state": "exited"}).last_logs == []  # an older writer's document
    assert Status.from_dict({"state": "exited", "last_logs": "not a list"}).last_logs == []
    assert "last_logs" in Status(TaskState.RUNNING, updated_at="").to_dict()  # every key always there


def test_a_live_status_never_carries_lines() -> None:
    machine = TaskMachine()
    machine.move(TaskState.RUNNING)
    machine.move(TaskState.RESTARTING)
    ended = Ended(TaskState.FAILED, 1, "exited with code 1")
    assert machine.status(ended, restart_in_s=1.0, last_logs=["x"]).last_logs == []
    machine.move(TaskState.FAILED)
    assert machine.status(ended, last_logs=["x"]).last_logs == ["x"]


@pytest.mark.parametrize(
    "state, code, stop, failure, expected",
    [
        ("exited", 0, None, None, 0),
        ("failed", 7, None, None, 7),
        ("failed", 0, None, None, 1),  # a gave-up restart policy of a task that exits 0
        ("failed", None, None, None, 1),  # the engine went away: no code of the task's own
        ("stopped", 137, "SIGTERM", None, 0),
        (None, None, "SIGTERM", None, 0),  # stopped before the container existed
        ("running", None, None, "the container worker died 6 times in a row", 1),
        ("exited", 0, None, "etcd does not answer", 1),  # a failure wins over the task's own end
    ],
)
def test_the_exit_status(state, code, stop, failure, expected) -> None:
    ending = Ending()
    if state is not None:
        ending.status = Status(TaskState(state), updated_at="", exit_code=code)
    if stop:
        assert ending.request_stop(stop) and not ending.request_stop(stop)  # asked once, however often
    if failure:
        ending.fail(failure)
        ending.fail("a later failure")
        assert ending.failure == failure  # the first one is reported
    assert ending.exit_code() == expected


def test_the_phases_only_move_forward() -> None:
    ending = Ending()
    ending.stopping(10.0)
    assert (ending.phase, ending.deadline) == (Phase.STOPPING, 10.0)
    assert ending.finishing(20.0) and not ending.finishing(30.0)
    assert (ending.phase, ending.deadline) == (Phase.FINISHING, 20.0)
    ending.stopping(40.0)  # too late to stop: the end is being recorded
    assert ending.phase is Phase.FINISHING
    ending.done()
    assert ending.phase is Phase.DONE and not ending.finishing(50.0)
