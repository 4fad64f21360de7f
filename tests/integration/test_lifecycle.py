"""The task executor end to end, on the real Docker engine and a real etcd."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any, Dict

import pytest

from tests.support import IMAGE, NAMESPACE, POLITE, ROOT
from tests.support.docker import inspect
from tests.support.etcd import EtcdV2, TaskNode, etcdctl, etcdctl_lease_keys, etcdctl_record
from tests.support.ini import write_ini
from tests.support.net import free_port, http_get
from tests.support.supervisor import Supervisor
from tests.support.waiting import wait_for
from workers.sampler import DETAIL_PERIOD

BUSY = "sh -c 'while true; do :; done'"
RECORD = {"info", "endpoint", "running", "status"}  # the keys every record has from its first write


def etcdctl_lease(endpoint: str, lease: int) -> Dict[str, Any]:
    """etcdctl's ``lease timetolive`` of a lease: {"ttl": ..., "granted-ttl": ...}; ttl -1 once it is gone."""
    done = etcdctl(endpoint, "lease", "timetolive", f"{lease:x}", "-w", "json")
    assert done.returncode == 0, done.stderr
    answer: Dict[str, Any] = json.loads(done.stdout)
    return answer


def assert_one_lease_as_etcdctl_reads_it(run: Supervisor, node: TaskNode) -> None:
    """v3: every key of the task is bound to its one lease, read by etcd's own client too: what etcdctl
    reads under the task's prefix is on the lease, and the lease holds nothing else."""
    assert node.lease is not None and node.leases == {node.lease}, node
    seen = etcdctl_record(run.etcd.address, node.key)  # before the lease's keys: one added meanwhile is on it too
    on_lease = etcdctl_lease_keys(run.etcd.address, node.lease)
    assert RECORD <= set(seen), seen
    assert {f"{node.key}/{name}" for name in seen} <= set(on_lease), (seen, on_lease)
    assert all(key.rsplit("/", 1)[0] == node.key for key in on_lease), on_lease
    assert {name: seen[name] for name in ("info", "endpoint")} == {name: node.keys[name] for name in ("info", "endpoint")}


def test_seed_form_registers_then_records_the_end(supervised):
    run = supervised().main("sleep 3")
    wait_for(lambda: run.state() == "running", 15, "state running in etcd")
    record = run.record()
    assert record["running"] is True
    assert record["info"]["image"] == IMAGE and record["info"]["command"] == ["sleep", "3"]
    assert record["info"]["container_id"] and record["info"]["service"] == run.service
    assert record["endpoint"]["url"] == f"http://127.0.0.1:{record['endpoint']['port']}"
    live = run.task()
    assert live is not None and live.ttl <= 15
    if run.api == "v3":
        assert_one_lease_as_etcdctl_reads_it(run, live)

    assert run.wait(30) == 0
    record = run.record()
    assert record["status"]["state"] == "exited" and record["status"]["exit_code"] == 0
    assert record["running"] is False
    assert record["metrics"]["seq"] >= 1
    final = run.task()
    assert final is not None and 590 < final.ttl <= 600  # kept keep_finished seconds for post-mortems
    if run.api == "v3":  # the final record is on a lease of keep_finished seconds; the live lease is gone
        assert final.lease not in (None, live.lease) and final.leases == {final.lease}, final
        assert etcdctl_record(run.etcd.address, final.key) == final.keys == record
        assert etcdctl_lease_keys(run.etcd.address, final.lease) == sorted(f"{final.key}/{name}" for name in record)
        lease = etcdctl_lease(run.etcd.address, final.lease)
        assert lease["granted-ttl"] == 600 and 590 < lease["ttl"] <= 600, lease
        assert etcdctl_lease(run.etcd.address, live.lease)["ttl"] == -1  # revoked
        assert etcdctl_lease_keys(run.etcd.address, live.lease) == []
    assert run.containers() == []  # remove = true


def test_exit_code_of_a_failing_task_is_the_supervisors(supervised):
    run = supervised().main("sh -c 'exit 7'")
    assert run.wait(30) == 7
    status = run.record()["status"]
    assert status["state"] == "failed" and status["exit_code"] == 7
    assert "7" in status["reason"]


