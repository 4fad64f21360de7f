"""etcd faults injected for real: private etcd members (frozen, down at start, killed) and a stalled
publisher, under a real supervisor on the real Docker engine, on both APIs (v3: etcd 3.5 without
--enable-v2; v2: etcd 3.4 with it). Each test says what the supervisor kept: sampling and HTTP untouched,
the record in etcd complete, current and with its TTL (v3: every key on one live lease) once etcd is back."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import psutil
import pytest

from tests.support import POLITE
from tests.support.etcd_cluster import Cluster, Member
from tests.support.metrics import seq_at
from tests.support.net import http_get
from tests.support.supervisor import Supervisor
from tests.support.waiting import wait_for

KEYS = {"info", "endpoint", "metrics", "status", "running"}
INTERVAL = 0.2
PUBLISH_EVERY = 5  # the default: etcd gets every 5th sample, once a second at INTERVAL
PUBLISH_PERIOD = INTERVAL * PUBLISH_EVERY
FRESH = 3 * PUBLISH_EVERY  # how far etcd's metrics may trail the endpoint's and still be current


@pytest.fixture
def private_etcd(etcd_api: str) -> Iterator[Callable[..., Cluster]]:
    """Factory of private etcd clusters of the test's API (started unless start=False); all are stopped
    afterwards. Request it before ``supervised`` so the supervisors are ended first."""
    clusters: List[Cluster] = []

    def make(size: int = 1, start: bool = True) -> Cluster:
        cluster = Cluster(size, api=etcd_api)
        clusters.append(cluster)
        return cluster.start() if start else cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop()


def supervise(supervised: Callable[..., Supervisor], etcd: Cluster, *flags: str, hosts: str = "",
              reader: int = 0) -> Supervisor:
    """A supervisor on the private cluster; its record is read from member ``reader``."""
    run = supervised()
    run.etcd = etcd.client(reader)
    return run.main(POLITE, "--etcd", hosts or etcd.hosts, "--interval", str(INTERVAL), *flags)


def endpoint_seq(run: Supervisor) -> int:
    seq = seq_at(run.url(), timeout=5)
    assert seq is not None, "the endpoint does not answer"
    return seq


def current(run: Supervisor, state: str = "running") -> Optional[Dict[str, Any]]:
    """The record when it is whole, has its TTL (v3: every key on one live lease), shows ``state`` and
    fresh metrics; else None."""
    task = run.task()  # one read for keys and TTL: a record re-created without one cannot pass
    if not task or set(task.keys) != KEYS or not task.ttl or (run.api == "v3" and task.lease is None):
        return None
    record = task.keys
    if record["status"]["state"] != state or record["running"] is not (state == "running"):
        return None
    if state == "running" and endpoint_seq(run) - record["metrics"]["seq"] > FRESH:
        return None
    return record


def current_with_gap(run: Supervisor) -> Optional[Dict[str, Any]]:
    """``current``, with the gap an outage left. On v2 the record's keys are written one by one (metrics
    before status): a read in between sees fresh metrics beside the status from before the outage."""
    record = current(run)
    return record if record and "last_gap" in record["status"] else None


def rss(run: Supervisor) -> int:
    """Resident memory of the supervisor and its workers, in bytes."""
    parent = psutil.Process(run.proc.pid)
    total = 0
    for proc in [parent, *parent.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def members_in_use(run: Supervisor, etcd: Cluster) -> List[Member]:
    """The members the publisher holds connections to: its requests' (the pool keeps it open between
    writes) and its control watch's, each of which fails over on its own."""
    pid = run.workers().get("publisher")
    if pid is None:
        return []
    ports = {c.raddr.port for c in psutil.Process(pid).net_connections("tcp") if c.raddr and c.status == "ESTABLISHED"}
    return [m for m in etcd.members if m.client_port in ports]


