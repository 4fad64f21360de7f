"""A killed or hung worker, for real (issue 4, item 5; issue 8, item 4): SIGKILL, or SIGSTOP, to each of
the three workers of a running supervisor, and SIGKILL to the container worker while it stops the task. What etcd held meanwhile is read back
from etcd's own change history, so a state that lasted a millisecond is seen as surely as one that
lasted a minute."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support import POLITE
from tests.support.docker import container_actions
from tests.support.leftovers import assert_nothing_left
from tests.support.metrics import seq_at, seq_passes
from tests.support.waiting import wait_for


@pytest.mark.parametrize("fault, signum, interval, limit", [
    ("killed", signal.SIGKILL, 0.2, 4.0),  # restarted at once: 0.1 s backoff
    ("hung", signal.SIGSTOP, 0.5, 3 * 0.5 + 2),  # a SIGSTOP stands for a call that never returns (issue 8)
])
def test_each_killed_or_hung_worker_is_back_soon_and_etcd_never_says_the_task_stopped(
        supervised, fault, signum, interval, limit):
    run = supervised().main(POLITE, "--interval", str(interval))
    url = run.url()
    seq_passes(url, 0, 10, "a first sample")
    container_id = run.record()["info"]["container_id"]
    history = run.etcd.history(run.prefix)
    since = time.time()

    for role in ("container", "publisher", "endpoint"):
        before = run.wait_workers()
        seq = seq_at(url)
        hit = time.monotonic()
        os.kill(before[role], signum)
        wait_for(lambda: before[role] != run.workers().get(role, before[role]), limit + 3, f"a new {role} worker")
        took = time.monotonic() - hit
        assert took <= limit, f"the {fault} {role} worker was replaced after {took:.2f} s, over {limit} s"
        seq_passes(url, seq, 10, f"samples going on at the same port after the {fault} {role} worker's restart")

    until = time.time()
    history.stop()
    statuses = history.values("status")
    assert statuses and {s["state"] for s in statuses} == {"running"}, statuses
    assert set(history.values("running")) <= {True} and history.removals() == []
    assert all(s.get("restarts", 0) == 0 for s in statuses)
    metrics = [m["seq"] for m in history.values("metrics")]
    assert metrics == sorted(metrics), metrics  # seq went on, never back
    assert run.record()["endpoint"]["url"] == url and run.state() == "running"
    assert run.containers() == [container_id[:12]]  # the same container, adopted
    assert container_actions(run.service, since, until) == []  # never stopped, started or re-created
    assert run.proc.poll() is None
    assert ("hung; killing it" in run.output()) is (fault == "hung")
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(20) == 0
    assert_nothing_left(run, run.containers)


@pytest.mark.parametrize("command", ["sleep 600", POLITE], ids=["still-stopping", "stopped-already"])
def test_a_container_worker_killed_while_stopping_the_task_still_ends_in_a_clean_stop(supervised, command):
    run = supervised().main(command, "--stop-timeout", "2")  # sleep as PID 1 ignores SIGTERM: a 2 s stop
    run.wait_state("running", 15)
    worker = wait_for(lambda: run.workers().get("container"), 5, "the container worker")
    os.kill(run.proc.pid, signal.SIGTERM)
    wait_for(lambda: "stopping container" in run.output(), 5, "the stop to begin")
    os.kill(worker, signal.SIGKILL)
    assert run.wait(30) == 0
    status = run.record()["status"]
    assert status["state"] == "stopped", status
    assert_nothing_left(run, run.containers)