def test_busy_task_metrics_grow_at_the_endpoint_found_in_etcd(supervised):
    run = supervised().main(BUSY, "--interval", "0.2")
    url = run.url()

    def sample(after: int = 0):
        code, document = http_get(f"{url}/metrics")
        return document if code == 200 and document["seq"] >= after else None

    first = wait_for(sample, 10, "a sample")
    # the process table is read about once a second (workers/sampler.py): two reads give a CPU figure
    details = round(DETAIL_PERIOD / 0.2)
    later = wait_for(lambda: sample(first["seq"] + 2 * details + 1), 10, "two more reads of the process table")
    assert later["service"] == run.service and later["interval"] == 0.2
    assert later["container"]["cpu_percent"] > 20  # a busy loop; the host is shared, so not a full core
    assert later["container"]["memory_bytes"] > 0 and later["container"]["pids"] >= 1
    busy = [p for p in later["processes"] if p["cmdline"][:1] == ["sh"]]
    assert busy and busy[0]["cpu_percent"] > 20 and busy[0]["rss_bytes"] > 0

    code, status = http_get(f"{url}/status")
    assert code == 200 and status["state"] == "running" and status["running"] is True and status["uptime_s"] > 0
    assert http_get(f"{url}/health")[0] == 200
    code, info = http_get(f"{url}/info")
    assert info["info"]["container_id"] == run.record()["info"]["container_id"]
    assert info["endpoint"]["url"] == url
    assert http_get(f"{url}/nope")[0] == 404

    # etcd gets the same document, every publish_every samples.
    wait_for(lambda: run.record().get("metrics", {}).get("seq", 0) > first["seq"], 5, "fresh metrics in etcd")


def test_sigterm_stops_within_stop_timeout_and_leaves_nothing_running(supervised):
    run = supervised().main("sleep 600", "--stop-timeout", "2")  # sleep as PID 1 ignores SIGTERM
    wait_for(lambda: run.state() == "running", 15, "state running")
    started = time.monotonic()
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(20) == 0
    assert time.monotonic() - started < 2 + 5
    status = run.record()["status"]
    assert status["state"] == "stopped" and status["exit_code"] == 137
    assert run.record()["running"] is False
    assert run.containers() == []
    assert "Traceback" not in run.output()


def test_sigterm_to_the_whole_group_is_one_clean_stop(supervised):
    run = supervised().main(POLITE)
    wait_for(lambda: run.state() == "running", 15, "state running")
    os.killpg(run.proc.pid, signal.SIGTERM)  # what `pkill -f` or a terminal does
    assert run.wait(20) == 0
    assert run.record()["status"]["state"] == "stopped"
    assert run.record()["status"]["exit_code"] == 0
    assert "died" not in run.output()  # no worker was killed by it
    assert run.containers() == []


@pytest.mark.parametrize("role", ["container", "publisher", "endpoint"])
def test_a_killed_worker_is_restarted_and_nothing_else_changes(supervised, role):
    run = supervised().main(POLITE, "--interval", "0.2")
    url = run.url()
    wait_for(lambda: http_get(f"{url}/metrics")[0] == 200, 10, "a sample")
    run.wait_state("running", 10)  # the record says so before the fault, so what it says after means something
    container_id = run.record()["info"]["container_id"]
    before = run.wait_workers()

    os.kill(before[role], signal.SIGKILL)

    def replaced():
        workers = run.all_workers()
        return workers if workers and workers[role] != before[role] else None

    after = wait_for(replaced, 5, f"a new {role} worker")
    assert {k: v for k, v in after.items() if k != role} == {k: v for k, v in before.items() if k != role}
    seq = http_get(f"{url}/metrics")[1]["seq"]
    wait_for(lambda: (http_get(f"{url}/metrics")[1] or {}).get("seq", 0) > seq, 5, "sampling to go on, same port")
    assert run.containers() == [container_id[:12]]  # adopted, never a second one
    run.wait_state("running", 10, "the record still running (a new publisher writes it again)")
    assert run.proc.poll() is None


