"""The Docker engine restarts, for real (issue 4, item 7): a dockerd of our own is restarted or killed
under a running supervisor (never the shared engine), with and without live-restore."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from tests.support import DIES_ON_TERM, ENDS_ON_CUE, IMAGE
from tests.support.docker import docker, service_containers
from tests.support.leftovers import assert_nothing_left
from tests.support.metrics import seq_at, seq_passes
from tests.support.waiting import wait_for


class PrivateEngine:
    """A dockerd of our own (its own data, exec root and socket), so it can be restarted and killed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = f"unix://{root}/docker.sock"
        self.log = root / "dockerd.log"
        self.proc: Optional[subprocess.Popen] = None
        self.live_restore: Optional[bool] = None
        (root / "daemon.json").write_text("{}")  # not the host's /etc/docker/daemon.json

    def docker(self, *args: str) -> str:
        return docker("-H", self.host, *args)

    def answers(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"dockerd exited: {self.log.read_text()[-2000:]}")
        try:  # a starting dockerd may accept connections before it answers them
            return subprocess.run(["docker", "-H", self.host, "version"], capture_output=True, timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self, live_restore: bool) -> None:
        root = self.root
        (root / "docker.pid").unlink(missing_ok=True)  # a killed dockerd leaves it, and refuses to start then
        argv = ["dockerd", "--data-root", f"{root}/data", "--exec-root", f"{root}/exec", "--pidfile",
                f"{root}/docker.pid", "-H", self.host, "--config-file", f"{root}/daemon.json",
                "--bridge=none", "--iptables=false", "--ip-masq=false"] + (["--live-restore"] if live_restore else [])
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.live_restore = live_restore
        wait_for(self.answers, 60, "the private dockerd to answer", every=0.1)

    def containerd(self) -> List[int]:
        """The containerd this dockerd started (it outlives a killed dockerd for a moment)."""
        config = f"{self.root}/exec/containerd/containerd.toml".encode()
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if config in handle.read():
                        found.append(int(pid))
            except OSError:
                pass
        return found

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop dockerd and wait for its containerd to be gone, or a new dockerd finds it 'still running'."""
        containerd = self.containerd()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
            self.proc.wait(60)
        wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in containerd), 20, "containerd to exit")

    def ensure(self, live_restore: bool) -> None:
        if self.live_restore is not live_restore or self.proc is None or self.proc.poll() is not None:
            self.stop()
            self.start(live_restore)

    def containers(self, service: str) -> List[str]:
        return service_containers(service, self.host)

    def remove_containers(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq").split()
            if ids:
                self.docker("rm", "-f", *ids)

    def close(self) -> None:
        self.remove_containers()
        self.stop()
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.root))]
        for mount in sorted(mounts, reverse=True):  # dockerd bind-mounts its data root onto itself
            subprocess.run(["umount", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def engine(services: None) -> Iterator[PrivateEngine]:
    if shutil.which("dockerd") is None:
        pytest.skip("dockerd is not installed: cannot run a private engine")
    private = PrivateEngine(Path(tempfile.mkdtemp(prefix="hz-dockerd-", dir="/tmp")))
    try:
        try:
            private.start(live_restore=False)
        except (RuntimeError, AssertionError) as exc:
            pytest.skip(f"a private dockerd cannot start here: {str(exc)[-500:]}")
        saved = subprocess.run(["docker", "save", IMAGE], capture_output=True, check=True, timeout=60).stdout
        subprocess.run(["docker", "-H", private.host, "load", "-q"], input=saved, capture_output=True, check=True,
                       timeout=60)
        yield private
    finally:
        private.close()


@pytest.fixture
def private_engine(engine: PrivateEngine) -> Iterator[PrivateEngine]:
    yield engine
    engine.remove_containers()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_an_engine_restart_that_kills_the_task_is_a_failure_naming_the_engine(supervised, private_engine, how):
    private_engine.ensure(live_restore=False)
    run = supervised().main(DIES_ON_TERM, "--interval", "0.2", env={"DOCKER_HOST": private_engine.host})
    run.wait_state("running", 15)

    private_engine.stop(how)
    private_engine.start(live_restore=False)
    code = run.wait(60)
    status = run.record()["status"]
    assert status["state"] == "failed" and "Docker engine" in status["reason"], status
    assert code == status["exit_code"] != 0
    assert run.record()["running"] is False
    assert_nothing_left(run, lambda: private_engine.containers(run.service))


def test_with_live_restore_the_task_survives_an_engine_restart(supervised, private_engine):
    private_engine.ensure(live_restore=True)
    run = supervised().main(ENDS_ON_CUE.format(code=5), "--interval", "0.2", env={"DOCKER_HOST": private_engine.host})
    url = run.url()
    seq_passes(url, 0, 10, "a first sample")
    container = run.record()["info"]["container_id"]
    history = run.etcd.history(run.prefix)

    private_engine.stop()
    seq_passes(url, seq_at(url), 5, "sampling to go on without the engine")
    private_engine.start(live_restore=True)
    wait_for(lambda: "the Docker engine answers again" in run.output(), 10, "the supervisor to reconnect")
    seq_passes(url, (seq_at(url) or 0) + 2, 5, "sampling to go on after the engine's restart")
    history.stop()
    assert {s["state"] for s in history.values("status")} <= {"running"} and history.removals() == []
    assert private_engine.containers(run.service) == [container[:12]]
    assert run.proc.poll() is None

    private_engine.docker("exec", container, "touch", "/tmp/end")  # the task now ends by itself
    assert run.wait(20) == 5
    status = run.record()["status"]
    assert status["state"] == "failed" and status["reason"] == "exited with code 5", status  # not the engine's fault
    assert_nothing_left(run, lambda: private_engine.containers(run.service))
