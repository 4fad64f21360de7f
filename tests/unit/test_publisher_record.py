"""The publisher keeps the whole record in etcd: a record deleted or expired behind its back comes back
complete and with its TTL, never as a partial directory that lives forever; an outage is summarised
as ``last_gap``. The fake mimics etcd v2 where it matters: writing a key silently creates its missing
directory without a TTL, refreshing a TTL-less directory succeeds, and a conditional write fails when
the key's index is not the one expected."""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional, Tuple

import pytest

from supervisor.config import build
from supervisor.etcd.errors import Missing, Refused, Unanswered, Unavailable
from supervisor.etcd.v2 import V2Backend
from workers.publisher import RETRY_MIN, TaskRecord

PREFIX = "/ns/services/web/task-1"
ENDPOINT = {"host": "127.0.0.1", "port": 8080, "url": "http://127.0.0.1:8080"}


class FakeEtcd:
    """Directories with an optional TTL and their keys, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.dirs: Dict[str, Optional[float]] = {}  # path -> expiry (None: no TTL)
        self.keys: Dict[str, str] = {}
        self.indexes: Dict[str, int] = {}  # key -> its last change's index
        self.index = 0
        self.down = False
        self.refusing = False  # answers, but not to our credentials
        self.seen: List[Dict[str, Any]] = []  # the record after every write, as a reader could see it
        self.delete_after_puts: Optional[int] = None  # someone deletes the record after this many puts
        self.requests = 0
        self.error: Optional[str] = None  # a member answers every request with this error

    def expire(self) -> None:
        for path, expiry in list(self.dirs.items()):
            if expiry is not None and expiry <= self.now:
                self.delete(path)

    def delete(self, path: str) -> None:
        self.dirs.pop(path, None)
        for key in [k for k in self.keys if k.startswith(path + "/")]:
            del self.keys[key]
            del self.indexes[key]

    def _check(self) -> None:
        self.requests += 1
        if self.down:
            raise Unanswered("127.0.0.1:2379: timed out")
        if self.error:
            raise Unavailable(f"127.0.0.1:2379: {self.error}")
        if self.refusing:
            raise Refused("127.0.0.1:2379: The request requires user authentication")
        self.expire()

    def put_dir(self, path: str, ttl: int, refresh: bool = False) -> None:
        self._check()
        if refresh and path not in self.dirs:
            raise Missing(path)
        self.dirs[path] = self.now + ttl

    def put_guarded(self, key: str, value: str, index: Optional[int]) -> int:
        """etcd v2's conditional write (prevIndex, or prevExist=false for a new key): an implicit
        directory without a TTL is created around a new key, as etcd does."""
        self._check()
        if index is None and key in self.keys or index is not None and self.indexes.get(key) != index:
            raise Missing(f"{key} changed")
        self.dirs.setdefault(key.rsplit("/", 1)[0], None)
        self.keys[key] = value
        self.index += 1
        self.indexes[key] = self.index
        self.seen.append(self.record())
        if self.delete_after_puts is not None:
            self.delete_after_puts -= 1
            if self.delete_after_puts == 0:
                self.delete(PREFIX)
        return self.index

    def listing(self, path: str) -> Tuple[Optional[int], Dict[str, int]]:
        self._check()
        if path not in self.dirs:
            raise Missing(path)
        expiry = self.dirs[path]
        names = {k.rsplit("/", 1)[1]: self.indexes[k] for k in self.keys if k.startswith(path + "/")}
        return (None if expiry is None else int(expiry - self.now)), names

    def read(self, path: str, **options: Any) -> Any:
        """tidy's read of the namespace's services/ and control/: the fake keeps no directory above a
        task's, so there is nothing to tidy."""
        self._check()
        assert path not in self.dirs, f"the fake cannot read the directory {path}"
        raise Missing(path)

    def ping(self, path: str) -> None:
        self._check()

    def describe(self) -> str:
        return "127.0.0.1:2379"

    def record(self) -> Dict[str, Any]:
        self.expire()
        return {k.rsplit("/", 1)[1]: json.loads(v) for k, v in self.keys.items() if k.startswith(PREFIX + "/")}


