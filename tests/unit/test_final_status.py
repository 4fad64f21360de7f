"""How an ended container's inspect data becomes the task's final state."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from supervisor.state import TaskState
from workers.container import ended_run, engine_time


def attrs(**state: Any) -> Dict[str, Any]:
    base = {"ExitCode": 0, "OOMKilled": False, "Error": "", "StartedAt": "2026-11-25T08:00:00.123456789Z",
            "FinishedAt": "2026-11-25T08:00:05.5Z"}
    base.update(state)
    return {"State": base}


@pytest.mark.parametrize(
    "state, stopped, expected",
    [
        ({}, False, ("exited", 0, "exited")),
        ({"ExitCode": 7}, False, ("failed", 7, "exited with code 7")),
        ({"ExitCode": 137, "OOMKilled": True}, False, ("failed", 137, "oom-killed: the task exceeded its memory limit")),
        ({"ExitCode": 127, "Error": "exec: \"nope\": executable file not found in $PATH"}, False,
         ("failed", 127, "exec: \"nope\": executable file not found in $PATH")),
        ({"ExitCode": 137}, True, ("stopped", 137, "stopped by the supervisor")),  # asked to stop: not a failure
    ],
)
def test_states_exit_codes_and_reasons(state, stopped, expected) -> None:
    ended = ended_run(attrs(**state), stopped=stopped)
    assert (ended.state, ended.exit_code, ended.reason) == (TaskState(expected[0]), *expected[1:])
    assert ended.oom_killed is bool(state.get("OOMKilled"))


def test_times_are_the_engines_trimmed_to_milliseconds() -> None:
    ended = ended_run(attrs(), stopped=False)
    assert ended.started_at == "2026-11-25T08:00:00.123Z"
    assert ended.finished_at == "2026-11-25T08:00:05.500Z"


def test_never_is_none_and_an_unfinished_end_is_now() -> None:
    assert engine_time("0001-01-01T00:00:00Z") is None and engine_time(None) is None
    assert engine_time("2026-11-25T08:00:00Z") == "2026-11-25T08:00:00Z"
    ended = ended_run(attrs(StartedAt="0001-01-01T00:00:00Z", FinishedAt="0001-01-01T00:00:00Z"), stopped=False)
    assert ended.started_at is None and ended.finished_at is not None and ended.finished_at.startswith("20")
