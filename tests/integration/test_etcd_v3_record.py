"""horizon's v3 record store against real etcd (3.4 and 3.5), read back with an independent client: the
record on one lease in one transaction, guarded writes that refuse to land over a record changed behind
their back (a late request included), a lost lease replaced, and the final record on a lease of its own."""

from __future__ import annotations

import json
import uuid
from typing import Iterator, Tuple

import pytest

from supervisor.etcd.errors import Missing
from supervisor.etcd.store import Settings
from supervisor.etcd.gateway import Gateway
from supervisor.etcd.v3 import SharedLease, V3Backend, V3Record, compare_revision
from tests.support.etcd import EtcdV3, b64, range_end

SERVERS = {"etcd-3.4": "127.0.0.1:2379", "etcd-3.5": "127.0.0.1:2479"}
RECORD = {"info": '{"task":"t"}', "endpoint": '{"port":1}', "running": "true", "status": '{"state":"running"}'}


@pytest.fixture(params=sorted(SERVERS))
def store(request: pytest.FixtureRequest, services: None) -> Iterator[Tuple[V3Record, EtcdV3]]:
    host, port = SERVERS[request.param].split(":")
    backend = V3Backend(Gateway(Settings([(host, int(port))], 2.0)))
    prefix = f"/horizon-test/services/v3rec/{uuid.uuid4().hex[:8]}"
    reader = EtcdV3(f"http://{SERVERS[request.param]}")
    yield backend.record(prefix), reader
    reader.delete(prefix)
    backend.close()


def test_the_whole_record_is_written_at_one_revision_on_one_lease(store) -> None:
    record, etcd = store
    record.write_all(RECORD, 15)
    node = etcd.task(record.prefix)
    assert node is not None and set(node.keys) == set(RECORD)
    assert node.lease == record.lease and node.ttl is not None and 13 <= node.ttl <= 15
    head = record.prefix + "/"
    assert len({kv.mod_revision for kv in etcd.kvs(head, range_end(head))}) == 1  # one transaction
    assert sorted(etcd.keys_with_lease(record.lease)) == sorted(f"{record.prefix}/{k}" for k in RECORD)


def test_a_guarded_write_changes_the_key_and_keeps_the_lease(store) -> None:
    record, etcd = store
    record.write_all(RECORD, 15)
    record.write({"status": '{"state":"paused"}'})
    node = etcd.task(record.prefix)
    assert node.keys["status"] == {"state": "paused"} and node.lease == record.lease


@pytest.mark.parametrize("change", ["deleted", "overwritten", "one key deleted"])
def test_a_record_changed_behind_our_back_fails_the_write_and_is_written_again_whole(store, change) -> None:
    record, etcd = store
    record.write_all(RECORD, 15)
    if change == "deleted":
        etcd.delete(record.prefix)
    elif change == "overwritten":
        etcd.put(f"{record.prefix}/status", '{"state":"someone else"}')
    else:
        etcd.post("/v3/kv/deleterange", {"key": b64(f"{record.prefix}/info")})
    with pytest.raises(Missing):
        record.write({"status": '{"state":"paused"}'})
    assert etcd.task(record.prefix) is None or etcd.task(record.prefix).keys.get("status") != {"state": "paused"}
    record.write_all(dict(RECORD, status='{"state":"paused"}'), 15)
    node = etcd.task(record.prefix)
    assert set(node.keys) == set(RECORD) and node.keys["status"] == {"state": "paused"} and node.lease == record.lease


def test_a_late_request_carries_an_old_compare_and_cannot_land(store) -> None:
    """What a frozen member does with a request we gave up on: it applies it after our newer writes."""
    record, etcd = store
    record.write_all(RECORD, 15)
    old = dict(record.revisions)
    late = {"compare": [compare_revision(key, rev) for key, rev in old.items()],
            "success": [{"request_put": {"key": b64(f"{record.prefix}/status"), "value": b64('{"state":"old"}'),
                                         "lease": str(record.lease)}}]}
    record.write({"status": '{"state":"new"}'})
    status, answer = etcd.post("/v3/kv/txn", late)
    assert status == 200 and not answer.get("succeeded")
    assert etcd.value(f"{record.prefix}/status") == {"state": "new"}


def test_the_keep_alive_renews_the_lease_and_notices_a_deleted_record(store) -> None:
    record, etcd = store
    record.write_all(RECORD, 15)
    record.keep_alive()
    etcd.delete(record.prefix)
    with pytest.raises(Missing):
        record.keep_alive()


def test_a_lost_lease_is_replaced_and_the_record_rewritten_on_the_new_one(store) -> None:
    record, etcd = store
    record.write_all(RECORD, 15)
    lost = record.lease
    assert etcd.revoke(lost) == 200  # as if it had expired: its keys are gone with it
    with pytest.raises(Missing):
        record.keep_alive()
    record.write_all(RECORD, 15)
    node = etcd.task(record.prefix)
    assert node.lease not in (None, lost) and set(node.keys) == set(RECORD)