def stop_and_check_the_final_record(run: Supervisor) -> None:
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(30) == 0
    record = wait_for(lambda: current(run, "stopped"), 5, "the final record")
    assert record["status"]["exit_code"] == 0
    assert 590 < run.task().ttl <= 600
    assert run.containers() == []


@pytest.mark.slow
def test_a_frozen_etcd_stalls_nothing_and_the_gap_is_summarised(private_etcd, supervised):
    freeze = 30.0
    etcd = private_etcd()
    run = supervise(supervised, etcd)
    wait_for(lambda: current(run), 20, "the whole record in etcd")
    url = run.url()
    memory_before = rss(run)
    member = etcd.members[0]

    polls = []  # (status, seq, timestamp, seconds into the freeze) of every GET /metrics during it
    frozen_at = time.time()
    member.freeze()
    try:
        until = time.monotonic() + freeze
        while time.monotonic() < until:
            code, body = http_get(f"{url}/metrics", timeout=5)  # 5 s: a loaded host, not a blocked endpoint
            polls.append((code, (body or {}).get("seq"), (body or {}).get("timestamp"), time.time() - frozen_at))
            time.sleep(0.05)
        memory_after = rss(run)
    finally:
        member.thaw()
    thawed_at = time.time()

    # The endpoint answered every poll, and sampling kept its schedule: every seq number in order,
    # one per interval (seqs skipped between two polls are accounted for by their timestamps).
    assert len(polls) > freeze / 0.5
    assert [poll for poll in polls if poll[0] != 200] == []
    samples = sorted({seq: ts for _, seq, ts, _ in polls}.items())
    (first_seq, first_ts), (last_seq, last_ts) = samples[0], samples[-1]
    assert last_ts - first_ts > freeze - 2
    assert (last_seq - first_seq) * INTERVAL > 0.85 * (last_ts - first_ts)
    assert len(samples) > 0.7 * (last_seq - first_seq)
    for (seq_a, ts_a), (seq_b, ts_b) in zip(samples, samples[1:]):  # 1 s: noise, not a blocked sampler
        assert abs((ts_b - ts_a) - (seq_b - seq_a) * INTERVAL) < 1.0, (seq_a, ts_a, seq_b, ts_b)
    assert memory_after - memory_before < 20 << 20, (memory_before, memory_after)

    # Once etcd is back, the record is whole and current within a few publish periods.
    record = wait_for(lambda: current_with_gap(run), 2 * PUBLISH_PERIOD + 4, "fresh metrics and the gap in etcd after the thaw")
    gap = record["status"]["last_gap"]
    expected = freeze / INTERVAL
    assert 0.6 * expected < gap["samples"] < expected + 8 / INTERVAL, gap
    # Inside the freeze, give or take one request timeout (2 s) at either end.
    assert frozen_at - 2.5 < gap["from"] < frozen_at + PUBLISH_PERIOD + 5, (frozen_at, gap)
    assert thawed_at - 5 < gap["to"] < thawed_at + 2.5, (thawed_at, gap)
    assert gap["from"] < gap["to"]
    assert "etcd does not answer" in run.output()
    # logged just after the write that found etcd back, so maybe after the record was read back
    wait_for(lambda: "etcd answers again" in run.output(), 10, "the line saying etcd answers again")


def test_etcd_down_at_start_the_task_runs_and_registers_once_etcd_is_up(private_etcd, supervised):
    etcd = private_etcd(start=False)
    run = supervise(supervised, etcd)
    found = wait_for(lambda: re.search(r"endpoint (http://\S+)", run.output()), 20, "the endpoint in the log")
    url = found.group(1)
    wait_for(lambda: http_get(f"{url}/metrics")[0] == 200, 20, "samples at the endpoint while etcd is down")
    assert http_get(f"{url}/status")[1]["state"] == "running"
    assert len(run.containers()) == 1 and run.task() is None

    etcd.start()
    record = wait_for(lambda: current_with_gap(run), 20, "the whole record, with its gap, once etcd is up")
    assert record["endpoint"]["url"] == url
    assert record["info"]["container_id"].startswith(run.containers()[0])
    assert record["status"]["last_gap"]["samples"] > 0  # the samples taken before etcd came up
    stop_and_check_the_final_record(run)


