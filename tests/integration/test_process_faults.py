"""Fault injection on real processes and a real Docker engine (issue 4, items 5-9).

Every fault is real: SIGKILL to a worker or to the supervisor, a restarted Docker engine (a private one,
never the shared engine), a task that cannot start or keeps failing, stop signals during the start.
What etcd held during a fault is read back from etcd's own change history (a v2 watch kept open by a
thread), so a state that lasted a millisecond is seen as surely as one that lasted a minute.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from supervisor.lock import lock_dir
from tests.support import IMAGE, NAMESPACE, POLITE
from tests.support.docker import docker
from tests.support.etcd import EtcdV2
from tests.support.net import http_get
from tests.support.waiting import wait_for

ETCD = EtcdV2().base

# PID 1 in a container ignores signals it does not handle: these tasks say how they end.
DIES_ON_TERM = "sh -c 'trap \"exit 143\" TERM; while true; do sleep 0.1; done'"
ENDS_ON_CUE = "sh -c 'trap \"exit 143\" TERM; while [ ! -e /tmp/end ]; do sleep 0.1; done; exit {code}'"
SHM_NAMES = ("psm_", "horizon")  # what multiprocessing.shared_memory (or a named segment of ours) would leave


# -- observing ------------------------------------------------------------------------------------


def etcd_index() -> int:
    with urllib.request.urlopen(f"{ETCD}/v2/keys/", timeout=5) as response:
        return int(response.headers["X-Etcd-Index"])


class EtcdHistory:
    """Every change etcd makes under ``prefix`` from now on: a long-polling v2 watch on its own thread."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events: List[Dict[str, Any]] = []
        self.error: Optional[str] = None
        self._index = etcd_index() + 1
        self._quiet_since = 0.0  # start of the latest poll that found nothing new: all was read by then
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.is_set():
            url = f"{ETCD}/v2/keys{self.prefix}?wait=true&recursive=true&waitIndex={self._index}"
            asked = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=0.5) as response:
                    event = json.loads(response.read())
            except urllib.error.HTTPError as exc:
                self.error = exc.read().decode(errors="replace")  # e.g. the history moved past our index
                return
            except (TimeoutError, urllib.error.URLError, ConnectionError):
                self._quiet_since = asked  # etcd answers at once when it holds a change past our index
                continue
            self.events.append(event)
            self._index = event["node"]["modifiedIndex"] + 1

    def stop(self) -> "EtcdHistory":
        """Catch up to etcd's present, then stop watching."""
        now = time.monotonic()
        wait_for(lambda: self.error or self._quiet_since > now, 10, "etcd's history to be read up to now")
        self._done.set()
        self._thread.join(5)
        assert self.error is None, f"lost etcd's history: {self.error}"
        return self

    def values(self, name: str) -> List[Any]:
        """The values written to the record's key ``name``, in order."""
        return [json.loads(e["node"]["value"]) for e in self.events
                if e["node"]["key"].endswith(f"/{name}") and "value" in e["node"]]

    def removals(self) -> List[str]:
        return [f"{e['action']} {e['node']['key']}" for e in self.events if e["action"] in ("delete", "expire")]


def group_processes(pgid: int) -> List[int]:
    """Live processes in a process group (the supervisor's, since it leads its own session)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


def sigterm_in(pid: int, mask: str) -> bool:
    """Whether SIGTERM is in a signal mask of /proc/PID/status: SigBlk (blocked), SigCgt (handled)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            bits = next(line for line in handle if line.startswith(f"{mask}:")).split()[1]
    except (OSError, StopIteration):
        return False
    return bool(int(bits, 16) & 1 << (signal.SIGTERM - 1))


def shm_entries() -> set:
    return {name for name in os.listdir("/dev/shm") if name.startswith(SHM_NAMES)}


def container_actions(service: str, since: float, until: float) -> List[str]:
    """What the engine did to the service's containers between two moments (create, start, die, ...)."""
    out = docker("events", "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--filter", "type=container",
                 "--filter", f"label=horizon.service={service}", "--format", "{{.Action}}")
    return [action for action in out.split() if not action.startswith("exec_")]


def inspect(container: str, template: str) -> str:
    return docker("inspect", "-f", template, container).strip()


def seq_at(url: str) -> int:
    code, body = http_get(f"{url}/metrics", timeout=2)
    return body["seq"] if code == 200 else 0


def seq_passes(url: str, seq: int, timeout: float, what: str) -> int:
    """Wait for a sample numbered above ``seq`` at the endpoint; return its seq."""
    return wait_for(lambda: (lambda now: now if now > seq else 0)(seq_at(url)), timeout, what)


