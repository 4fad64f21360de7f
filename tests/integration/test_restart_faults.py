"""A task that fails at once, restarted on failure, whose container worker is killed (kill -9) each time
it backs off to restart it: the tries toward ``max_restarts`` and the back-off go on across the worker's
restarts (workers/container.py: ``ContainerWorker.take_over``), so the task still gives up after
``max_restarts`` restarts in all, in a task tree and in a host tree. What etcd held is read back from
etcd's own change history. The worker's own restarts stay under the parent's give-up (5 in a row)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable, Dict, List

import pytest

from tests.support.docker import container_actions
from tests.support.host import HostTree, host_tree, statuses  # noqa: F401 (fixture)
from tests.support.leftovers import assert_nothing_left
from tests.support.supervisor import Supervisor
from tests.support.waiting import wait_for

MAX_RESTARTS = 2
DELAY = 1.0  # seconds before the first restart (then 2 s): time to see the restarting status and kill
FAILING = "sh -c 'exit 1'"
GAVE_UP = f"gave up after {MAX_RESTARTS} restarts: exited with code 1"

# The behaviour is the container worker's, the same on either etcd API.
pytestmark = pytest.mark.parametrize("etcd_api", ["v3"], indirect=True)


def kill_the_container_worker_at_each_back_off(run: Supervisor, status: Callable[[], Dict[str, Any]]) -> None:
    """For each restart to come: once the task's status says restarting (with that many restarts so far),
    kill -9 the container worker, and wait for the parent to start the next one."""
    for restarts in range(MAX_RESTARTS):
        wait_for(lambda: status().get("state") == "restarting" and status().get("restarts") == restarts, 20,
                 f"the task restarting after {restarts} restarts")
        worker = run.wait_workers()["container"]
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: run.workers().get("container", worker) != worker, 5, "a new container worker")


def gave_up_after_max_restarts(written: List[Dict[str, Any]], actions: List[str]) -> None:
    assert written[-1]["state"] == "failed" and written[-1]["reason"] == GAVE_UP, written[-1]
    assert written[-1]["restarts"] == MAX_RESTARTS
    restarting = [s["restarts"] for s in written if s["state"] == "restarting"]
    assert restarting and max(restarting) == MAX_RESTARTS - 1, restarting  # never one restart more
    assert actions.count("start") == MAX_RESTARTS + 1, actions  # the first run, and max_restarts more
    assert not any("restart_series" in s for s in written)  # the worker's own: it never reaches etcd


def test_a_task_trees_worker_killed_at_each_back_off_does_not_reset_the_tries(supervised):
    run = supervised()
    history = run.etcd.history(run.prefix)
    since = time.time()
    run.main(FAILING, "--restart", "on-failure", "--max-restarts", str(MAX_RESTARTS), "--restart-delay", str(DELAY))
    kill_the_container_worker_at_each_back_off(run, lambda: run.record().get("status") or {})
    code = run.wait(30)
    history.stop()
    assert code != 0
    gave_up_after_max_restarts(history.values("status"), container_actions(run.service, since, time.time()))
    assert run.record()["running"] is False
    assert_nothing_left(run, run.containers)


def test_a_host_trees_worker_killed_at_each_back_off_does_not_reset_the_tries(host_tree):
    tree: HostTree = host_tree()
    tree.host_ini()
    tree.task_ini("a", command=FAILING,
                  task=f"restart = on-failure\nmax_restarts = {MAX_RESTARTS}\nrestart_delay = {DELAY}\n")
    history = tree.etcd.history(tree.prefix)
    since = time.time()
    tree.run_tree()
    kill_the_container_worker_at_each_back_off(tree, lambda: tree.record_of("a").get("status") or {})
    wait_for(lambda: tree.log_lines(f"task {tree.service}/a: done"), 30, "the task's end recorded")
    history.stop()
    gave_up_after_max_restarts(statuses(history, tree.key("a")), container_actions(tree.service, since, time.time()))
    assert tree.proc is not None and tree.proc.poll() is None  # the tree runs on
    assert tree.terminate() == 0
    assert "Traceback" not in tree.output()
