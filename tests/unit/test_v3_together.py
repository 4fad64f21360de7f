"""A host tree's guarded writes go to etcd v3 together: one transaction holds as many records as etcd's
--max-txn-ops allows, lands only where every record is as its writer left it, and a transaction that
fails is left to each record's own write (which tells whose record changed)."""

from __future__ import annotations

import base64
from typing import Any, Dict, List

import pytest

from supervisor.etcd.errors import Missing, Unavailable
from supervisor.etcd.v3 import MAX_TXN_OPS, V3Backend, V3Record


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


class FakeGateway:
    """kv/txn with MOD compares and lease-bound puts; every other call answers as etcd would to the record."""

    def __init__(self) -> None:
        self.revision = 1
        self.mods: Dict[str, int] = {}
        self.txns: List[Dict[str, Any]] = []
        self.down = False

    def call(self, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        if self.down:
            raise Unavailable("127.0.0.1:2379: timed out")
        if path == "kv/txn":
            self.txns.append(body)
            assert len(body["compare"]) <= MAX_TXN_OPS and len(body["success"]) <= MAX_TXN_OPS
            if not all(self.mods.get(unb64(c["key"]), 0) == int(c["mod_revision"]) for c in body["compare"]):
                return {"header": {"revision": str(self.revision)}}
            self.revision += 1
            for op in body["success"]:
                self.mods[unb64(op["request_put"]["key"])] = self.revision
            return {"header": {"revision": str(self.revision)}, "succeeded": True}
        if path == "lease/grant":
            return {"ID": "7"}
        if path == "kv/range":
            return {}
        raise AssertionError(path)

    def describe(self) -> str:
        return "127.0.0.1:2379"


def records(gateway: FakeGateway, count: int) -> List[V3Record]:
    backend = V3Backend(gateway)  # type: ignore[arg-type]
    made = [backend.record(f"/ns/services/web/t{i}") for i in range(count)]
    for record in made:
        record.write_all({"info": "{}", "status": "{}", "running": "true", "metrics": "{}", "endpoint": "{}"}, 15)
    return made


def test_many_records_go_in_few_transactions_each_within_etcds_limit() -> None:
    gateway = FakeGateway()
    made = records(gateway, 60)  # 5 compares each: 25 records a transaction
    gateway.txns.clear()
    landed = V3Backend(gateway).write_together([(record, {"metrics": '{"seq": 2}'}) for record in made])  # type: ignore[arg-type]
    assert landed == made and len(gateway.txns) == 3
    assert all(gateway.mods[f"{record.prefix}/metrics"] == record.revisions[f"{record.prefix}/metrics"] for record in made)
    made[0].write({"metrics": '{"seq": 3}'})  # the next guarded write of its own still lands: revisions kept


def test_a_record_changed_behind_our_back_keeps_its_chunk_from_landing_and_its_own_write_tells() -> None:
    gateway = FakeGateway()
    made = records(gateway, 30)
    gateway.mods[f"{made[3].prefix}/status"] += 100  # someone else wrote it
    landed = V3Backend(gateway).write_together([(record, {"metrics": '{"seq": 2}'}) for record in made])  # type: ignore[arg-type]
    assert landed == made[25:]  # the first chunk (0..24) failed as a whole; the second landed
    made[4].write({"metrics": '{"seq": 2}'})
    with pytest.raises(Missing):
        made[3].write({"metrics": '{"seq": 2}'})


def test_etcd_silent_is_unavailable_unless_a_transaction_landed_before() -> None:
    gateway = FakeGateway()
    made = records(gateway, 55)  # three transactions' worth
    gateway.down = True
    with pytest.raises(Unavailable):
        V3Backend(gateway).write_together([(record, {"metrics": "{}"}) for record in made])  # type: ignore[arg-type]
    gateway.down = False
    gateway.txns.clear()
    answer = gateway.call
    calls: List[str] = []

    def silent_after_one(path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        calls.append(path)
        gateway.down = bool(gateway.txns)
        return answer(path, body)

    gateway.call = silent_after_one  # type: ignore[method-assign]
    landed = V3Backend(gateway).write_together([(record, {"metrics": "{}"}) for record in made])  # type: ignore[arg-type]
    assert landed == made[:25]  # the rest write on their own once etcd answers
    assert calls == ["kv/txn", "kv/txn"]  # after the first silence no other is tried: no timeout after timeout


def test_a_host_trees_samples_wait_a_little_for_each_other_and_a_status_never_waits() -> None:
    from types import SimpleNamespace

    from supervisor.config import build
    from workers.publisher import HOLD_MAX, PublisherWorker, TaskRecord

    gateway = FakeGateway()
    backend = V3Backend(gateway)  # type: ignore[arg-type]
    clock = [100.0]

    def record(name: str) -> TaskRecord:
        values = {"task": {"image": "busybox", "command": "sleep 1", "service": "web", "name": name},
                  "etcd": {"namespace": "/ns", "api": "v3"}, "metrics": {"interval": "1.0"}}
        made = TaskRecord(build(values, lambda section, key: f"[{section}] {key}", "test", None), backend,
                          {"url": "http://127.0.0.1:1"}, clock=lambda: clock[0], holds=True)
        made.take("info", {"task": name})
        made.take("status", {"state": "running"})
        made.take("metrics", {"seq": 0})
        made.publish(clock[0])  # the whole record (a new key is never held)
        return made

    first, second = record("a"), record("b")
    worker = SimpleNamespace(inbox=None, outbox=None, watch=None, pulse=None)
    publisher = PublisherWorker({}, worker, backend, host_tree=True)  # type: ignore[arg-type]
    assert first.hold == HOLD_MAX  # half of the 5 s publish period, at most HOLD_MAX
    gateway.txns.clear()
    first.take("metrics", {"seq": 1})
    clock[0] += 0.4
    second.take("metrics", {"seq": 1})
    for made in (first, second):
        publisher.write_together([first, second], clock[0])
        made.publish(clock[0])
    assert gateway.txns == [] and first.due(clock[0], 1e9) == 100.0 + HOLD_MAX
    clock[0] = 100.0 + HOLD_MAX
    publisher.write_together([first, second], clock[0])
    assert len(gateway.txns) == 1 and not first.dirty and not second.dirty  # both in one transaction
    first.take("status", {"state": "paused"})
    first.publish(clock[0])
    assert len(gateway.txns) == 2 and not first.dirty  # a state change goes at once
