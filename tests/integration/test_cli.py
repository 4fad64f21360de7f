"""The ``horizon`` command as a user runs it: the console script of the venv (.venv/bin/horizon) as a
subprocess, its output parsed, against real supervisors and real etcd on both APIs (``supervised``).

ls, show and their JSON; watch's JSON lines (appeared, changed, gone) and, once, its table through a
pty; prune with leftovers planted by hand; stop, pause and resume end to end (pause: state paused,
/health 503, sampling goes on); logs while the task runs and after it ended; a read-only etcd user who
can list but not stop; several "hosts" (endpoints on 127.0.0.2 and 127.0.0.3) on a 3-member cluster;
and etcd unreachable or a usage mistake, one line each.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from tests.integration.test_etcd_security import PASSWORD, enable_v2_auth, enable_v3_auth
from tests.support import NAMESPACE, POLITE, ROOT
from tests.support.etcd import Etcd, EtcdV2, EtcdV3, b64, range_end
from tests.support.etcd_cluster import Cluster, Member
from tests.support.ini import write_ini
from tests.support.metrics import seq_at, seq_passes
from tests.support.net import free_port, http_get
from tests.support.supervisor import Supervisor, interruptible
from tests.support.waiting import wait_for

HORIZON = ROOT / ".venv" / "bin" / "horizon"
COUNTING = "sh -c 'trap \"exit 0\" TERM; i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done'"
NOW = "2026-01-05T10:00:00.000Z"


def horizon(etcd: Etcd, *args: str, namespace: str = NAMESPACE, timeout: float = 60,
            env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """``horizon ARGS`` on the API and member ``etcd`` is (the options after the command, as users write them)."""
    assert HORIZON.exists(), "no console script: pip install -e '.[test]' (scripts/provision.sh does)"
    return subprocess.run([str(HORIZON), *args, "--api", etcd.api, "--etcd", etcd.address, "--namespace", namespace],
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def table(text: str) -> List[Dict[str, str]]:
    """ls's rows as {COLUMN: cell} (cells are two spaces or more apart; a cell never holds two spaces)."""
    lines = text.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(header, re.split(r"\s{2,}", line.strip()))) for line in lines[1:]]


def rows(run: Supervisor, *args: str) -> List[Dict[str, Any]]:
    done = horizon(run.etcd, "ls", "--json", "--service", run.service, *args, namespace=run.namespace)
    assert done.returncode == 0, done.stderr
    found: List[Dict[str, Any]] = json.loads(done.stdout)
    return found


def row(run: Supervisor) -> Dict[str, Any]:
    [found] = rows(run)
    return found


def start(run: Supervisor, command: str = POLITE, *flags: str) -> Supervisor:
    run.main(command, "--name", "t1", "--stop-timeout", "5", *flags)
    run.wait_state("running", 30, f"{run.service} running")
    return run


# -- ls, show ---------------------------------------------------------------------------------------

def test_ls_and_show_see_a_running_task_and_then_its_end(supervised):
    run = start(supervised(), POLITE, "--tags", "blue,canary")
    url = run.url()
    done = horizon(run.etcd, "ls", "--service", run.service)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    [mine] = table(done.stdout)
    assert (mine["SERVICE"], mine["TASK"], mine["HOST"], mine["STATE"], mine["ENDPOINT"], mine["TAGS"]) == \
        (run.service, "t1", socket.gethostname(), "running", url, "blue,canary")
    assert mine["RESTARTS"] == "0" and re.fullmatch(r"\d+s|\d+m\d\ds", mine["UPTIME"])
    wait_for(lambda: row(run)["cpu_percent"] is not None, 15, "metrics in etcd")
    found = row(run)
    assert found["state"] == "running" and found["endpoint"] == url and found["tags"] == ["blue", "canary"]
    assert found["memory_bytes"] > 0 and found["uptime_s"] >= 0 and found["exit_code"] is None
    assert [r["task"] for r in rows(run, "--tag", "canary", "--tag", "blue", "--state", "running")] == ["t1"]
    assert rows(run, "--tag", "red") == [] and rows(run, "--state", "paused") == []
    assert [r["task"] for r in rows(run, "--host", "127.0.0.1")] == ["t1"]

    shown = horizon(run.etcd, "show", f"{run.service}/t1")
    assert shown.returncode == 0, shown.stderr
    for expected in (f"{run.service}/t1", "state      running", f"endpoint   {url}", "tags       blue,canary",
                     "metrics (sample ", "processes ("):
        assert expected in shown.stdout, (expected, shown.stdout)
    record = json.loads(horizon(run.etcd, "show", f"{run.service}/t1", "--json").stdout)
    assert record["status"]["state"] == "running" and record["endpoint"]["url"] == url
    assert record["info"]["tags"] == ["blue", "canary"] and "processes" in record["metrics"]

    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(30) == 0
    ended = row(run)
    assert (ended["state"], ended["exit_code"]) == ("stopped", 0) and ended["uptime_s"] is None
    [mine] = table(horizon(run.etcd, "ls", "--service", run.service).stdout)
    assert mine["STATE"] == "stopped (0)"