def test_the_final_record_moves_to_a_lease_of_its_own_and_the_live_one_is_revoked(store) -> None:
    record, etcd = store
    record.write_all(RECORD, 15)
    live = record.lease
    record.write_all(dict(RECORD, running="false", status='{"state":"exited"}'), 600)
    node = etcd.task(record.prefix)
    assert node.lease == record.lease != live and 590 <= node.ttl <= 600
    assert node.keys["running"] is False and etcd.lease_ttl(live) is None
    assert json.loads(etcd.raw(f"{record.prefix}/status") or "{}") == {"state": "exited"}


@pytest.fixture(params=sorted(SERVERS))
def shared_store(request: pytest.FixtureRequest, services: None) -> Iterator[Tuple[V3Backend, str, EtcdV3]]:
    host, port = SERVERS[request.param].split(":")
    gateway = Gateway(Settings([(host, int(port))], 2.0))
    backend = V3Backend(gateway, SharedLease(gateway, 15))
    prefix = f"/horizon-test/services/v3shared-{uuid.uuid4().hex[:8]}"
    reader = EtcdV3(f"http://{SERVERS[request.param]}")
    yield backend, prefix, reader
    reader.delete(prefix)
    backend.close()


def test_a_host_trees_records_share_one_live_lease_and_the_final_one_leaves_it(shared_store) -> None:
    backend, prefix, etcd = shared_store
    first, second = backend.record(f"{prefix}/a"), backend.record(f"{prefix}/b")
    first.write_all(RECORD, 15)
    second.write_all(RECORD, 15)
    shared = first.lease
    assert shared is not None and second.lease == shared and etcd.task(second.prefix).lease == shared
    assert len(etcd.keys_with_lease(shared)) == 2 * len(RECORD)
    first.keep_alive()
    second.keep_alive()  # renewed once for both: the second finds it renewed just now
    first.write_all(dict(RECORD, running="false", status='{"state":"exited"}'), 600)
    assert first.lease != shared and etcd.lease_ttl(shared) is not None  # never revoked by one record
    assert etcd.task(second.prefix).lease == shared and sorted(etcd.keys_with_lease(shared)) == sorted(
        f"{second.prefix}/{key}" for key in RECORD)


def test_a_lost_shared_lease_is_granted_again_once_for_every_record(shared_store) -> None:
    backend, prefix, etcd = shared_store
    records = [backend.record(f"{prefix}/{name}") for name in "abc"]
    for record in records:
        record.write_all(RECORD, 15)
    lost = records[0].lease
    assert etcd.revoke(lost) == 200  # every record is gone with it
    with pytest.raises(Missing):
        records[0].write({"status": '{"state":"paused"}'})
    for record in records:
        with pytest.raises(Missing):
            record.keep_alive() if record is not records[0] else record.write({"status": "{}"})
        record.write_all(RECORD, 15)
    leases = {etcd.task(record.prefix).lease for record in records}
    assert len(leases) == 1 and lost not in leases and None not in leases


def test_a_new_run_of_a_task_leaves_no_key_of_the_last_runs_final_record(store) -> None:
    """A task run again under its name while its final record is kept: the keys the new run has not written
    yet (its metrics, before its first sample) go, so the record is one run's, on one lease."""
    record, etcd = store
    record.write_all(dict(RECORD, metrics='{"seq":9}'), 15)
    record.write_all(dict(RECORD, running="false", status='{"state":"exited"}', metrics='{"seq":9}'), 600)
    again = V3Backend(record.gateway).record(record.prefix)  # the next supervisor of the task
    again.write_all(RECORD, 15)
    node = etcd.task(record.prefix)
    assert set(node.keys) == set(RECORD) and node.lease == again.lease and node.leases == {again.lease}


def test_a_host_trees_writes_go_together_and_a_changed_record_is_left_to_its_own_write(shared_store) -> None:
    """One transaction for many records' metrics, read back at one revision by an independent client; a
    record deleted behind our back keeps the transaction from landing, and its own write then says so."""
    backend, prefix, etcd = shared_store
    records = [backend.record(f"{prefix}/{name}") for name in "abcd"]
    for record in records:
        record.write_all(RECORD, 15)
    landed = backend.write_together([(record, {"metrics": f'{{"seq":{i}}}'}) for i, record in enumerate(records)])
    assert landed == records
    revisions = {kv.mod_revision for kv in etcd.kvs(prefix + "/", range_end(prefix + "/")) if kv.key.endswith("/metrics")}
    assert len(revisions) == 1  # one transaction
    assert [etcd.task(record.prefix).keys["metrics"] for record in records] == [{"seq": i} for i in range(4)]
    etcd.delete(records[1].prefix)
    assert backend.write_together([(record, {"metrics": '{"seq":9}'}) for record in records]) == []
    assert etcd.task(records[0].prefix).keys["metrics"] == {"seq": 0}  # nothing landed
    with pytest.raises(Missing):
        records[1].write({"metrics": '{"seq":9}'})
    for record in (records[0], records[2], records[3]):
        record.write({"metrics": '{"seq":9}'})
        assert etcd.task(record.prefix).keys["metrics"] == {"seq": 9}