def three_workers(run: Any) -> Dict[str, int]:
    return wait_for(run.all_workers, 5, "three workers")


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def engine_time_of(value: str) -> float:
    """The engine's nanosecond timestamp, as a float (Python parses at most microseconds)."""
    head, _, rest = value.rstrip("Z").partition(".")
    return parse_time(f"{head}.{rest[:6].ljust(6, '0')}Z")


def write_ini(path: Path, service: str, command: str, ttl: int = 3, interval: float = 0.2, **task: Any) -> Path:
    more = "".join(f"{key} = {value}\n" for key, value in task.items())
    path.write_text(
        f"[task]\nimage = {IMAGE}\ncommand = {command}\nservice = {service}\n{more}"
        f"[etcd]\nnamespace = {NAMESPACE}\nttl = {ttl}\n[metrics]\ninterval = {interval}\n"
    )
    return path


def with_env(name: str, value: str, start: Callable[[], Any]) -> Any:
    """Start a supervisor with one more environment variable (it inherits ours)."""
    os.environ[name] = value
    try:
        return start()
    finally:
        del os.environ[name]


def assert_nothing_left(run: Any, containers: Callable[[], List[str]]) -> None:
    """After a supervisor's own end: no container, no process, no lock or seq file, no traceback."""
    assert containers() == []
    assert group_processes(run.proc.pid) == []
    assert glob.glob(os.path.join(lock_dir(), f"{run.service}.*")) == []
    assert "Traceback" not in run.output()


# -- 5. a killed worker ---------------------------------------------------------------------------


def test_each_killed_worker_is_back_at_once_and_etcd_never_says_the_task_stopped(supervised):
    run = supervised().main(POLITE, "--interval", "0.2")
    url = run.url()
    seq_passes(url, 0, 10, "a first sample")
    container_id = run.record()["info"]["container_id"]
    history = EtcdHistory(run.prefix)
    since = time.time()

    for role in ("container", "publisher", "endpoint"):
        before = three_workers(run)
        killed = time.monotonic()
        os.kill(before[role], signal.SIGKILL)
        wait_for(lambda: before[role] != run.workers().get(role, before[role]), 5, f"a new {role} worker")
        assert time.monotonic() - killed < 4, f"the {role} worker took too long to come back"  # 0.1 s backoff
        seq_passes(url, seq_at(url), 5, f"samples at the same port after the {role} worker's restart")

    until = time.time()
    history.stop()
    statuses = history.values("status")
    assert statuses and {s["state"] for s in statuses} == {"running"}, statuses
    assert set(history.values("running")) <= {True} and history.removals() == []
    assert all(s.get("restarts", 0) == 0 for s in statuses)
    assert run.record()["endpoint"]["url"] == url and run.state() == "running"
    assert run.containers() == [container_id[:12]]
    assert container_actions(run.service, since, until) == []  # never stopped, started or re-created
    assert run.proc.poll() is None
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(20) == 0
    assert_nothing_left(run, run.containers)


# -- 6. a killed supervisor -----------------------------------------------------------------------


def kill_supervisor(run: Any) -> None:
    """SIGKILL the parent: every worker exits by itself and nothing stays in /dev/shm."""
    three_workers(run)
    shm_before = shm_entries()
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(5)
    wait_for(lambda: group_processes(run.proc.pid) == [], 2.5, "every worker to exit after the parent's death")
    assert shm_entries() - shm_before == set()


def running_lapses(run: Any, ttl: int) -> None:
    wait_for(lambda: run.record().get("running") is not True, ttl + 2, "etcd to stop saying 'running'")


def test_a_restarted_supervisor_adopts_the_running_container_and_seq_goes_on(supervised, tmp_path):
    run = supervised()
    ini = write_ini(tmp_path / "adopt.ini", run.service, POLITE)
    since = time.time()
    run.start(["-m", "supervisor", str(ini)])
    url = run.url()
    seq_passes(url, 2, 10, "a few samples")
    info = run.record()["info"]
    seen = seq_at(url)
    kill_supervisor(run)
    running_lapses(run, ttl=3)
    assert inspect(info["container_id"], "{{.State.Status}}") == "running"  # left for the next supervisor

    again = supervised(run.service).start(["-m", "supervisor", str(ini)])
    url = again.url()
    wait_for(lambda: again.state() == "running", 10, "state running again")
    record = again.record()
    assert (record["info"]["task"], record["info"]["container_id"]) == (info["task"], info["container_id"])
    first = seq_passes(url, 0, 10, "a sample from the new supervisor")
    assert first > seen, "seq started again instead of going on"
    wait_for(lambda: again.record().get("metrics", {}).get("seq", 0) > seen, 5, "seq going on in etcd")
    assert "adopting running container" in again.output()
    assert again.containers() == [info["container_id"][:12]]
    assert container_actions(run.service, since, time.time()).count("create") == 1

    os.kill(again.proc.pid, signal.SIGTERM)
    assert again.wait(20) == 0
    assert again.state() == "stopped"
    assert_nothing_left(again, again.containers)


