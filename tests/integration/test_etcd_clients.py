"""The tests' own etcd helpers (tests/support) against the real servers, on both APIs: what every other
test reads a record with must read it right. v3 records are checked against etcd's own etcdctl too."""

from __future__ import annotations

import json
import uuid
from typing import Iterator, Optional

import pytest

from tests.support import ETCD_HOSTS, ETCD_V3, NAMESPACE, POLITE
from tests.support.etcd import EtcdV3, TaskNode, etcd_client, etcdctl, etcdctl_lease_keys, etcdctl_record
from tests.support.etcd_cluster import Cluster
from tests.support.ini import write_ini
from tests.support.waiting import wait_for


@pytest.fixture
def prefix(services: None) -> Iterator[str]:
    """A service prefix of its own (and a sibling that merely starts alike), cleaned on both APIs."""
    prefix = f"{NAMESPACE}/services/c{uuid.uuid4().hex[:8]}"
    yield prefix
    for api in ETCD_HOSTS:
        for key in (prefix, f"{prefix}x"):
            etcd_client(api).delete(key)


def test_put_value_tasks_delete_and_history_on_the_shared_etcd(prefix, etcd_api):
    etcd = etcd_client(etcd_api)
    assert etcd.api == etcd_api and etcd.address == ETCD_HOSTS[etcd_api]
    history = etcd.history(prefix)
    status = {"state": "running", "exit_code": None}
    assert etcd.put(f"{prefix}/t1/status", json.dumps(status)) in (200, 201)
    assert etcd.put(f"{prefix}/t1/running", "true") in (200, 201)
    assert etcd.put(f"{prefix}/t2/running", "false") in (200, 201)
    assert etcd.put(f"{prefix}x/t1/running", "true") in (200, 201)  # a sibling service, not ours
    assert etcd.value(f"{prefix}/t1/status") == status and etcd.value(f"{prefix}/none") is None

    tasks = etcd.tasks(prefix)
    assert [t.key for t in tasks] == [f"{prefix}/t1", f"{prefix}/t2"]
    assert tasks[0].keys == {"status": status, "running": True} and tasks[1].keys == {"running": False}
    assert tasks[0].ttl is None and tasks[0].lease is None  # written without TTL or lease
    assert etcd.task(f"{prefix}/t2") == tasks[1] and etcd.task(f"{prefix}/t3") is None

    etcd.delete(prefix)
    assert etcd.tasks(prefix) == [] and etcd.value(f"{prefix}/t1/running") is None
    assert etcd.value(f"{prefix}x/t1/running") is True  # delete() spares a sibling that starts alike
    history.stop()
    assert history.values("status") == [status] and history.values("running") == [True, False]
    assert all(c.key == prefix or c.key.startswith(f"{prefix}/") for c in history.events)  # not the sibling's
    assert history.removals() and all(r.startswith("delete ") for r in history.removals())
    etcd.delete(prefix)  # nothing left: never fails


def test_v3_lease_record_read_by_us_and_by_etcdctl(prefix):
    etcd = EtcdV3()
    history = etcd.history(prefix)
    lease = etcd.grant(30)
    task = f"{prefix}/t1"
    for name, value in (("status", {"state": "running"}), ("running", True)):
        assert etcd.put(f"{task}/{name}", json.dumps(value), lease) == 200
    node = etcd.task(task)
    assert node is not None and node.lease == lease and node.leases == {lease} and 25 < node.ttl <= 30
    assert etcd.lease_ttl(lease) == node.ttl or etcd.lease_ttl(lease) == node.ttl - 1
    assert etcdctl_record(ETCD_V3, task) == node.keys == {"status": {"state": "running"}, "running": True}
    keys = [f"{task}/running", f"{task}/status"]
    assert etcdctl_lease_keys(ETCD_V3, lease) == etcdctl_lease_keys(ETCD_V3, f"{lease:x}") == keys
    assert etcd.keys_with_lease(lease) == keys

    assert etcd.put(f"{task}/metrics", "{}") == 200  # no lease: the record is no longer on one lease
    mixed = etcd.task(task)
    assert mixed is not None and mixed.lease is None and mixed.leases == {lease, 0} and mixed.ttl is not None
    assert etcd.put(f"{task}/info", "{}", lease=123456789) == 404  # an unknown lease: etcd's 404 / code 5

    etcd.delete(f"{task}/metrics")
    assert etcd.revoke(lease) == 200 and etcd.revoke(lease) == 404
    assert etcd.task(task) is None and etcd.lease_ttl(lease) is None and etcd.keys_with_lease(lease) == []
    assert etcdctl_lease_keys(ETCD_V3, lease) == []
    history.stop()
    assert [c.action for c in history.events] == ["put", "put", "put", "delete", "delete", "delete"]
    assert sorted(history.removals()[1:]) == [f"delete {key}" for key in keys]  # the revocation deleted them


def test_etcdctl_is_etcd_3_5_and_speaks_v3():
    done = etcdctl(ETCD_V3, "version")
    assert done.returncode == 0 and "etcdctl version: 3.5." in done.stdout


@pytest.mark.parametrize("size", [1, 3], ids=["one", "three"])
def test_a_private_cluster_of_each_api(services, etcd_api, size):
    cluster = Cluster(size, api=etcd_api)
    try:
        cluster.start()
        etcd = cluster.client(size - 1)
        assert etcd.api == etcd_api
        assert etcd.put("/probe", '"yes"') in (200, 201)
        # v2 reads from the member's own copy: another member's write shows there soon, not at once
        wait_for(lambda: cluster.client(0).value("/probe") == "yes", 5, "the write on another member")
        version = etcd.request("/version")[1]["etcdserver"]
        v2_keys = etcd.request("/v2/keys/")[0]
        if etcd_api == "v3":  # the stock set-up: etcd 3.5, and no v2 API
            assert version.startswith("3.5.") and v2_keys == 404
        else:
            assert version.startswith("3.4.") and v2_keys == 200
        leader = cluster.leader()
        infos = [m.info() for m in cluster.members]
        assert sorted(i.name for i in infos if i) == sorted(m.name for m in cluster.members)
        assert [i.name for i in infos if i and i.leader] == [leader.name]
        if size > 1:  # a new election once the leader is gone
            leader.kill()
            assert cluster.leader(timeout=20) is not leader
    finally:
        cluster.stop()


def test_a_supervisor_on_each_api_is_read_by_the_helpers(supervised, tmp_path, etcd_api):
    """main(): the run's API and shared etcd; write_ini(): the same through a file. Both tasks' records
    read whole, with a TTL (on v3: every key on one lease, as etcdctl sees it too)."""
    by_flags = supervised().main(POLITE)
    by_file = supervised()
    by_file.ini(write_ini(tmp_path, by_file.service, POLITE, api=etcd_api))
    for run in (by_flags, by_file):
        assert run.api == etcd_api
        run.wait_state("running", 30)
        node = wait_for(lambda: whole(run.task()), 10, "the whole record")
        assert 0 < node.ttl <= 15
        if etcd_api == "v3":
            assert node.lease is not None and node.leases == {node.lease}
            on_lease = etcdctl_lease_keys(ETCD_V3, node.lease)
            assert {f"{node.key}/{name}" for name in node.keys} <= set(on_lease)
            assert etcdctl_record(ETCD_V3, node.key)["info"] == node.keys["info"]


def whole(node: Optional[TaskNode]) -> Optional[TaskNode]:
    return node if node and {"info", "endpoint", "status", "running"} <= set(node.keys) else None