def make(etcd: FakeEtcd, publish_every: int = 1, interval: float = 1.0, name: str = "task-1") -> TaskRecord:
    values = {
        "task": {"image": "busybox", "command": "sleep 1", "service": "web", "name": name},
        "etcd": {"namespace": "/ns", "ttl": "15", "api": "v2"},
        "metrics": {"interval": str(interval), "publish_every": str(publish_every)},
    }
    config = build(values, lambda section, key: f"[{section}] {key}", "test", None)
    assert config.task_prefix == PREFIX.replace("task-1", name)
    return TaskRecord(config, V2Backend(etcd), ENDPOINT, clock=lambda: etcd.now)  # type: ignore[arg-type]


def sample(seq: int) -> Dict[str, Any]:
    return {"seq": seq, "timestamp": 1000.0 + seq, "container": {}}


@pytest.fixture
def running():
    """A publisher whose running task's full record is in the fake etcd."""
    etcd = FakeEtcd()
    publisher = make(etcd)
    publisher.take("info", {"task": "task-1"})
    publisher.take("status", {"state": "running"})
    publisher.take("metrics", sample(1))
    publisher.publish(etcd.now)
    assert set(etcd.record()) == {"info", "endpoint", "metrics", "status", "running"}
    return etcd, publisher


def step(etcd: FakeEtcd, publisher: TaskRecord, dt: float = 1.0) -> None:
    """Let time pass, then run the publisher's loop body until it rests (a record found changed is
    written again at once, and again after a short back-off if it changed once more)."""
    etcd.now += dt
    for _ in range(3):
        if publisher.retry_at - etcd.now <= RETRY_MIN:
            etcd.now = max(etcd.now, publisher.retry_at)
        if etcd.now >= publisher.retry_at:
            publisher.publish(etcd.now)


@pytest.mark.parametrize("how", ["deleted", "expired"])
def test_a_vanished_record_comes_back_whole_with_its_ttl(running, how):
    etcd, publisher = running
    if how == "deleted":
        etcd.delete(PREFIX)
    else:
        etcd.now += 16  # the TTL lapsed while the publisher was stalled
    publisher.take("metrics", sample(2))
    step(etcd, publisher)
    record = etcd.record()
    assert set(record) == {"info", "endpoint", "metrics", "status", "running"}
    assert record["metrics"]["seq"] == 2 and record["running"] is True
    assert etcd.dirs[PREFIX] is not None  # never a TTL-less directory that outlives the supervisor


def test_a_vanished_record_is_noticed_by_the_refresh_when_nothing_changes(running):
    etcd, publisher = running
    etcd.delete(PREFIX)
    step(etcd, publisher, 6)  # past ttl/3: the refresh finds the directory gone
    assert set(etcd.record()) == {"info", "endpoint", "metrics", "status", "running"}


def test_keys_are_created_only_with_their_directory():
    etcd = FakeEtcd()
    publisher = make(etcd)
    publisher.take("info", {"task": "task-1"})
    publisher.take("status", {"state": "running"})
    publisher.publish(etcd.now)
    assert set(etcd.record()) == {"info", "endpoint", "status", "running"}
    etcd.delete(PREFIX)  # gone just before the first sample arrives
    publisher.take("metrics", sample(1))
    step(etcd, publisher)
    assert set(etcd.record()) == {"info", "endpoint", "metrics", "status", "running"}
    assert etcd.dirs[PREFIX] is not None


def test_an_outage_is_summarised_by_sequence_number_and_then_everything_is_written(running):
    etcd, publisher = running
    etcd.down = True
    publisher.take("metrics", sample(2))
    step(etcd, publisher)
    assert publisher.connected is False
    for seq in (3, 4, 9, 10):  # 5..8 were coalesced away on the way to a stalled publisher
        publisher.take("metrics", sample(seq))
    etcd.down = False
    step(etcd, publisher, 3)
    status = etcd.record()["status"]
    assert status["last_gap"] == {"samples": 9, "from": 1002.0, "to": 1010.0}  # 2 too: it was never written
    assert etcd.record()["metrics"]["seq"] == 10 and publisher.connected is True


@pytest.mark.parametrize("after_puts", [1, 2, 4])
def test_a_record_deleted_in_the_middle_of_a_full_sync_is_written_again(running, after_puts):
    etcd, publisher = running
    etcd.delete(PREFIX)
    etcd.delete_after_puts = after_puts  # and again, while the publisher writes it back
    publisher.take("metrics", sample(2))
    step(etcd, publisher)
    assert set(etcd.record()) == {"info", "endpoint", "metrics", "status", "running"}
    assert etcd.dirs[PREFIX] is not None and publisher.synced


