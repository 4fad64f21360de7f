"""horizon's v2 tidy against real etcd 3.4 (--enable-v2), read back with an independent client: etcd v2
creates a key's parent directories by itself and keeps them once the key is gone, so every control
request (``{namespace}/control/SERVICE/TASK``) that was taken and deleted leaves ``control/SERVICE``
behind, as an expired record leaves ``services/SERVICE``. Each test has a namespace of its own: tidy
never sees the directories other tests make under the shared one."""

from __future__ import annotations

import uuid
from typing import Iterator, Tuple

import pytest

from supervisor.etcd.store import Settings
from supervisor.etcd.v2 import EtcdV2Client, V2Backend
from tests.support import NAMESPACE
from tests.support.etcd import EtcdV2

REQUEST = '{"action":"stop","id":"r1","requested_at":"2024-01-01T00:00:00Z","by":"test"}'


@pytest.fixture
def tidy(services: None) -> Iterator[Tuple[V2Backend, EtcdV2, str]]:
    client = EtcdV2Client(Settings([("127.0.0.1", 2379)], 2.0))
    namespace = f"{NAMESPACE}/tidy-{uuid.uuid4().hex[:8]}"
    reader = EtcdV2()
    yield V2Backend(client), reader, namespace
    reader.delete(namespace)
    client.close()


def is_empty_dir(etcd: EtcdV2, path: str) -> bool:
    node = etcd.get(path)
    return node is not None and node.get("dir") is True and not node.get("nodes")


def test_a_control_directory_left_empty_is_removed_never_one_that_holds_a_request(tidy) -> None:
    backend, etcd, namespace = tidy
    control = f"{namespace}/control"
    taken, pending = f"{control}/tdone/t1", f"{control}/tlive/t1"
    stray = f"{control}/stray"  # a plain key right under control/: not horizon's, and not a directory
    for key in (taken, pending, stray):
        assert etcd.put(key, REQUEST) == 201
    assert etcd.request(f"/v2/keys{taken}", "DELETE")[0] == 200  # the supervisor took the request
    assert is_empty_dir(etcd, f"{control}/tdone")  # what v2 leaves behind

    assert backend.tidy(namespace, dry_run=True) == [f"{control}/tdone"]
    assert is_empty_dir(etcd, f"{control}/tdone")  # a dry run leaves it in place

    assert backend.tidy(namespace) == [f"{control}/tdone"]
    assert etcd.get(f"{control}/tdone") is None
    assert etcd.raw(pending) == REQUEST  # a directory that holds a request is never touched
    assert etcd.raw(stray) == REQUEST
    assert backend.tidy(namespace) == []  # nothing left to tidy


def test_tidy_removes_the_empty_directories_under_services_and_control_alike(tidy) -> None:
    backend, etcd, namespace = tidy
    empty = [f"{namespace}/control/tgone", f"{namespace}/services/tgone"]
    held = f"{namespace}/services/tlive/t1/running"
    for path in empty:
        assert etcd.request(f"/v2/keys{path}?dir=true", "PUT")[0] == 201
    assert etcd.put(held, "true") == 201

    assert backend.tidy(namespace, dry_run=True) == empty
    assert backend.tidy(namespace) == empty
    assert all(etcd.get(path) is None for path in empty)
    assert etcd.value(held) is True


def test_tidy_of_a_namespace_with_nothing_under_it_removes_nothing(tidy) -> None:
    backend, _, namespace = tidy
    assert backend.tidy(namespace) == [] and backend.tidy(namespace, dry_run=True) == []
