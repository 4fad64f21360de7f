"""A host tree's processes killed for real (issue 12, "Isolation"): kill -9 (and SIGSTOP, a hang) of each
of its three workers (hz-container, hz-publisher, hz-endpoint) while three tasks run, and kill -9 of its
parent.

A worker killed or hung is restarted with every container adopted: the same container ids, every task's
``seq`` going on at the same URLs, and etcd never showing any task as anything but running (read back
from etcd's change history). The parent killed: its workers leave, every record expires within the
ttl, the containers run on, and a new supervisor on the same directory adopts every one of them."""

from __future__ import annotations

import os
import signal
import time
from typing import Dict

import pytest

from tests.support.docker import container_actions, inspect
from tests.support.host import HostTree, host_tree, kill_parent, metrics_seqs, removals, statuses  # noqa: F401 (fixture)
from tests.support.leftovers import group_processes
from tests.support.metrics import seq_passes
from tests.support.net import http_get
from tests.support.waiting import wait_for

TASKS = ("a", "b", "c")
TTL = 5


def start_three(tree: HostTree, ttl: int = 15, interval: float = 0.2) -> Dict[str, str]:
    """Three tasks in the tree's service, sampled every ``interval`` (c at its own, slower, one), running:
    name -> container id."""
    tree.host_ini(ttl=ttl)
    tree.task_ini("a", interval=interval)
    tree.task_ini("b", interval=interval)
    tree.task_ini("c", interval=2 * interval)
    tree.run_tree()
    tree.wait_states({name: "running" for name in TASKS})
    for name in TASKS:
        seq_passes(tree.url_of(name), 0, 10, f"a first sample of {name}")
    ids = {name: tree.container_of(name) for name in TASKS}
    assert all(ids.values()) and len(set(ids.values())) == 3, ids
    return ids


def restarts(url: str) -> Dict[str, int]:
    """The workers' restarts, as a task's /metrics counts them in its supervisor section ({} before)."""
    return ((http_get(f"{url}/metrics")[1] or {}).get("supervisor") or {}).get("restarts") or {}


def still_running(tree: HostTree, ids: Dict[str, str]) -> None:
    """The same containers, one per task, still running, as the engine tells."""
    assert sorted(tree.containers()) == sorted(c[:12] for c in ids.values())
    for name, container in ids.items():
        assert inspect(container, "{{.State.Status}}") == "running", name


def adopted(tree: HostTree, ids: Dict[str, str]) -> None:
    """The same containers, still running, and each task's record names its own."""
    still_running(tree, ids)
    for name, container in ids.items():
        assert tree.container_of(name) == container, name


