"""A killed supervisor, for real (issue 4, item 6): SIGKILL to the parent leaves the container running;
the next supervisor of the same task adopts it and ``seq`` goes on, or, if the task ended while no one
watched, records its real end and meets its restart policy."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime

from tests.support import ENDS_ON_CUE, POLITE
from tests.support.docker import container_actions, docker, inspect
from tests.support.ini import write_ini
from tests.support.leftovers import assert_nothing_left, group_processes
from tests.support.metrics import seq_at, seq_passes
from tests.support.supervisor import Supervisor
from tests.support.waiting import wait_for

TTL = 3
SHM_NAMES = ("psm_", "horizon")  # what multiprocessing.shared_memory (or a named segment of ours) would leave


def fast_ini(run: Supervisor, tmp_path, command: str, task: str = ""):
    """The task file both supervisors of the task start from: a short TTL, and quick samples."""
    return write_ini(tmp_path, run.service, command, task=task, etcd=f"ttl = {TTL}\n[metrics]\ninterval = 0.2\n",
                     api=run.api)


def shm_entries() -> set:
    return {name for name in os.listdir("/dev/shm") if name.startswith(SHM_NAMES)}


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def engine_time_of(value: str) -> float:
    """The engine's nanosecond timestamp, as a float (Python parses at most microseconds)."""
    head, _, rest = value.rstrip("Z").partition(".")
    return parse_time(f"{head}.{rest[:6].ljust(6, '0')}Z")


def kill_supervisor(run: Supervisor) -> None:
    """SIGKILL the parent: every worker exits by itself and nothing stays in /dev/shm."""
    run.wait_workers()
    shm_before = shm_entries()
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(5)
    wait_for(lambda: group_processes(run.proc.pid) == [], 2.5, "every worker to exit after the parent's death")
    assert shm_entries() - shm_before == set()


def running_lapses(run: Supervisor) -> None:
    wait_for(lambda: run.record().get("running") is not True, TTL + 2, "etcd to stop saying 'running'")


def ended_unwatched(run: Supervisor) -> str:
    """Kill the running task's supervisor, then let the task end (exit 3): its container id."""
    run.wait_state("running", 15)
    container = run.record()["info"]["container_id"]
    kill_supervisor(run)
    docker("exec", container, "touch", "/tmp/end")  # /tmp/end stays: every later start ends at once
    wait_for(lambda: inspect(container, "{{.State.Status}}") == "exited", 10, "the task to end unwatched")
    return container


def test_a_restarted_supervisor_adopts_the_running_container_and_seq_goes_on(supervised, tmp_path):
    run = supervised()
    ini = fast_ini(run, tmp_path, POLITE)
    since = time.time()
    run.ini(ini)
    url = run.url()
    seq_passes(url, 2, 10, "a few samples")
    info = run.record()["info"]
    seen = seq_at(url) or 0
    kill_supervisor(run)
    running_lapses(run)
    assert inspect(info["container_id"], "{{.State.Status}}") == "running"  # left for the next supervisor

    again = supervised(run.service).ini(ini)
    url = again.url()
    again.wait_state("running", 10, "state running again")
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
    ini = fast_ini(run, tmp_path, ENDS_ON_CUE.format(code=3))
    container = ended_unwatched(run.ini(ini))
    running_lapses(run)  # some time passes before the next supervisor comes
    ended = json.loads(inspect(container, "{{json .State}}"))
    assert ended["ExitCode"] == 3

    again = supervised(run.service).ini(ini)
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
    ini = fast_ini(run, tmp_path, ENDS_ON_CUE.format(code=3),
                   task="restart = on-failure\nmax_restarts = 1\nrestart_delay = 0.2\n")
    ended_unwatched(run.ini(ini))

    history = run.etcd.history(run.prefix)
    again = supervised(run.service).ini(ini)
    assert again.wait(30) == 3
    history.stop()
    assert [s["restarts"] for s in history.values("status") if s["state"] == "restarting"] == [0]
    status = again.record()["status"]
    assert status["state"] == "failed" and status["reason"] == "gave up after 1 restarts: exited with code 3"
    assert_nothing_left(again, again.containers)
