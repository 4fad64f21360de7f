"""A task inside a host tree, seen and controlled through etcd, on both APIs (v3 on etcd 3.5; v2 on
etcd 3.4 with ``api = v2``): ``horizon pause|resume|stop SERVICE/TASK`` (the console script) reaches the
one task named and no other; and an etcd frozen under a tree (a private member, SIGSTOP then SIGCONT)
stalls no task's sampling or HTTP, nor a task added meanwhile, and every record comes back whole and
current once etcd answers again."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Dict, Optional

from tests.integration.test_cli import horizon
from tests.integration.test_etcd_faults import private_etcd  # noqa: F401 (fixture)
from tests.support.docker import docker, inspect
from tests.support.host import HostTree, host_tree, statuses  # noqa: F401 (fixture)
from tests.support.metrics import seq_at, seq_passes
from tests.support.net import http_get
from tests.support.waiting import wait_for

COUNTING = "sh -c 'trap \"exit 0\" TERM; i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done'"
KEYS = {"info", "endpoint", "metrics", "status", "running"}
PUBLISH_PERIOD = 0.2 * 5  # the tasks' interval times the default publish_every


def act(tree: HostTree, action: str, name: str, timeout: float = 30):
    return horizon(tree.etcd, action, f"{tree.service}/{name}", "--timeout", str(timeout), namespace=tree.namespace,
                   timeout=timeout + 30)


def paused(container: str) -> bool:
    return inspect(container, "{{.State.Paused}}") == "true"


def test_pause_resume_and_stop_reach_only_the_task_named(host_tree):
    tree: HostTree = host_tree()
    tree.host_ini()
    tree.task_ini("t1")
    tree.task_ini("t2")
    tree.task_ini("t3", COUNTING)
    tree.run_tree()
    tree.wait_states({"t1": "running", "t2": "running", "t3": "running"})
    ids = {name: tree.container_of(name) for name in ("t1", "t2", "t3")}
    base = tree.base()
    for name in ids:
        seq_passes(tree.url_of(name), 0, 10, f"a sample of {name}")
    history = tree.etcd.history(tree.prefix)

    # The fleet's view: each task's row points at its own place on the tree's endpoint, and its logs
    # are read from there.
    listed = horizon(tree.etcd, "ls", "--json", "--service", tree.service, namespace=tree.namespace)
    assert listed.returncode == 0, listed.stderr
    assert {row["task"]: row["endpoint"] for row in json.loads(listed.stdout)} == \
        {name: tree.url_of(name) for name in ("t1", "t2", "t3")}
    wait_for(lambda: len(horizon(tree.etcd, "logs", f"{tree.service}/t3", "--tail", "3",
                                 namespace=tree.namespace).stdout.splitlines()) == 3, 10, "three lines of t3's logs")
    logs = horizon(tree.etcd, "logs", f"{tree.service}/t3", "--tail", "3", namespace=tree.namespace)
    assert logs.returncode == 0 and logs.stderr == "" and re.fullmatch(r"(line \d+\n){3}", logs.stdout), (logs.stdout, logs.stderr)

    done = act(tree, "pause", "t1")
    assert done.returncode == 0 and done.stdout.startswith(f"{tree.service}/t1 paused ("), done.stdout + done.stderr
    assert tree.state_of("t1") == "paused" and paused(ids["t1"])
    assert [tree.state_of(n) for n in ("t2", "t3")] == ["running", "running"]
    assert not paused(ids["t2"]) and not paused(ids["t3"])
    status, health = http_get(f"{tree.url_of('t1')}/health")
    assert status == 503 and health["state"] == "paused", health
    assert http_get(f"{tree.url_of('t2')}/health")[0] == 200 and http_get(f"{tree.url_of('t3')}/health")[0] == 200
    status, host = http_get(f"{base}/health")
    assert status == 503 and host["healthy"] is False, host
    assert {path: h["healthy"] for path, h in host["tasks"].items()} == \
        {f"{tree.service}/t1": False, f"{tree.service}/t2": True, f"{tree.service}/t3": True}, host
    seq_passes(tree.url_of("t1"), seq_at(tree.url_of("t1")), 10, "t1 sampled on while paused")
    assert {row["task"]: row["state"] for row in http_get(f"{base}/tasks")[1]} == \
        {"t1": "paused", "t2": "running", "t3": "running"}

    done = act(tree, "resume", "t1")
    assert done.returncode == 0 and done.stdout.startswith(f"{tree.service}/t1 running ("), done.stdout + done.stderr
    assert not paused(ids["t1"])
    wait_for(lambda: http_get(f"{base}/health")[0] == 200, 10, "the host healthy again")

    done = act(tree, "stop", "t2")
    assert done.returncode == 0 and done.stdout.startswith(f"{tree.service}/t2 stopped ("), done.stdout + done.stderr
    record = tree.record_of("t2")
    assert (record["status"]["state"], record["status"]["exit_code"], record["running"]) == ("stopped", 0, False)
    wait_for(lambda: not docker("ps", "-aq", "--filter", f"id={ids['t2']}").strip(), 10, "t2's container removed")
    wait_for(lambda: tree.served() == [f"{tree.service}/t1", f"{tree.service}/t3"], 10, "t2 dropped from /tasks")
    assert http_get(f"{tree.url_of('t2')}/status")[0] == 404
    assert tree.proc.poll() is None  # the tree runs on: a stop ends the one task
    for name in ("t1", "t3"):
        assert tree.state_of(name) == "running" and tree.container_of(name) == ids[name]
        assert inspect(ids[name], "{{.State.Status}}") == "running"
    again = act(tree, "stop", "t2")
    assert again.returncode == 1 and "has ended" in again.stderr, again.stderr

    # A stopped task's file stays; a reload with it unchanged does not start it again.
    tree.reload()
    wait_for(lambda: len(tree.log_lines("SIGHUP: reading")) == 1, 10, "the reload")
    time.sleep(1.0)
    assert tree.state_of("t2") == "stopped" and tree.served() == [f"{tree.service}/t1", f"{tree.service}/t3"]

    history.stop()
    states = {name: [s["state"] for s in statuses(history, tree.key(name))] for name in ("t1", "t2", "t3")}
    assert set(states["t3"]) <= {"running"}, states  # never touched
    assert "paused" in states["t1"] and states["t1"][-1] == "running" and "stopped" not in states["t1"], states
    assert "paused" not in states["t2"] and states["t2"][-1] == "stopped", states

    assert tree.terminate() == 0
    assert tree.state_of("t1") == "stopped" and tree.state_of("t3") == "stopped"
    assert tree.containers() == []
    assert "Traceback" not in tree.output()


def current(tree: HostTree, name: str) -> Optional[Dict[str, Any]]:
    """The task's record when whole, with its TTL (v3: every key on one live lease), running, and its
    metrics within 3 publish periods of the endpoint's; else None."""
    node = tree.node(name)
    if not node or set(node.keys) != KEYS or not node.ttl or (tree.api == "v3" and node.lease is None):
        return None
    record = node.keys
    if record["status"]["state"] != "running" or record["running"] is not True:
        return None
    seq = tree.seq_of(name)
    return record if seq is not None and seq - record["metrics"]["seq"] <= 15 else None


