"""horizon's v2 record store against real etcd 3.4 (--enable-v2), read back with an independent client:
every write is conditional on the key's last change, so a request that a frozen member applies late
fails instead of landing over newer data, and a record changed behind our back is written again whole."""

from __future__ import annotations

import uuid
from typing import Iterator, Tuple

import pytest

from supervisor.etcd.errors import Missing
from supervisor.etcd.store import Settings
from supervisor.etcd.v2 import EtcdV2Client, V2Record
from tests.support.etcd import EtcdV2

RECORD = {"info": '{"task":"t"}', "endpoint": '{"port":1}', "running": "true", "status": '{"state":"running"}'}


@pytest.fixture
def store(services: None) -> Iterator[Tuple[V2Record, EtcdV2]]:
    client = EtcdV2Client(Settings([("127.0.0.1", 2379)], 2.0))
    prefix = f"/horizon-test/services/v2rec/{uuid.uuid4().hex[:8]}"
    reader = EtcdV2()
    yield V2Record(client, prefix), reader
    reader.delete(prefix)
    client.close()


def test_the_record_is_written_whole_in_a_directory_with_its_ttl(store) -> None:
    record, etcd = store
    record.write_all(RECORD, 15)
    node = etcd.task(record.prefix)
    assert node is not None and set(node.keys) == set(RECORD) and 13 <= node.ttl <= 15


def test_a_late_request_carries_an_old_index_and_cannot_land(store) -> None:
    """What a frozen member does with a request we gave up on: it applies it after our newer write."""
    record, etcd = store
    record.write_all(RECORD, 15)
    old = record.indexes["status"]
    record.write({"status": '{"state":"new"}'})
    status, _ = etcd.request(f"/v2/keys{record.prefix}/status?prevIndex={old}", "PUT", b'value={"state":"old"}')
    assert status == 412  # compare failed
    assert etcd.value(f"{record.prefix}/status") == {"state": "new"}


def test_a_key_changed_behind_our_back_fails_the_write_and_the_record_is_written_again(store) -> None:
    record, etcd = store
    record.write_all(RECORD, 15)
    etcd.put(f"{record.prefix}/status", '{"state":"someone else"}')
    with pytest.raises(Missing):
        record.write({"status": '{"state":"paused"}'})
    assert etcd.value(f"{record.prefix}/status") == {"state": "someone else"}
    record.write_all(dict(RECORD, status='{"state":"paused"}'), 15)
    assert etcd.value(f"{record.prefix}/status") == {"state": "paused"}