def test_ini_config_with_a_fixed_port(supervised, tmp_path):
    run = supervised()
    port = free_port()
    ini = write_ini(tmp_path, run.service, POLITE, task="tags = a,b\nenvironment =\n    GREETING='hello world'\n"
                    "memory = 64m\n", etcd=f"[endpoint]\nport = {port}\n", api=run.api)
    run.ini(ini)
    assert run.url() == f"http://127.0.0.1:{port}"
    record = run.record()
    assert record["info"]["tags"] == ["a", "b"]
    container = run.containers()[0]
    inspected = inspect(container, "{{.HostConfig.Memory}} {{json .Config.Env}} {{json .Config.Labels}}")
    assert inspected.startswith(str(64 << 20))
    assert "GREETING=hello world" in inspected and f'"horizon.service":"{run.service}"' in inspected

    twin = supervised(run.service).ini(ini)  # same file: same task
    assert twin.wait(10) == 1
    assert "another supervisor" in twin.output() and len(twin.output().splitlines()) == 1
    other = tmp_path / "other.ini"  # another task wanting the same port
    other.write_text(ini.read_text())
    second = supervised(run.service).ini(other)
    assert second.wait(10) == 2
    assert f"port {port}" in second.output() and len(second.output().splitlines()) == 1
    assert run.containers() == [run.record()["info"]["container_id"][:12]]
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(20) == 0


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["main.py", IMAGE, "sleep 1", "--port", "abc"], "--port"),
        (["main.py", IMAGE, "sleep 'unbalanced"], "COMMAND"),
        (["main.py", IMAGE, "sleep 1", "--service", "Bad_Name"], "--service"),
        (["main.py", IMAGE, "sleep 1", "--etcd", "nohost:"], "--etcd"),
        (["main.py", IMAGE, "sleep 1", "--bogus"], "unrecognized"),
        (["-m", "supervisor", "/nonexistent/task.ini"], "no such file"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_created(supervised, argv, needle):
    run = supervised()
    if argv[0] == "main.py":
        argv = argv + ["--service", run.service] if "--service" not in argv else argv
    run.start(argv)
    assert run.wait(20) == 2
    out = run.output().strip()
    assert len(out.splitlines()) == 1 and needle in out, out
    assert run.containers() == [] and run.task() is None


def test_missing_image_is_one_line_exit_1_and_nothing_created(supervised):
    run = supervised().main("sleep 1", image="horizon-no-such-image:latest")
    assert run.wait(60) == 1
    errors = [line for line in run.output().splitlines() if "ERROR" in line or "error:" in line]
    assert errors and "horizon-no-such-image" in errors[-1]
    assert "Traceback" not in run.output()
    assert run.containers() == [] and run.task() is None


def test_check_validates_without_running_anything():
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "--check", "conf/task.ini"], cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0 and "ok" in result.stdout


def test_oom_kill_is_recorded(supervised):
    hog = "sh -c 'x=$(head -c 200000000 /dev/zero | tr \"\\0\" a); echo ${#x}'"
    run = supervised().main(hog, "--memory", "16m")
    code = run.wait(60)
    status = run.record()["status"]
    assert status["state"] == "failed" and status["oom_killed"] is True, status
    assert "oom" in status["reason"] and code == status["exit_code"] != 0