def test_show_of_an_unknown_task_and_ls_of_an_empty_service(supervised):
    run = supervised()
    done = horizon(run.etcd, "show", f"{run.service}/nope")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"horizon: error: {run.service}/nope: no such task under {NAMESPACE} (horizon ls lists them)\n"
    done = horizon(run.etcd, "ls", "--service", run.service)
    assert done.returncode == 0 and done.stdout == "" and done.stderr.startswith("horizon: no tasks selected")


# -- watch -----------------------------------------------------------------------------------------

class Lines:
    """A process's stdout, line by line, read on a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: List[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def events(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]


def watching(etcd: Etcd, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(HORIZON), "watch", *args, "--api", etcd.api, "--etcd", etcd.address,
                             "--namespace", NAMESPACE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)


def test_watch_prints_json_lines_of_changes_when_piped(supervised):
    run = supervised()
    proc = watching(run.etcd, "--service", run.service)
    try:
        out = Lines(proc)
        time.sleep(0.5)  # the watch has read the (empty) service
        start(run)
        wait_for(lambda: any(e["event"] == "appeared" for e in out.events()), 15, "appeared")
        os.kill(run.proc.pid, signal.SIGTERM)
        assert run.wait(30) == 0
        wait_for(lambda: any(e.get("state") == "stopped" for e in out.events()), 15, "the stopped state")
        run.etcd.delete(f"{run.prefix}/t1")  # the record goes (as when it expires)
        wait_for(lambda: any(e["event"] == "gone" for e in out.events()), 15, "gone")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    events = out.events()
    appeared = events[0]
    assert appeared["event"] == "appeared" and appeared["service"] == run.service and appeared["task"] == "t1"
    assert appeared["state"] in ("starting", "running") and appeared["endpoint"].startswith("http://127.0.0.1:")
    states = [appeared["state"]] + [e["state"] for e in events[1:] if e["event"] == "changed"]
    assert states[-1] == "stopped" and "running" in states, events
    for before, event in zip(states, [e for e in events[1:] if e["event"] == "changed"]):
        assert event["previous_state"] == before
    assert events[-1] == {"event": "gone", "at": events[-1]["at"], "service": run.service, "task": "t1",
                          "state": "stopped"}
    assert [e["event"] for e in events].count("appeared") == 1  # a v2 directory's new TTL is no gone/appeared


@pytest.mark.parametrize("etcd_api", ["v3"], indirect=True)
def test_watch_on_a_terminal_redraws_a_table_in_place(supervised):
    run = start(supervised())
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([str(HORIZON), "watch", "--service", run.service, "--api", run.etcd.api, "--etcd",
                             run.etcd.address, "--namespace", NAMESPACE], stdin=terminal, stdout=terminal,
                            stderr=terminal, close_fds=True, preexec_fn=interruptible)
    os.close(terminal)
    screen = b""

    def read(until: float) -> None:
        nonlocal screen
        while time.monotonic() < until:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    screen += os.read(controller, 65536)
                except OSError:
                    return

    try:
        read(time.monotonic() + 3)
        assert b"\x1b[2J" in screen and screen.count(b"\x1b[H") >= 2, screen  # cleared, then redrawn in place
        last = screen.rsplit(b"\x1b[H", 1)[1].decode()
        assert "horizon watch: 1 task under" in last and "SERVICE" in last
        assert re.search(rf"{run.service}\s+t1\s+\S+\s+running", last), last
        plant(run.etcd, f"{run.prefix}/t2", "paused", None, 60)  # another task shows up
        read(time.monotonic() + 2)
        last = screen.rsplit(b"\x1b[H", 1)[1].decode()
        assert "horizon watch: 2 tasks under" in last and re.search(rf"{run.service}\s+t2\s+\S+\s+paused", last), last
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        read(time.monotonic() + 0.3)
        assert b"Traceback" not in screen
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)


# -- prune -----------------------------------------------------------------------------------------

def plant(etcd: Etcd, prefix: str, state: str, finished_at: Optional[str], ttl: Optional[int]) -> None:
    """A record written by hand: its status and info, under a TTL (v2: the directory's) or lease, or none."""
    status = json.dumps({"state": state, "exit_code": 0 if finished_at else None, "finished_at": finished_at,
                         "started_at": NOW, "updated_at": NOW, "restarts": 0})
    info = json.dumps({"host": "elsewhere", "tags": []})
    if isinstance(etcd, EtcdV3):
        lease = etcd.grant(ttl) if ttl else None
        for name, value in (("info", info), ("status", status)):
            assert etcd.put(f"{prefix}/{name}", value, lease) == 200
    else:
        assert isinstance(etcd, EtcdV2)
        if ttl:
            assert etcd.request(f"/v2/keys{prefix}?dir=true&ttl={ttl}", "PUT")[0] == 201
        for name, value in (("info", info), ("status", status)):
            assert etcd.put(f"{prefix}/{name}", value) in (200, 201)


def names(text: str) -> List[str]:
    """The records a prune (or its dry run) names."""
    return sorted(re.findall(r"^(?:would remove|removed) (\S+/\S+): ", text, re.MULTILINE))


def test_prune_removes_finished_leftovers_and_never_a_live_record(supervised):
    run = supervised()
    namespace = f"/horizon-test-prune-{uuid.uuid4().hex[:8]}"  # prune works on a namespace: ours alone
    run.namespace, run.prefix = namespace, f"{namespace}/services/{run.service}"
    etcd = run.etcd
    try:
        start(run)
        services = f"{namespace}/services"
        plant(etcd, f"{services}/old/bare", "stopped", NOW, None)  # finished, would never expire
        plant(etcd, f"{services}/old/aged", "exited", NOW, 600)  # finished long ago, with a TTL
        plant(etcd, f"{services}/old/recent", "failed", time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), 600)
        plant(etcd, f"{services}/old/alive", "running", None, None)  # no TTL, but not finished: not ours
        if isinstance(etcd, EtcdV2):
            assert etcd.request(f"/v2/keys{services}/empty?dir=true", "PUT")[0] == 201

        def prune(*args: str) -> subprocess.CompletedProcess:
            done = horizon(etcd, "prune", *args, namespace=namespace)
            assert done.returncode == 0, done.stderr
            return done

        dry = prune("--dry-run")
        assert names(dry.stdout) == ["old/aged", "old/bare"], dry.stdout
        assert all(line.startswith("would remove ") for line in dry.stdout.splitlines())
        assert ("would remove the empty directory " + f"{services}/empty" in dry.stdout) == \
            isinstance(etcd, EtcdV2)
        assert etcd.raw(f"{services}/old/bare/status") is not None  # a dry run removes nothing

        done = prune()
        assert names(done.stdout) == ["old/aged", "old/bare"] and "removed 2 records" in done.stderr
        assert etcd.raw(f"{services}/old/bare/status") is None and etcd.raw(f"{services}/old/aged/info") is None
        for kept in ("recent", "alive"):
            assert etcd.raw(f"{services}/old/{kept}/status") is not None
        assert run.state() == "running" and run.proc.poll() is None
        if isinstance(etcd, EtcdV2):
            assert etcd.get(f"{services}/empty") is None and etcd.get(f"{services}/old") is not None
        again = prune()
        assert again.stdout == "" and "removed 0 records and 0 empty directories" in again.stderr
    finally:
        etcd.delete(namespace)