def test_a_task_that_ended_unwatched_is_recorded_by_the_next_supervisor(supervised, tmp_path):
    run = supervised()
    ini = write_ini(tmp_path / "ended.ini", run.service, ENDS_ON_CUE.format(code=3))
    run.start(["-m", "supervisor", str(ini)])
    wait_for(lambda: run.state() == "running", 15, "state running")
    container = run.record()["info"]["container_id"]
    kill_supervisor(run)
    docker("exec", container, "touch", "/tmp/end")
    wait_for(lambda: inspect(container, "{{.State.Status}}") == "exited", 10, "the task to end unwatched")
    running_lapses(run, ttl=3)  # some time passes before the next supervisor comes
    ended = json.loads(inspect(container, "{{json .State}}"))
    assert ended["ExitCode"] == 3

    again = supervised(run.service).start(["-m", "supervisor", str(ini)])
    assert again.wait(30) == 3
    record = again.record()
    status = record["status"]
    assert status["state"] == "failed" and status["exit_code"] == 3 and "3" in status["reason"]
    assert abs(parse_time(status["finished_at"]) - engine_time_of(ended["FinishedAt"])) < 0.002
    assert abs(parse_time(status["started_at"]) - engine_time_of(ended["StartedAt"])) < 0.002
    assert parse_time(status["updated_at"]) - parse_time(status["finished_at"]) > 1  # not the restart's time
    assert record["running"] is False and record["info"]["container_id"] == container
    assert "ended while no worker watched it" in again.output()
    assert_nothing_left(again, again.containers)


def test_a_task_that_failed_unwatched_meets_its_restart_policy(supervised, tmp_path):
    run = supervised()
    ini = write_ini(tmp_path / "policy.ini", run.service, ENDS_ON_CUE.format(code=3), restart="on-failure",
                    max_restarts=1, restart_delay=0.2)
    run.start(["-m", "supervisor", str(ini)])
    wait_for(lambda: run.state() == "running", 15, "state running")
    container = run.record()["info"]["container_id"]
    kill_supervisor(run)
    docker("exec", container, "touch", "/tmp/end")  # /tmp/end stays: every later start ends at once
    wait_for(lambda: inspect(container, "{{.State.Status}}") == "exited", 10, "the task to end unwatched")

    history = EtcdHistory(run.prefix)
    again = supervised(run.service).start(["-m", "supervisor", str(ini)])
    assert again.wait(30) == 3
    history.stop()
    assert [s["restarts"] for s in history.values("status") if s["state"] == "restarting"] == [0]
    status = again.record()["status"]
    assert status["state"] == "failed" and status["reason"] == "gave up after 1 restarts: exited with code 3"
    assert_nothing_left(again, again.containers)


@pytest.mark.parametrize("command", ["sleep 600", POLITE], ids=["still-stopping", "stopped-already"])
def test_a_container_worker_killed_while_stopping_the_task_still_ends_in_a_clean_stop(supervised, command):
    run = supervised().main(command, "--stop-timeout", "2")  # sleep as PID 1 ignores SIGTERM: a 2 s stop
    wait_for(lambda: run.state() == "running", 15, "state running")
    worker = wait_for(lambda: run.workers().get("container"), 5, "the container worker")
    os.kill(run.proc.pid, signal.SIGTERM)
    wait_for(lambda: "stopping container" in run.output(), 5, "the stop to begin")
    os.kill(worker, signal.SIGKILL)
    assert run.wait(30) == 0
    status = run.record()["status"]
    assert status["state"] == "stopped", status
    assert_nothing_left(run, run.containers)


