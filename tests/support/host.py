"""A host tree as a user runs it: a directory of task files (and its ``horizon.ini``) under
``python -m supervisor DIR``, one parent and three workers serving every task at
``/tasks/SERVICE/TASK`` of one endpoint.

``HostTree`` is a ``Supervisor`` (the same process group, workers, log and cleanup) that writes its
directory, starts on it, reloads it (SIGHUP) and reads each task: its record in etcd, its place on the
endpoint, its container. Its tasks are in services of its own (``service``, and any other a task file
names), so that a tree never sees another test's tasks; ``cleanup`` removes every one of them.
``host_tree`` is the pytest fixture that makes them (import it into a test module to use it)."""

from __future__ import annotations

import glob
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from supervisor.lock import lock_dir
from tests.support import IMAGE, NAMESPACE, POLITE, ROOT
from tests.support.docker import docker
from tests.support.etcd import Etcd, History, TaskNode, task_keys
from tests.support.leftovers import group_processes
from tests.support.metrics import seq_at
from tests.support.net import http_get
from tests.support.supervisor import Supervisor
from tests.support.waiting import wait_for

INTERVAL = 0.2  # the tasks' sampling interval unless a test says otherwise


class HostTree(Supervisor):
    """One ``python -m supervisor DIR`` run on ``api``, in the test namespace; ``directory`` holds its files."""

    def __init__(self, directory: Path, log_path: Path, api: str = "v3", namespace: str = NAMESPACE,
                 etcd: Optional[Etcd] = None, service: Optional[str] = None) -> None:
        super().__init__(service or f"h{uuid.uuid4().hex[:10]}", log_path, namespace, etcd, api=api)
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.services = {self.service}
        self._base: Optional[str] = None

    # -- the directory ----------------------------------------------------------------------------

    def host_ini(self, ttl: int = 15, etcd: str = "", endpoint: str = "", host: str = "") -> Path:
        """``horizon.ini``: [etcd] on the run's API and member, in its namespace, with ``ttl``, then the
        lines ``etcd``; [endpoint] on loopback at port 0 unless the lines ``endpoint`` say otherwise;
        [host] with the lines ``host``."""
        path = self.directory / "horizon.ini"
        endpoint = endpoint or "host = 127.0.0.1\nport = 0\n"
        path.write_text(
            f"[etcd]\napi = {self.api}\nhosts = {self.etcd.address}\nnamespace = {self.namespace}\nttl = {ttl}\n{etcd}"
            f"[endpoint]\n{endpoint}[host]\n{host}"
        )
        return path

    def task_ini(self, name: str, command: str = POLITE, task: str = "", metrics: str = "",
                 service: Optional[str] = None, file: Optional[str] = None, interval: float = INTERVAL) -> Path:
        """``DIR/FILE.ini`` (``name`` unless ``file`` is given): [task] image, command, service, name, then
        the lines ``task``; [metrics] interval, then the lines ``metrics``."""
        service = service or self.service
        self.services.add(service)
        path = self.directory / f"{file or name}.ini"
        path.write_text(f"[task]\nimage = {IMAGE}\ncommand = {command}\nservice = {service}\nname = {name}\n{task}"
                        f"[metrics]\ninterval = {interval}\n{metrics}")
        return path

    # -- the run ----------------------------------------------------------------------------------

    def run_tree(self, *flags: str) -> "HostTree":
        """``python -m supervisor DIR``."""
        return self.ini(self.directory, *flags)

    def check(self) -> subprocess.CompletedProcess:
        """``python -m supervisor --check DIR``."""
        return subprocess.run([sys.executable, "-m", "supervisor", "--check", str(self.directory)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    def reload(self) -> None:
        """SIGHUP to the parent, as ``systemctl reload`` sends it."""
        assert self.proc is not None and self.proc.poll() is None, "the tree is not running"
        os.kill(self.proc.pid, signal.SIGHUP)

    def terminate(self, timeout: float = 40) -> int:
        """SIGTERM to the parent; its exit status."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)
        return self.wait(timeout)

    def log_lines(self, *words: str) -> List[str]:
        """The lines of the output holding every one of ``words``."""
        return [line for line in self.output().splitlines() if all(word in line for word in words)]

    def base(self, timeout: float = 30) -> str:
        """``http://HOST:PORT`` of the tree's endpoint, as its log names it."""
        if self._base is None:
            found = wait_for(lambda: re.search(r"endpoint (http://[^/\s]+)", self.output()), timeout,
                             "the tree's endpoint in its log")
            self._base = found.group(1)
        return self._base

    def key(self, name: str, service: Optional[str] = None) -> str:
        """The task's place in etcd: {namespace}/services/SERVICE/TASK."""
        return f"{self.namespace}/services/{service or self.service}/{name}"

    def url_of(self, name: str, service: Optional[str] = None) -> str:
        """Where the tree's endpoint serves the task: BASE/tasks/SERVICE/TASK."""
        return f"{self.base()}/tasks/{service or self.service}/{name}"

    def node(self, name: str, service: Optional[str] = None) -> Optional[TaskNode]:
        return self.etcd.task(self.key(name, service))

    def record_of(self, name: str, service: Optional[str] = None) -> Dict[str, Any]:
        """The task's keys, JSON-decoded ({} when absent)."""
        return task_keys(self.node(name, service))

    def state_of(self, name: str, service: Optional[str] = None) -> Optional[str]:
        return self.record_of(name, service).get("status", {}).get("state")

    def wait_states(self, states: Dict[str, str], timeout: float = 30) -> None:
        """Every task named (in the tree's service) shows its state in etcd."""
        wait_for(lambda: all(self.state_of(name) == state for name, state in states.items()), timeout,
                 f"states {states} in etcd")

    def container_of(self, name: str, service: Optional[str] = None) -> Optional[str]:
        """The full id of the task's container as etcd's record names it (None before it has one)."""
        info = self.record_of(name, service).get("info") or {}
        return info.get("container_id")

    def seq_of(self, name: str, service: Optional[str] = None) -> Optional[int]:
        """The task's latest sample at the endpoint (None while it does not answer 200)."""
        return seq_at(self.url_of(name, service))

    def served(self) -> List[str]:
        """SERVICE/TASK of every task the endpoint's GET /tasks lists."""
        code, body = http_get(f"{self.base()}/tasks")
        assert code == 200, (code, body)
        return sorted(f"{row['service']}/{row['task']}" for row in body)

    def containers(self) -> List[str]:
        """Short ids of every container of the tree's services."""
        return [c for service in sorted(self.services) for c in
                docker("ps", "-aq", "--filter", f"label=horizon.service={service}").split()]

    def running_containers(self) -> List[str]:
        return [c for service in sorted(self.services) for c in
                docker("ps", "-q", "--filter", f"label=horizon.service={service}").split()]

    def cleanup(self, grace: float = 0) -> None:
        """The process group, every container and key of the tree's services, and what a killed tree
        leaves in the run directory (locks, seq files)."""
        super().cleanup(grace)
        for service in self.services - {self.service}:
            for container in docker("ps", "-aq", "--filter", f"label=horizon.service={service}").split():
                docker("rm", "-f", container)
            self.etcd.delete(f"{self.namespace}/services/{service}")
            self.etcd.delete(f"{self.namespace}/control/{service}")
        for service in self.services:
            for leftover in glob.glob(os.path.join(lock_dir(), f"{glob.escape(service)}.*")):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass


def text_get(url: str, accept: Optional[str] = None, timeout: float = 5) -> Tuple[Optional[int], str, str]:
    """(status, Content-Type, body as text) of a GET (a page, a Prometheus exposition); (None, "", "") when
    nothing answers."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return None, "", ""


def kill_parent(tree: HostTree, within: float = 3) -> None:
    """SIGKILL the tree's parent: every worker leaves by itself within ``within`` s."""
    assert tree.proc is not None
    tree.wait_workers()
    os.kill(tree.proc.pid, signal.SIGKILL)
    tree.proc.wait(5)
    wait_for(lambda: group_processes(tree.proc.pid) == [], within, "every worker to exit after the parent's death")


def statuses(history: History, key: str) -> List[Dict[str, Any]]:
    """The status documents written for the task at ``key`` ({namespace}/services/SERVICE/TASK), in order."""
    return [json.loads(c.value) for c in history.events if c.key == f"{key}/status" and c.value is not None]


def metrics_seqs(history: History, key: str) -> List[int]:
    return [json.loads(c.value)["seq"] for c in history.events if c.key == f"{key}/metrics" and c.value is not None]


def removals(history: History, key: str) -> List[str]:
    """Every removal of the task's record or of a key of it."""
    return [r for r in history.removals() if r.split(" ", 1)[1] == key or r.split(" ", 1)[1].startswith(f"{key}/")]


@pytest.fixture
def host_tree(services: None, tmp_path: Path, request: pytest.FixtureRequest, etcd_api: str
              ) -> Iterator[Callable[..., HostTree]]:
    """Factory of host trees on ``etcd_api`` (``etcd=`` another member of that API, e.g. a private one),
    each in a directory of its own, or with ``after=`` an earlier tree, on that tree's directory, services
    and etcd (the next supervisor of the same files); every tree is killed and its containers and keys
    removed afterwards, its output shown on failure."""
    trees: List[HostTree] = []

    def make(etcd: Optional[Etcd] = None, after: Optional[HostTree] = None) -> HostTree:
        n = len(trees)
        if after is not None:
            tree = HostTree(after.directory, tmp_path / f"tree{n}.log", api=after.api, etcd=after.etcd,
                            service=after.service)
            tree.services = set(after.services)
        else:
            tree = HostTree(tmp_path / f"tasks{n}.d", tmp_path / f"tree{n}.log", api=etcd_api, etcd=etcd)
        trees.append(tree)
        return tree

    yield make
    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
    for tree in trees:
        if failed and tree.proc is not None:
            print(f"--- host tree output ({tree.directory}) ---\n{tree.output()}")
        tree.cleanup()