# -- control ---------------------------------------------------------------------------------------

def act(run: Supervisor, action: str, *names: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return horizon(run.etcd, action, *(names or (f"{run.service}/t1",)), "--timeout", str(timeout),
                   namespace=run.namespace, timeout=timeout + 30)


def effect_seconds(done: subprocess.CompletedProcess) -> float:
    match = re.search(r"\((\d+\.\d+) s\)$", done.stdout.strip())
    assert match, done.stdout
    return float(match.group(1))


def test_pause_resume_and_stop_through_etcd(supervised):
    run = start(supervised())
    url = run.url()
    name = f"{run.service}/t1"
    took = []

    done = act(run, "pause")
    assert done.returncode == 0 and done.stdout.startswith(f"{name} paused ("), done.stderr
    took.append(effect_seconds(done))
    assert run.state() == "paused" and row(run)["state"] == "paused"
    status, health = http_get(f"{url}/health")
    assert status == 503 and health["state"] == "paused" and "paused" in health["reason"]
    seq_passes(url, seq_at(url), 10, "sampling to go on while paused")

    again = act(run, "pause")
    assert again.returncode == 1 and again.stderr == f"horizon: error: {name} is already paused\n"

    done = act(run, "resume")
    assert done.returncode == 0 and done.stdout.startswith(f"{name} running ("), done.stderr
    took.append(effect_seconds(done))
    wait_for(lambda: http_get(f"{url}/health")[0] == 200, 10, "healthy again")
    assert act(run, "resume").stderr == f"horizon: error: {name} is already running\n"

    for _ in range(3):  # a few more round trips, for the request-to-effect figure
        took += [effect_seconds(act(run, "pause")), effect_seconds(act(run, "resume"))]

    done = act(run, "stop")
    assert done.returncode == 0 and done.stdout.startswith(f"{name} stopped ("), done.stderr
    assert run.wait(30) == 0  # the same clean stop as SIGTERM
    ended = row(run)
    assert (ended["state"], ended["exit_code"]) == ("stopped", 0)
    wait_for(lambda: run.containers() == [], 10, "the container removed")
    stopped = act(run, "stop")
    assert stopped.returncode == 1 and stopped.stderr == f"horizon: error: {name} has ended (stopped (0)): nothing to stop\n"
    unknown = act(run, "stop", f"{run.service}/nope")
    assert unknown.returncode == 1 and "no such task in etcd" in unknown.stderr
    assert max(took) < 2.0, took  # the p99 < 0.5 s is measured on a quiet machine; here: no polling
    print(f"request to effect ({run.api}): {sorted(took)}")


def test_stop_of_several_tasks_by_selection(supervised):
    first, second = supervised(), supervised()
    service = first.service
    second.service, second.prefix = service, first.prefix  # one service, two tasks
    first.main(POLITE, "--name", "t1", "--tags", "batch")
    second.main(POLITE, "--name", "t2", "--tags", "batch")
    wait_for(lambda: [r["state"] for r in rows(first)] == ["running", "running"], 30, "both running")
    done = horizon(first.etcd, "stop", "--service", service, "--tag", "batch", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    assert sorted(line.split()[0] for line in done.stdout.splitlines()) == [f"{service}/t1", f"{service}/t2"]
    assert first.wait(30) == 0 and second.wait(30) == 0
    none = horizon(first.etcd, "stop", "--service", service, "--timeout", "5")
    assert none.returncode == 1 and none.stderr == f"horizon: error: no task to stop: none selected lives under {NAMESPACE}\n"


# -- logs ------------------------------------------------------------------------------------------

def test_logs_while_the_task_runs_and_after_it_ended(supervised):
    run = start(supervised(), COUNTING)
    name = f"{run.service}/t1"

    def numbered(text: str) -> List[int]:
        return [int(line.split()[1]) for line in text.splitlines()]

    wait_for(lambda: len(horizon(run.etcd, "logs", name, "--tail", "3").stdout.splitlines()) == 3, 15, "3 lines")
    last = numbered(horizon(run.etcd, "logs", name, "--tail", "3").stdout)
    assert last == list(range(last[0], last[0] + 3))
    follow = subprocess.Popen([str(HORIZON), "logs", name, "--tail", "1", "--follow", "--api", run.api, "--etcd",
                               run.etcd.address, "--namespace", NAMESPACE], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        out = Lines(follow)
        wait_for(lambda: len(out.lines) >= 5, 15, "followed lines")
        os.kill(run.proc.pid, signal.SIGTERM)
        assert run.wait(30) == 0
        assert follow.wait(15) == 0, follow.stderr.read() if follow.stderr else ""  # the stream ends with the task
    finally:
        if follow.poll() is None:
            follow.kill()
    followed = numbered("".join(out.lines))
    assert followed == list(range(followed[0], followed[0] + len(followed)))
    after = horizon(run.etcd, "logs", name, "--tail", "5")
    assert after.returncode == 0 and numbered(after.stdout)[-1] >= followed[-1]
    assert len(after.stdout.splitlines()) == 5
    assert after.stderr == f"horizon: {name} has ended (stopped (0)); the last 5 lines its record keeps:\n"


# -- who may control -------------------------------------------------------------------------------

def add_reader(member: Member) -> None:
    """A user ``reader`` (PASSWORD) whose role may read the test namespace and write nothing."""
    root = member.client(password=PASSWORD)
    if member.api == "v2":
        read_only = {"role": "reader", "permissions": {"kv": {"read": [f"{NAMESPACE}/*"], "write": []}}}
        assert root.request("/v2/auth/roles/reader", "PUT", json.dumps(read_only).encode())[0] == 201
        assert root.request("/v2/auth/users/reader", "PUT", json.dumps(
            {"user": "reader", "password": PASSWORD, "roles": ["reader"]}).encode())[0] in (200, 201)
        return
    assert isinstance(root, EtcdV3)
    for path, body in [
        ("/v3/auth/role/add", {"name": "reader"}),
        ("/v3/auth/role/grant", {"name": "reader", "perm": {"permType": "READ", "key": b64(f"{NAMESPACE}/"),
                                                            "range_end": range_end(f"{NAMESPACE}/")}}),
        ("/v3/auth/user/add", {"name": "reader", "password": PASSWORD}),
        ("/v3/auth/user/grant", {"user": "reader", "role": "reader"}),
    ]:
        status, answer = root.post(path, body)
        assert status == 200, (path, status, answer)


@pytest.fixture
def auth_member(services, etcd_api) -> Iterator[Member]:
    cluster = Cluster(api=etcd_api).start()
    try:
        member = cluster.members[0]
        (enable_v2_auth if etcd_api == "v2" else enable_v3_auth)(member)
        add_reader(member)
        yield member
    finally:
        cluster.stop()


def test_a_read_only_user_can_list_but_not_stop(supervised, tmp_path: Path, auth_member: Member):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    run = supervised()
    run.etcd = auth_member.client(password=PASSWORD)
    ini = write_ini(tmp_path, run.service, POLITE, task="name = t1\n", api=auth_member.api,
                    etcd=f"hosts = {auth_member.address}\nusername = root\npassword_file = {secret}\n")
    run.ini(ini)
    run.wait_state("running", 30, "the record, written as root")
    reader = ["--username", "reader", "--password-file", str(secret)]

    listed = horizon(run.etcd, "ls", "--json", "--service", run.service, *reader)
    assert listed.returncode == 0, listed.stderr
    assert [(r["task"], r["state"]) for r in json.loads(listed.stdout)] == [("t1", "running")]
    anonymous = horizon(run.etcd, "ls")
    assert anonymous.returncode == 1 and len(anonymous.stderr.splitlines()) == 1  # v2 refuses; v3: "user name is empty"

    refused = horizon(run.etcd, "stop", f"{run.service}/t1", "--timeout", "5", *reader)
    assert refused.returncode == 1 and refused.stdout == "" and len(refused.stderr.splitlines()) == 1
    assert "refused the stop request" in refused.stderr and f"may write {NAMESPACE}/control/" in refused.stderr
    assert PASSWORD not in refused.stderr + listed.stderr
    time.sleep(1)
    assert run.state() == "running" and run.proc.poll() is None  # the task keeps running

    by_env = horizon(run.etcd, "stop", f"{run.service}/t1", "--username", "root", env={"HORIZON_ETCD_PASSWORD": PASSWORD})
    assert by_env.returncode == 0, by_env.stderr
    assert run.wait(30) == 0


# -- several hosts ---------------------------------------------------------------------------------

@pytest.fixture
def cluster(services, etcd_api) -> Iterator[Cluster]:
    cluster = Cluster(size=3, api=etcd_api).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_several_hosts_on_one_cluster_seen_and_controlled_through_any_member(supervised, tmp_path, cluster):
    runs = {}
    for address in ("127.0.0.2", "127.0.0.3"):
        run = supervised()
        run.etcd = cluster.client(2)  # the tests read through a member horizon does not ask first
        ini = write_ini(tmp_path, run.service, POLITE, task="name = t1\n", api=cluster.members[0].api,
                        etcd=f"hosts = {cluster.hosts}\n[endpoint]\nhost = {address}\nport = {free_port()}\n")
        runs[address] = run.ini(ini)
    for run in runs.values():
        run.wait_state("running", 30, f"{run.service} running")
    every = ["--etcd", cluster.hosts]

    def listed() -> Optional[Dict[str, Dict[str, Any]]]:
        """My services' rows, or None when etcd did not answer (a cluster electing a new leader)."""
        done = subprocess.run([str(HORIZON), "ls", "--json", *every, "--api", cluster.members[0].api,
                               "--namespace", NAMESPACE], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            assert "etcd does not answer" in done.stderr, done.stderr
            return None
        mine = {run.service for run in runs.values()}
        return {r["service"]: r for r in json.loads(done.stdout) if r["service"] in mine}

    seen = wait_for(listed, 10, "horizon ls")
    for address, run in runs.items():
        assert seen[run.service]["endpoint"].startswith(f"http://{address}:") and seen[run.service]["state"] == "running"
        assert http_get(f"{seen[run.service]['endpoint']}/health")[0] == 200

    first, second = runs["127.0.0.2"], runs["127.0.0.3"]
    by_host = subprocess.run([str(HORIZON), "ls", "--json", "--host", "127.0.0.3", *every, "--api",
                              cluster.members[0].api, "--namespace", NAMESPACE], capture_output=True, text=True, timeout=60)
    assert [r["service"] for r in json.loads(by_host.stdout)] == [second.service]

    stop = subprocess.run([str(HORIZON), "stop", f"{first.service}/t1", *every, "--api", cluster.members[0].api,
                           "--namespace", NAMESPACE], capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert first.wait(30) == 0 and second.proc.poll() is None and second.state() == "running"
    before = {service: (r["state"], r["endpoint"], r["exit_code"]) for service, r in wait_for(listed, 10, "ls").items()}
    assert before == {first.service: ("stopped", seen[first.service]["endpoint"], 0),
                      second.service: ("running", seen[second.service]["endpoint"], None)}

    cluster.members[0].kill()  # the member every client asks first (if it led, the others elect a leader)
    after = {service: (r["state"], r["endpoint"], r["exit_code"]) for service, r in wait_for(listed, 10, "ls").items()}
    assert after == before
    assert http_get(f"{seen[second.service]['endpoint']}/health")[0] == 200


# -- etcd away, usage ------------------------------------------------------------------------------

def test_etcd_unreachable_is_one_line_and_exit_1_within_the_timeout(services):
    nobody = f"127.0.0.1:{free_port()}"
    for args in (["ls"], ["stop", "web/t1"], ["watch"]):
        started = time.monotonic()
        done = subprocess.run([str(HORIZON), *args, "--etcd", nobody, "--timeout", "1"], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 1 and done.stdout == "", done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(f"horizon: error: etcd does not answer: {nobody}")
        assert time.monotonic() - started < 5


def test_the_wrong_api_is_refused_with_the_flag_to_use(services):
    done = subprocess.run([str(HORIZON), "ls", "--api", "v2", "--etcd", "127.0.0.1:2479"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert "no v2 API here" in done.stderr and "use --api v3" in done.stderr


def test_a_usage_mistake_is_one_line_and_exit_2():
    done = subprocess.run([str(HORIZON), "ls", "--stat", "running"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "horizon: error: unrecognized arguments: --stat; did you mean --state? (see --help)\n"