# -- 7. the Docker engine restarts ----------------------------------------------------------------


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
        return self.docker("ps", "-aq", "--filter", f"label=horizon.service={service}").split()

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
    run = supervised()
    with_env("DOCKER_HOST", private_engine.host, lambda: run.main(DIES_ON_TERM, "--interval", "0.2"))
    wait_for(lambda: run.state() == "running", 15, "state running")

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
    run = supervised()
    with_env("DOCKER_HOST", private_engine.host, lambda: run.main(ENDS_ON_CUE.format(code=5), "--interval", "0.2"))
    url = run.url()
    seq_passes(url, 0, 10, "a first sample")
    container = run.record()["info"]["container_id"]
    history = EtcdHistory(run.prefix)

    private_engine.stop()
    seq_passes(url, seq_at(url), 5, "sampling to go on without the engine")
    private_engine.start(live_restore=True)
    wait_for(lambda: "the Docker engine answers again" in run.output(), 10, "the supervisor to reconnect")
    seq_passes(url, seq_at(url) + 2, 5, "sampling to go on after the engine's restart")
    history.stop()
    assert {s["state"] for s in history.values("status")} <= {"running"} and history.removals() == []
    assert private_engine.containers(run.service) == [container[:12]]
    assert run.proc.poll() is None

    private_engine.docker("exec", container, "touch", "/tmp/end")  # the task now ends by itself
    assert run.wait(20) == 5
    status = run.record()["status"]
    assert status["state"] == "failed" and status["reason"] == "exited with code 5", status  # not the engine's fault
    assert_nothing_left(run, lambda: private_engine.containers(run.service))


# -- 8. the task fails ----------------------------------------------------------------------------


def test_a_command_missing_from_the_image_fails_with_the_engines_reason(supervised):
    run = supervised().main("no-such-binary")
    code = run.wait(30)
    record = run.record()
    status = record["status"]
    assert status["state"] == "failed" and code == status["exit_code"] == 127, status
    assert status["reason"].startswith("cannot start:") and "no-such-binary" in status["reason"]
    assert record["running"] is False
    assert_nothing_left(run, run.containers)


def test_a_missing_command_shows_restarting_at_the_endpoint_then_gives_up(supervised):
    run = supervised().main("no-such-binary", "--restart", "on-failure", "--max-restarts", "2", "--restart-delay", "0.5")
    url = run.url()
    seen = wait_for(lambda: (lambda b: b if b and b["state"] == "restarting" else None)(http_get(f"{url}/status")[1]),
                    10, "state restarting at /status")
    assert seen["running"] is False and seen["exit_code"] == 127 and "no-such-binary" in seen["reason"]
    assert run.wait(30) == 127
    status = run.record()["status"]
    assert status["state"] == "failed" and status["reason"].startswith("gave up after 2 restarts: cannot start:")
    assert_nothing_left(run, run.containers)


@pytest.mark.parametrize("policy, command, final", [
    ("on-failure", "sh -c 'exit 1'", "exited with code 1"),
    ("always", "true", "exited"),  # even a task that succeeds is started again, until the limit
])
def test_restart_policy_restarts_then_gives_up_as_failed(supervised, policy, command, final):
    run = supervised()
    history = EtcdHistory(run.prefix)
    since = time.time()
    run.main(command, "--restart", policy, "--max-restarts", "2", "--restart-delay", "0.2")
    code = run.wait(30)
    history.stop()
    statuses = history.values("status")
    restarting = [s for s in statuses if s["state"] == "restarting"]
    assert [s["restarts"] for s in restarting] == [0, 1], statuses
    assert all(s["reason"] == final for s in restarting)
    last = statuses[-1]
    assert last["state"] == "failed" and last["reason"] == f"gave up after 2 restarts: {final}" and last["restarts"] == 2
    assert code != 0 and run.record()["running"] is False
    actions = container_actions(run.service, since, time.time())
    assert actions.count("create") == 1 and actions.count("start") == 3  # one container, started three times
    assert_nothing_left(run, run.containers)


def test_a_stop_while_restarting_is_a_clean_stop(supervised):
    run = supervised()
    history = EtcdHistory(run.prefix)
    run.main("true", "--restart", "always", "--max-restarts", "100", "--restart-delay", "0.1")
    wait_for(lambda: len([s for s in history.values("status") if s["state"] == "restarting"]) >= 3, 20,
             "three restarts")
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(20) == 0
    history.stop()
    assert history.values("status")[-1]["state"] == "stopped" and run.state() == "stopped"
    assert_nothing_left(run, run.containers)


# -- 9. stop signals during the start -------------------------------------------------------------


def moment(name: str, run: Any) -> Callable[[], bool]:
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
    wait_for(lambda: run.state() == "running", 15, "state running")
    os.kill(run.proc.pid, signal.SIGTERM)
    wait_for(lambda: "stopping container" in run.output(), 5, "the stop to begin")
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(20) == 0
    assert "already stopping" in run.output()
    status = run.record()["status"]
    assert status["state"] == "stopped" and status["exit_code"] == 137
    assert_nothing_left(run, run.containers)