def test_unreachable_engine_is_one_line_exit_1(supervised, tmp_path):
    run = supervised().main("sleep 1", env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert run.wait(30) == 1
    last = run.output().strip().splitlines()[-1]
    assert last.startswith("horizon: error: cannot reach the Docker engine") and "DOCKER_HOST" in last
    assert "Traceback" not in run.output() and run.task() is None


def test_workers_exit_when_the_supervisor_is_killed_and_keys_expire(supervised):
    run = supervised().main(POLITE, "--etcd-ttl", "3")
    wait_for(lambda: run.state() == "running", 15, "state running")
    workers = run.wait_workers()
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(5)

    def all_gone() -> bool:
        return not any(os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
                       for pid in workers.values())

    wait_for(all_gone, 2.5, "every worker to exit")
    wait_for(lambda: run.task() is None, 3 + 2, "the task's keys to expire with their TTL")


def test_record_outlives_its_ttl_while_the_task_runs(supervised):
    run = supervised().main(POLITE, "--etcd-ttl", "3")
    wait_for(lambda: run.state() == "running", 15, "state running")
    time.sleep(5)  # longer than the TTL: only refreshes keep it
    node = run.task()
    assert node is not None and node.keys["running"] is True and node.ttl <= 3
    if run.api == "v3":  # still the one lease, kept alive
        assert_one_lease_as_etcdctl_reads_it(run, node)


def test_any_listed_etcd_member_will_do_and_services_share_a_directory(supervised):
    first = supervised()
    second = supervised(first.service)
    dead = free_port()  # where nothing listens
    first.main(POLITE, "--etcd", f"127.0.0.1:{dead},{first.etcd.address}", "--name", "one")
    second.main(POLITE, "--name", "two")
    wait_for(lambda: {"one", "two"} == {task.key.rsplit("/", 1)[1] for task in first.etcd.tasks(first.prefix)},
             15, "two tasks under one service directory")
    for run in (first, second):
        os.kill(run.proc.pid, signal.SIGTERM)
        assert run.wait(20) == 0


def test_ready_is_sent_to_systemd_once_running_and_registered(supervised, tmp_path):
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(20)
    run = supervised().main(POLITE, env={"NOTIFY_SOCKET": address})
    message = sock.recv(4096).decode()
    assert "READY=1" in message and "registered in etcd" in message
    assert run.state() == "running" and run.record()["running"] is True
    os.kill(run.proc.pid, signal.SIGTERM)
    assert "STOPPING=1" in sock.recv(4096).decode()
    assert run.wait(20) == 0
    sock.close()


MANY = "sh -c 'for i in $(seq 30); do sleep 300 & done; wait'"  # 31 processes: sh and 30 sleeps


def test_etcd_keeps_the_20_busiest_processes_and_the_endpoint_lists_them_all(supervised):
    run = supervised().main(MANY, "--interval", "0.5", "--metrics-publish-every", "1")
    url = run.url()

    def served():
        code, document = http_get(f"{url}/metrics")
        return document if code == 200 and len(document["processes"]) >= 30 else None

    document = wait_for(served, 15, "every process at the endpoint")
    assert document["process_count"] == len(document["processes"]) >= 30
    assert len({p["pid"] for p in document["processes"]}) == len(document["processes"])

    def stored():
        metrics = run.record().get("metrics") or {}
        return metrics if metrics.get("process_count", 0) >= 30 else None

    metrics = wait_for(stored, 10, "the metrics of every process in etcd")
    assert 0 < len(metrics["processes"]) <= 20 and metrics["process_count"] >= 30, metrics["process_count"]
    assert len(metrics["processes"]) == 20  # the 20 busiest (README: etcd layout)
    assert run.state() == "running"


# -- v2 only ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("etcd_api", ["v2"], indirect=True)
def test_on_v2_an_empty_service_directory_is_removed_never_a_live_record(supervised):
    """etcd v2 keeps a directory whose last child expired: a publisher removes the service directories
    left empty under its namespace once it has written its record (best effort; an empty one only)."""
    run = supervised()
    etcd = run.etcd
    assert isinstance(etcd, EtcdV2)
    services = f"{NAMESPACE}/services"
    empty, held = (f"{services}/t{uuid.uuid4().hex[:10]}" for _ in range(2))
    live_key = f"{held}/t1/running"
    try:
        assert etcd.request(f"/v2/keys{empty}?dir=true", "PUT")[0] == 201
        assert etcd.put(live_key, "true") == 201
        made = etcd.get(empty)
        assert made is not None and made.get("dir") is True and not made.get("nodes"), made

        run.main(POLITE)
        run.wait_state("running", 15)
        wait_for(lambda: etcd.get(empty) is None, 5, "the empty service directory to be removed")
        assert etcd.value(live_key) is True  # a directory holding anything is never touched
        assert [task.key for task in etcd.tasks(held)] == [f"{held}/t1"]
        node = run.task()
        assert node is not None and RECORD <= set(node.keys) and node.keys["running"] is True
        os.kill(run.proc.pid, signal.SIGTERM)
        assert run.wait(20) == 0
    finally:
        etcd.delete(empty)
        etcd.delete(held)
