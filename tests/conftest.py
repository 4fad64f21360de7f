"""Shared fixtures. Integration tests use the real Docker engine and a real etcd: the ``services``
fixture starts them (idempotently) through scripts/services.sh, like the README's commands do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "horizon-busybox:latest"
ETCD = "http://127.0.0.1:2379"
NAMESPACE = "/horizon-test"
# PID 1 in a container ignores SIGTERM unless it handles it: this task stops at once on it.
POLITE = "sh -c 'trap \"exit 0\" TERM; while true; do sleep 0.1; done'"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll until predicate() returns something truthy; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple:
    """(status, parsed JSON body); connection errors give (None, None)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, None


def etcd_get(key: str, base: str = ETCD) -> Optional[Dict[str, Any]]:
    """The v2 node at key (recursive), or None; ``base`` is the member asked (a private one in fault tests)."""
    status, body = http_get(f"{base}/v2/keys{key}?recursive=true")
    return body["node"] if status == 200 else None


def etcd_delete(key: str, base: str = ETCD) -> None:
    request = urllib.request.Request(f"{base}/v2/keys{key}?recursive=true&dir=true", method="DELETE")
    try:
        urllib.request.urlopen(request, timeout=5).close()
    except OSError:  # not there, or a private member stopped or mid-election: cleanup never fails on it
        pass


def task_keys(task: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The keys of a task directory node (from ``Supervised.task_dir``), JSON-decoded; {} for None."""
    if not task:
        return {}
    return {node["key"].rsplit("/", 1)[1]: json.loads(node["value"]) for node in task.get("nodes", [])}


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="session")
def services() -> None:
    subprocess.run(["bash", str(ROOT / "scripts/services.sh"), "up"], check=True, timeout=300)


class Supervised:
    """One supervisor run as a user would start it, in its own process group, with its own service."""

    def __init__(self, service: str, tmp_path: Path) -> None:
        self.service = service
        self.prefix = f"{NAMESPACE}/services/{service}"
        self.log_path = tmp_path / f"{service}-{uuid.uuid4().hex[:6]}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.etcd = ETCD  # the member record() reads; fault tests point it at a private one

    def start(self, argv: List[str]) -> "Supervised":
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def main(self, command: str, *flags: str, image: str = IMAGE) -> "Supervised":
        """``python main.py IMAGE COMMAND`` in the test namespace and this run's service."""
        return self.start(
            ["main.py", image, command, "--service", self.service, "--etcd-namespace", NAMESPACE, *flags]
        )

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log_path.read_text()

    def task_dir(self) -> Optional[Dict[str, Any]]:
        node = etcd_get(self.prefix, self.etcd)
        tasks = node.get("nodes", []) if node else []
        return tasks[0] if tasks else None

    def record(self) -> Dict[str, Any]:
        """The task's keys, JSON-decoded: {'status': {...}, 'running': True, ...} ({} when absent)."""
        return task_keys(self.task_dir())

    def state(self) -> Optional[str]:
        return self.record().get("status", {}).get("state")

    def url(self, timeout: float = 20) -> str:
        return wait_for(lambda: self.record().get("endpoint", {}).get("url"), timeout, "the endpoint in etcd")

    def workers(self) -> Dict[str, int]:
        """Worker role -> pid, from the process names the workers give themselves."""
        assert self.proc is not None
        found = {}
        for line in subprocess.run(["ps", "-o", "pid=,ppid=,comm=", "-e"], capture_output=True, text=True).stdout.splitlines():
            pid, ppid, comm = line.split(None, 2)
            if int(ppid) == self.proc.pid and comm.startswith("hz-"):
                found[comm[3:]] = int(pid)
        return found

    def all_workers(self) -> Optional[Dict[str, int]]:
        """The three workers from one look at the process table, or None while one is missing."""
        found = self.workers()
        return found if len(found) == 3 else None

    def containers(self) -> List[str]:
        return docker("ps", "-aq", "--filter", f"label=horizon.service={self.service}").split()

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.proc is not None:
            self.log.close()
        for container in self.containers():
            docker("rm", "-f", container)
        etcd_delete(self.prefix, self.etcd)


@pytest.fixture
def supervised(services: None, tmp_path: Path, request: pytest.FixtureRequest):
    """Factory of Supervised runs; every run's process group, containers and keys are removed afterwards."""
    runs: List[Supervised] = []

    def make(service: Optional[str] = None) -> Supervised:
        run = Supervised(service or f"t{uuid.uuid4().hex[:10]}", tmp_path)
        runs.append(run)
        return run

    yield make
    for run in runs:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(f"--- supervisor output ({run.service}) ---\n{run.output()}")
        run.cleanup()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