def test_a_frozen_etcd_stalls_no_task_of_the_tree_and_every_record_comes_back(private_etcd, host_tree):
    freeze = 8.0
    etcd = private_etcd()
    member = etcd.members[0]
    tree: HostTree = host_tree(etcd=etcd.client())
    tree.host_ini()
    tree.task_ini("a")
    tree.task_ini("b")
    tree.run_tree()
    for name in ("a", "b"):
        wait_for(lambda: current(tree, name), 30, f"{name}'s whole record in etcd")

    polls = []  # (task, status, seq) of every GET /metrics during the freeze
    frozen_at = time.time()
    member.freeze()
    try:
        tree.task_ini("c")  # a task added while etcd answers nothing starts and is served all the same
        tree.reload()
        until = time.monotonic() + freeze
        while time.monotonic() < until:
            for name in ("a", "b", "c"):
                code, body = http_get(f"{tree.url_of(name)}/metrics", timeout=5)
                polls.append((name, code, (body or {}).get("seq")))
            time.sleep(0.1)
        host_status, host_metrics = http_get(f"{tree.base()}/metrics")
    finally:
        member.thaw()

    for name in ("a", "b"):
        mine = [(code, seq) for task, code, seq in polls if task == name]
        assert mine and all(code == 200 for code, _ in mine), (name, mine)
        seqs = [seq for _, seq in mine]
        assert seqs == sorted(seqs) and seqs[-1] - seqs[0] >= 0.7 * (freeze - 1) / 0.2, (name, seqs[0], seqs[-1])
    late = [seq for task, code, seq in polls if task == "c" and code == 200]
    assert late and late[-1] > late[0], "the task added during the freeze is not sampled"
    assert host_status == 200 and {m["task"] for m in host_metrics["tasks"]} == {"a", "b", "c"}

    def back(name: str) -> Optional[Dict[str, Any]]:
        """The record current again, with its gap for a task that ran through the freeze. On v2 the record's
        keys are written one by one (metrics before status): a read in between sees the old status."""
        record = current(tree, name)
        return record if record and (name == "c" or "last_gap" in record["status"]) else None

    records = {name: wait_for(lambda: back(name), 2 * PUBLISH_PERIOD + 10, f"{name}'s record back")
               for name in ("a", "b", "c")}
    for name in ("a", "b"):
        gap = records[name]["status"].get("last_gap")
        assert gap and gap["samples"] > 0.5 * freeze / 0.2, (name, gap)
        assert frozen_at - 2.5 < gap["from"] < gap["to"], (name, gap)
    assert records["c"]["endpoint"]["url"] == tree.url_of("c")
    assert "etcd does not answer" in tree.output()
    # logged just after the write that found etcd back, so maybe after the record was read back
    wait_for(lambda: "etcd answers again" in tree.output(), 10, "the line saying etcd answers again")

    assert tree.terminate() == 0
    for name in ("a", "b", "c"):
        assert tree.state_of(name) == "stopped"
    assert tree.containers() == []