@pytest.mark.parametrize("fault, signum, interval, limit", [
    pytest.param("killed", signal.SIGKILL, 0.2, 4.0, id="killed"),  # restarted at once: 0.1 s backoff
    # a call that never returns: replaced within 3 intervals (the tree's shortest) + 2 s
    pytest.param("hung", signal.SIGSTOP, 0.5, 3 * 0.5 + 2, id="hung"),
])
def test_each_killed_or_hung_worker_is_back_with_every_task_adopted_and_etcd_never_says_one_stopped(
        host_tree, fault, signum, interval, limit):
    tree: HostTree = host_tree()
    ids = start_three(tree, interval=interval)
    urls = {name: tree.url_of(name) for name in TASKS}
    history = tree.etcd.history(tree.prefix)
    since = time.time()
    # Before the faults: what a loaded host may already have cost (a worker too slow at its start is
    # killed as hung), so that what is counted below is the faults' own.
    restarted = wait_for(lambda: restarts(urls["a"]), 10, "the supervisor section's restarts")
    hung_before = len(tree.log_lines("hung; killing it"))

    for role in ("container", "publisher", "endpoint"):
        before = tree.wait_workers()
        seqs = {name: tree.seq_of(name) for name in TASKS}
        hit = time.monotonic()
        os.kill(before[role], signum)
        wait_for(lambda: before[role] != tree.workers().get(role, before[role]), limit + 3, f"a new {role} worker")
        took = time.monotonic() - hit
        assert took <= limit, f"the {fault} {role} worker was replaced after {took:.2f} s, over {limit} s"
        after = tree.wait_workers()
        assert {r: p for r, p in after.items() if r != role} == {r: p for r, p in before.items() if r != role}
        for name in TASKS:
            seq_passes(urls[name], seqs[name], 10, f"{name} sampling on at the same URL after the {role} worker's death")

    # etcd: fresh metrics of every task written by the new publisher, all the while "running"
    for name in TASKS:
        seen = tree.seq_of(name)
        wait_for(lambda: tree.record_of(name).get("metrics", {}).get("seq", 0) >= seen, 10,
                 f"{name}'s metrics in etcd going on")
    history.stop()
    for name in TASKS:
        key = tree.key(name)
        written = statuses(history, key)
        assert written and {s["state"] for s in written} == {"running"}, (name, written)
        assert all(s["restarts"] == 0 for s in written), (name, written)
        assert removals(history, key) == [], name
        seqs = metrics_seqs(history, key)
        assert len(seqs) >= 2 and seqs == sorted(seqs), (name, seqs)  # went on, never back
        assert tree.record_of(name)["running"] is True and tree.record_of(name)["endpoint"]["url"] == urls[name]
    adopted(tree, ids)
    assert container_actions(tree.service, since, time.time()) == []  # never stopped, started or re-created
    assert len(tree.log_lines("adopting running container")) == 3  # the new container worker's, one per task

    counted = {role: restarted[role] + 1 for role in ("container", "publisher", "endpoint")}
    wait_for(lambda: all(restarts(urls[name]) == counted for name in TASKS), 10,
             f"one more restart of each worker in every task's supervisor section: {counted}")
    assert tree.proc.poll() is None
    assert len(tree.log_lines("hung; killing it")) - hung_before == (3 if fault == "hung" else 0)

    assert tree.terminate() == 0
    for name in TASKS:
        assert tree.state_of(name) == "stopped"
    assert tree.containers() == []
    assert "Traceback" not in tree.output()


def test_a_killed_parent_leaves_every_record_to_expire_and_the_next_tree_adopts_every_container(host_tree):
    tree: HostTree = host_tree()
    ids = start_three(tree, ttl=TTL)
    seen = {name: tree.seq_of(name) for name in TASKS}
    leases = {name: tree.node(name).lease for name in TASKS}

    killed = time.monotonic()
    kill_parent(tree)  # its workers exit as orphans within 3 s
    for name in TASKS:
        wait_for(lambda: tree.record_of(name).get("running") is not True, TTL + 2 - (time.monotonic() - killed),
                 f"{name}'s record to stop saying running within the ttl")
    for name in TASKS:
        assert tree.record_of(name) == {}, (name, tree.record_of(name))  # expired whole, not finished
    still_running(tree, ids)  # the containers run on, for the next supervisor

    again: HostTree = host_tree(after=tree)
    again.run_tree()
    again.wait_states({name: "running" for name in TASKS})
    adopted(again, ids)
    assert len(again.log_lines("adopting running container")) == 3
    for name in TASKS:
        first = seq_passes(again.url_of(name), 0, 10, f"a sample of {name} from the new tree")
        assert first > seen[name], f"{name}'s seq started again instead of going on"
        wait_for(lambda: again.record_of(name).get("metrics", {}).get("seq", 0) > seen[name], 10,
                 f"{name}'s seq going on in etcd")
        record = again.record_of(name)
        assert record["endpoint"]["url"] == again.url_of(name) and record["running"] is True
        if again.api == "v3":
            assert again.node(name).lease not in (None, leases[name])  # a new lease for the new tree
    assert again.served() == sorted(f"{again.service}/{name}" for name in TASKS)

    assert again.terminate() == 0
    for name in TASKS:
        assert again.state_of(name) == "stopped"
    assert again.containers() == []
    assert group_processes(again.proc.pid) == []
    assert "Traceback" not in again.output()