@pytest.mark.parametrize("interval, publish_every, longest", [(0.05, 1, 0.2), (0.2, 5, 1.0), (1.0, 5, 2.0)])
def test_retries_back_off_but_never_beyond_a_publish_period(interval, publish_every, longest):
    etcd = FakeEtcd()
    etcd.down = True
    publisher = make(etcd, publish_every, interval)
    delays = []
    for _ in range(10):
        etcd.now = publisher.retry_at
        publisher.publish(etcd.now)
        delays.append(round(publisher.retry_at - etcd.now, 6))
    assert delays[0] == 0.2 and delays == sorted(delays) and delays[-1] == longest


def test_running_is_never_behind_the_state():
    """No multi-key transactions in etcd v2: ``running`` is written first, so a reader who sees a new
    state in ``status`` already sees ``running`` agree (and a dead task stops showing as running first)."""
    etcd = FakeEtcd()
    publisher = make(etcd)
    publisher.take("info", {"task": "task-1"})
    for state in ("starting", "running", "exited"):
        publisher.take("status", {"state": state})
        step(etcd, publisher)
    states = [record.get("status", {}).get("state") for record in etcd.seen]
    assert [s for i, s in enumerate(states) if s and s != states[i - 1]] == ["starting", "running", "exited"]
    for before, after in zip(etcd.seen, etcd.seen[1:]):
        state = after.get("status", {}).get("state")
        if state and state != before.get("status", {}).get("state"):
            assert after["running"] is (state == "running"), after


def test_a_refusal_is_told_apart_from_silence_and_forgotten_once_accepted():
    etcd = FakeEtcd()
    publisher = make(etcd)
    etcd.refusing = True
    publisher.publish(etcd.now)  # before the container exists: the ping is refused
    assert publisher.connected is False and "authentication" in str(publisher.refused)
    etcd.refusing, etcd.down = False, True
    step(etcd, publisher)
    assert publisher.connected is False and publisher.refused is None  # silence is not a refusal
    etcd.down = False
    step(etcd, publisher, 3)
    assert publisher.connected is True and publisher.refused is None


def test_etcd_keeps_the_20_busiest_processes_and_how_many_there_are(running):
    etcd, publisher = running
    processes = [{"pid": pid, "name": "worker", "cpu_percent": float(pid % 97)} for pid in range(1, 401)]
    publisher.take("metrics", dict(sample(2), processes=processes, process_count=400))
    step(etcd, publisher)
    stored = etcd.record()["metrics"]
    assert len(stored["processes"]) == 20 and stored["process_count"] == 400
    assert sorted(p["cpu_percent"] for p in stored["processes"]) == sorted(p["cpu_percent"] for p in processes)[-20:]
    assert len(publisher.documents["metrics"]["processes"]) == 400  # trimmed on the way to etcd only


def test_a_sample_taken_before_the_first_answer_from_etcd_counts_in_the_gap():
    etcd = FakeEtcd()
    etcd.down = True
    publisher = make(etcd)
    publisher.take("info", {"task": "task-1"})
    publisher.take("status", {"state": "running"})
    publisher.take("metrics", sample(1))  # before the publisher ever heard from etcd
    publisher.publish(etcd.now)
    publisher.publish(etcd.now + 0.5)  # the same sample failing again counts once
    etcd.down = False
    step(etcd, publisher, 3)
    assert etcd.record()["status"]["last_gap"] == {"samples": 1, "from": 1001.0, "to": 1001.0}


def host_tree_records(etcd: FakeEtcd) -> Dict[Any, TaskRecord]:
    """Three records of one host tree, each written whole."""
    from supervisor.frames import TaskKey

    records = {TaskKey("web", name): make(etcd, name=name) for name in ("task-1", "task-2", "task-3")}
    for record in records.values():
        record.take("info", {"task": "t"})
        record.take("status", {"state": "running"})
        record.take("metrics", sample(1))
        record.publish(etcd.now)
    return records


