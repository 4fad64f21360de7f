"""Stop signals during the start, and a second SIGTERM while stopping, for real (issue 4, item 9): each
is one clean stop, whenever it comes."""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

import pytest

from tests.support import POLITE
from tests.support.leftovers import assert_nothing_left
from tests.support.supervisor import Supervisor
from tests.support.waiting import wait_for


def sigterm_in(pid: int, mask: str) -> bool:
    """Whether SIGTERM is in a signal mask of /proc/PID/status: SigBlk (blocked), SigCgt (handled)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            bits = next(line for line in handle if line.startswith(f"{mask}:")).split()[1]
    except (OSError, StopIteration):
        return False
    return bool(int(bits, 16) & 1 << (signal.SIGTERM - 1))


def moment(name: str, run: Supervisor) -> Callable[[], bool]:
    """When, during the start, the stop signal is sent. Never before the entry point's first line holds
    the stop signals: until then (the interpreter starting, ~20 ms) SIGTERM's default action kills it."""
    held = lambda: sigterm_in(run.proc.pid, "SigBlk") or sigterm_in(run.proc.pid, "SigCgt")  # noqa: E731
    started = time.monotonic()
    checks = {
        "held": held,
        "handled": lambda: sigterm_in(run.proc.pid, "SigCgt"),  # the arbiter's own handler
        "workers": lambda: "container" in run.workers(),
        "container": lambda: bool(run.containers()),  # created, perhaps not yet started
        "registered": lambda: run.state() in ("starting", "running"),
    }
    check = checks.get(name) or (lambda: time.monotonic() - started >= float(name))
    return lambda: check() and held()


@pytest.mark.parametrize("when", ["held", "0.1", "0.2", "handled", "workers", "container", "registered", "0.6"])
@pytest.mark.parametrize("signals", [1, 2])
def test_a_stop_during_the_start_is_clean(supervised, when, signals):
    run = supervised().main(POLITE)
    wait_for(moment(when, run), 20, f"the moment {when!r}", every=0.005)
    for _ in range(signals):
        os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(30) == 0, run.output()
    record = run.record()
    assert record == {} or (record["status"]["state"] == "stopped" and record["running"] is False), record
    assert_nothing_left(run, run.containers)


def test_a_second_sigterm_while_stopping_is_ignored(supervised):
    run = supervised().main("sleep 600", "--stop-timeout", "2")  # sleep as PID 1 ignores SIGTERM: a 2 s stop
    run.wait_state("running", 15)
    os.kill(run.proc.pid, signal.SIGTERM)
    wait_for(lambda: "stopping container" in run.output(), 5, "the stop to begin")
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(20) == 0
    assert "already stopping" in run.output()
    status = run.record()["status"]
    assert status["state"] == "stopped" and status["exit_code"] == 137
    assert_nothing_left(run, run.containers)