def test_required_etcd_down_fails_fast_with_one_clear_line(private_etcd, supervised):
    etcd = private_etcd(start=False)
    started = time.monotonic()
    run = supervise(supervised, etcd, "--etcd-required", "true")
    assert run.wait(20) == 1
    assert time.monotonic() - started < 10
    lines = run.output().strip().splitlines()
    errors = [line for line in lines if line.startswith("horizon: error:") or re.search(" (WARNING|ERROR) ", line)]
    assert errors == [lines[-1]], lines
    assert etcd.hosts in lines[-1] and "required = true" in lines[-1] and "start etcd" in lines[-1]
    assert "Traceback" not in run.output()
    assert run.containers() == []


def test_losing_the_member_in_use_publishing_goes_on_through_the_others(private_etcd, supervised):
    etcd = private_etcd(3)
    leader = etcd.leader()
    order = [leader] + [m for m in etcd.members if m is not leader]  # the hardest loss: used and leading
    survivor = etcd.members.index(order[1])
    run = supervise(supervised, etcd, hosts=",".join(m.address for m in order), reader=survivor)
    wait_for(lambda: current(run), 20, "the whole record in etcd")
    assert wait_for(lambda: members_in_use(run, etcd), 5, "the publisher's member") == [leader]  # the first listed

    leader.kill()
    # v3 reads are linearizable: the survivors answer once they have elected a new leader
    seq = wait_for(lambda: run.record().get("metrics", {}).get("seq"), 10, "a read from the surviving members")
    wait_for(lambda: run.record().get("metrics", {}).get("seq", 0) >= seq + 3 * PUBLISH_EVERY, 20,
             "metrics in etcd to keep advancing through the surviving members")
    used = wait_for(lambda: members_in_use(run, etcd), 5, "the publisher's new members")
    assert used and leader not in used, used
    record = wait_for(lambda: current(run), 10, "the whole, current record")
    assert run.task().ttl <= 15
    assert record["info"]["container_id"].startswith(run.containers()[0])
    stop_and_check_the_final_record(run)


def test_a_deleted_record_is_written_again_whole(private_etcd, supervised):
    etcd = private_etcd()
    run = supervise(supervised, etcd)
    wait_for(lambda: current(run), 20, "the whole record in etcd")
    task_key = run.task().key
    etcd.client().delete(task_key)
    wait_for(lambda: current(run), 2 * PUBLISH_PERIOD + 5, "the record written again")
    task = run.task()
    assert task.key == task_key and task.ttl <= 15
    assert "not as horizon left it" in run.output()


def test_a_record_expired_during_a_stall_of_the_whole_supervisor_comes_back_whole(private_etcd, supervised):
    """The host stalls (every process of the supervisor stopped longer than the TTL): the record expires,
    and afterwards comes back whole; nothing was killed as hung, since all of them were stalled alike."""
    ttl = 3
    etcd = private_etcd()
    run = supervise(supervised, etcd, "--etcd-ttl", str(ttl))
    wait_for(lambda: current(run), 20, "the whole record in etcd")
    workers = wait_for(run.all_workers, 5, "the three workers")
    lease = run.task().lease
    os.killpg(run.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: run.task() is None, ttl + 5, "the record to expire while the supervisor is stopped")
    finally:
        os.killpg(run.proc.pid, signal.SIGCONT)
    wait_for(lambda: current(run), 2 * PUBLISH_PERIOD + 5, "the whole record back, with its TTL")
    assert run.task().ttl <= ttl
    if run.api == "v3":
        assert run.task().lease != lease  # the expired lease was replaced, not reused
    assert run.workers() == workers  # the same workers recovered; nothing was killed as hung or restarted
    assert "hung" not in run.output()