def one_turn(etcd: FakeEtcd, records: Dict[Any, TaskRecord]) -> int:
    """One turn of the host tree's publisher over ``records``, each with a new sample; the requests it made."""
    from types import SimpleNamespace

    from workers.publisher import PublisherWorker

    def wait() -> None:
        raise StopIteration

    worker = SimpleNamespace(inbox=SimpleNamespace(read=lambda: [], eof=False, fd=0),
                             outbox=SimpleNamespace(pending=False, fd=1, send=lambda *args: None),
                             watch=SimpleNamespace(gone=lambda: False), pulse=SimpleNamespace(beat=lambda: None))
    publisher = PublisherWorker(records, worker, V2Backend(etcd), host_tree=True)  # type: ignore[arg-type]
    publisher.wait = wait  # type: ignore[method-assign]
    etcd.now += 1
    for record in records.values():
        record.take("metrics", sample(2))
    before = etcd.requests
    with pytest.raises(StopIteration):
        publisher.run()
    return etcd.requests - before


@pytest.mark.parametrize("error", [None, "etcdserver: request is too large"])
def test_in_a_host_tree_one_unanswered_request_puts_every_record_in_the_outage(error):
    """Records on one connection share etcd's silence: the next record does not time out in turn, and
    each counts its gap from the first failure, so each record's last_gap tells the whole outage."""
    etcd = FakeEtcd()
    records = host_tree_records(etcd)
    etcd.down, etcd.error = error is None, error
    requests = one_turn(etcd, records)
    if error:  # an error a member answered with may be that request's own: every record tries for itself
        assert requests == 3
        return
    assert requests == 1  # one request timed out; the others waited for its retry
    assert all(record.connected is False and not record.synced for record in records.values())
    assert len({record.retry_at for record in records.values()}) == 1
    for seq in (3, 4, 5):
        etcd.now += 1
        for record in records.values():
            record.take("metrics", sample(seq))
    etcd.down = False
    for record in records.values():
        step(etcd, record)
    for record in records.values():
        status = json.loads(etcd.keys[record.prefix + "/status"])
        assert status["last_gap"] == {"samples": 4, "from": 1002.0, "to": 1005.0}, record.prefix
        assert record.connected is True


def test_a_record_found_changed_while_it_is_written_whole_is_due_again_at_once(running):
    """Nothing dirty (an outage shared from another record) and the refresh seconds away: the rewrite after
    Missing is due now, not at the refresh (a host tree's publisher looks only at the records due)."""
    etcd, publisher = running
    etcd.now = 1.0
    publisher.lose_sync()
    etcd.delete_after_puts = 1  # someone deletes the record in the middle of the full sync
    publisher.publish(etcd.now)
    assert not publisher.synced and not publisher.dirty and publisher.next_refresh > etcd.now
    assert publisher.due(etcd.now, etcd.now + 100) == etcd.now


def test_a_shared_outage_is_said_to_end_once_by_the_first_record_back(caplog):
    """The record that logged the outage may come back last (each record writes itself whole again): the
    line saying etcd answers again comes with the first record back, and only once."""
    etcd = FakeEtcd()
    tree = host_tree_records(etcd)
    records = list(tree.values())
    etcd.down = True
    with caplog.at_level(logging.INFO, logger="publisher"):
        assert one_turn(etcd, tree) == 1
        etcd.down = False
        last = records[-1]  # a record that shared the outage, not the one whose request timed out
        step(etcd, last)
        assert last.connected is True and caplog.text.count("etcd answers again") == 1
        for record in records[:-1]:
            step(etcd, record)
    assert all(record.connected for record in records) and caplog.text.count("etcd answers again") == 1
    assert caplog.text.count("etcd does not answer") == 1


def test_a_record_found_changed_after_an_outage_it_found_is_no_outage_to_share():
    """etcd answered (the record is not as horizon left it): the publisher must not put every other record of
    the tree in an outage again, as it would if the last silence still stood for this request."""
    etcd = FakeEtcd()
    record = next(iter(host_tree_records(etcd).values()))
    etcd.down = True
    record.take("metrics", sample(2))
    record.publish(etcd.now)
    assert record.unanswered
    etcd.down = False
    etcd.delete_after_puts = 1  # someone deletes the record in the middle of the full sync
    etcd.now = record.retry_at
    record.publish(etcd.now)
    assert not record.synced and record.rewriting  # Missing: etcd answered
    assert not record.unanswered
