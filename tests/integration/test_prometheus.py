"""A real Prometheus (Debian's, a private instance on loopback) discovers live tasks through
``horizon sd`` (http_sd, and file_sd once), scrapes their endpoints, and PromQL over its HTTP API returns
each task's CPU counter, increasing; a task that ends leaves the target list; a host tree's tasks are
scraped at their paths, or the tree once. On both etcd APIs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests.support.host import HostTree, host_tree  # noqa: F401 (fixture)
from tests.support.net import free_port, http_get
from tests.support.supervisor import Supervisor
from tests.support.waiting import wait_for
from tests.integration.test_cli import HORIZON

BUSY = "sh -c 'trap \"exit 0\" TERM; while true; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.05; done'"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """Start Prometheus with a config (written by the test through ``start(sd_url)``); stop it after."""
    procs: List[subprocess.Popen] = []

    def start(sd_url: str) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: horizon\n"
            "    honor_labels: true\n"
            "    scrape_interval: 1s\n"
            f"    http_sd_configs: [{{url: '{sd_url}', refresh_interval: 1s}}]\n"
        )
        checked = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        log = open(tmp_path / "prometheus.log", "w")
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(f"{base}/-/ready")[0] == 200, 30, "Prometheus to be ready")
        return base

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(20)


def task_of(run: Supervisor) -> str:
    """The task name the supervisor gave itself (the two runs share a service, so etcd cannot say which)."""
    return re.search(rf"task {run.service}/(\S+):", run.output()).group(1)


def query(base: str, promql: str) -> List[Dict[str, Any]]:
    status, body = http_get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert status == 200 and body["status"] == "success", body
    return body["data"]["result"]


def cpu_by_task(base: str, service: str) -> Dict[str, float]:
    return {r["metric"]["task"]: float(r["value"][1])
            for r in query(base, f'container_cpu_usage_seconds_total{{service="{service}"}}')}


def active_tasks(base: str, service: str) -> List[str]:
    status, body = http_get(f"{base}/api/v1/targets?state=active")
    return sorted(t["labels"].get("task", "") for t in body["data"]["activeTargets"]
                  if t["labels"].get("service") == service and t["health"] == "up")


def test_prometheus_discovers_scrapes_and_forgets_tasks_through_horizon_sd(supervised, prometheus, tmp_path):
    first = supervised()
    service = first.service
    second = supervised(service)
    for run in (first, second):
        run.main(BUSY, "--interval", "0.5")
    for run in (first, second):
        run.wait_state("running", 30, "both tasks running")
    tasks = sorted(task_of(run) for run in (first, second))

    sd_port = free_port()
    sd = subprocess.Popen([str(HORIZON), "sd", "--listen", f"127.0.0.1:{sd_port}", "--api", first.api,
                           "--etcd", first.etcd.address, "--namespace", first.namespace],
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        sd_url = f"http://127.0.0.1:{sd_port}/"
        groups = wait_for(lambda: [g for g in (http_get(sd_url)[1] or []) if g["labels"]["service"] == service], 20,
                          "both tasks in horizon sd's list")
        wait_for(lambda: len([g for g in http_get(sd_url)[1] if g["labels"]["service"] == service]) == 2, 20,
                 "both tasks in the list")
        assert all(g["targets"][0].startswith("127.0.0.1:") for g in groups)

        file_sd = tmp_path / "targets.json"
        done = subprocess.run([str(HORIZON), "sd", "--file", str(file_sd), "--once", "--api", first.api,
                               "--etcd", first.etcd.address, "--namespace", first.namespace],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert sorted(g["labels"]["task"] for g in json.loads(file_sd.read_text())
                      if g["labels"]["service"] == service) == tasks

        base = prometheus(sd_url)
        before = wait_for(lambda: (lambda found: found if sorted(found) == tasks else None)(cpu_by_task(base, service)),
                          40, "both tasks' CPU counters in Prometheus")
        wait_for(lambda: all(cpu_by_task(base, service).get(t, 0) > before[t] for t in tasks), 30,
                 "the CPU counters to increase")
        series = query(base, f'container_cpu_usage_seconds_total{{service="{service}"}}')
        assert all("exported_task" not in s["metric"] and s["metric"]["job"] == "horizon" for s in series)

        os.kill(first.proc.pid, signal.SIGTERM)  # the first task ends: it leaves the target list
        assert first.wait(30) == 0
        gone = task_of(first)
        wait_for(lambda: gone not in [g["labels"]["task"] for g in http_get(sd_url)[1]], 20, "the ended task to leave sd")
        wait_for(lambda: gone not in active_tasks(base, service), 30, "the ended task to leave Prometheus' targets")
        assert active_tasks(base, service) == [t for t in tasks if t != gone]
    finally:
        sd.terminate()
        _, errors = sd.communicate(timeout=20)
    assert "Traceback" not in errors, errors


@pytest.mark.parametrize("targets", ["task", "host"])
def test_prometheus_scrapes_a_host_trees_tasks_at_their_paths_or_the_host_once(host_tree, prometheus, targets):
    """``horizon sd`` hands out each task of a host tree with its ``__metrics_path__``, or with ``--targets
    host`` the tree's endpoint once: Prometheus has every task's series either way."""
    tree: HostTree = host_tree()
    tree.host_ini()
    for name in ("a", "b"):
        tree.task_ini(name, command=BUSY)
    tree.run_tree()
    tree.wait_states({"a": "running", "b": "running"})
    sd_port = free_port()
    sd = subprocess.Popen([str(HORIZON), "sd", "--listen", f"127.0.0.1:{sd_port}", "--targets", targets,
                           "--api", tree.api, "--etcd", tree.etcd.address, "--namespace", tree.namespace],
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        sd_url = f"http://127.0.0.1:{sd_port}/"
        port = tree.base().rsplit(":", 1)[1]
        if targets == "task":
            expected = sorted([f"/tasks/{tree.service}/a/metrics", f"/tasks/{tree.service}/b/metrics"])
            found = wait_for(lambda: sorted(g["labels"].get("__metrics_path__", "") for g in http_get(sd_url)[1] or []
                                            if g["labels"].get("service") == tree.service) == expected or None,
                             20, "both tasks in horizon sd's list with their paths")
            assert found
        else:
            wait_for(lambda: any(g["targets"] == [f"127.0.0.1:{port}"] for g in http_get(sd_url)[1] or []), 20,
                     "the tree's endpoint in horizon sd's list")
            groups = [g for g in http_get(sd_url)[1] if g["targets"] == [f"127.0.0.1:{port}"]]
            assert groups == [{"targets": [f"127.0.0.1:{port}"], "labels": {}}]  # once, for both tasks
        base = prometheus(sd_url)
        before = wait_for(lambda: (lambda f: f if sorted(f) == ["a", "b"] else None)(cpu_by_task(base, tree.service)),
                          40, "both tasks' CPU counters in Prometheus")
        wait_for(lambda: all(cpu_by_task(base, tree.service).get(t, 0) > before[t] for t in ("a", "b")), 30,
                 "the CPU counters to increase")
        status, body = http_get(f"{base}/api/v1/targets?state=active")
        scraped = sorted(t["scrapeUrl"] for t in body["data"]["activeTargets"] if f":{port}/" in t["scrapeUrl"])
        assert scraped == ([f"http://127.0.0.1:{port}{path}" for path in expected] if targets == "task"
                           else [f"http://127.0.0.1:{port}/metrics"])
    finally:
        sd.terminate()
        _, errors = sd.communicate(timeout=20)
    assert "Traceback" not in errors, errors
