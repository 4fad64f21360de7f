"""Every task's record as etcd holds it, from one read of ``{namespace}/services/`` (never a request per
task), kept current by the changes ``Backend.wait`` brings; and the filters the commands share.

A record's keys are JSON (supervisor/etcd/layout.py), decoded when first asked for; one that is not
JSON (a key someone wrote by hand) is kept as its raw text, so that ``show`` can still print it, and
counts as absent everywhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from supervisor.etcd import layout
from supervisor.etcd.store import Entry
from supervisor.state import FINAL_STATES

FINAL = frozenset(state.value for state in FINAL_STATES)
# The control commands (control.py): action -> (the states it applies to, the state that shows its effect)
ACTIONS = {"stop": (("starting", "running", "paused", "restarting"), "stopped"),
           "pause": (("running",), "paused"),
           "resume": (("paused",), "running")}


CONTAINER_FIRST = '{"container":'  # how a publisher's metrics value starts (compact JSON, keys sorted)
DECODER = json.JSONDecoder()


def decode(raw: str) -> Any:
    """A key's JSON value, else its raw text. Compact JSON, as publishers write it, goes to the decoder
    alone: json.loads' layers around it (whitespace allowed before and after) cost half as much again as
    decoding a small document, and ls decodes 3,000 of them for a fleet of 1,000."""
    try:
        value, end = DECODER.raw_decode(raw)
        if end == len(raw):
            return value
    except ValueError:
        pass
    try:
        return json.loads(raw)  # whitespace around it, or not JSON at all
    except ValueError:
        return raw


@dataclass
class Task:
    """One task's record: its keys as read (decoded from JSON when first asked for), with the revision
    of each and whether all of them expire by themselves (a TTL or a lease)."""

    service: str
    task: str
    raw: Dict[str, str] = field(default_factory=dict)
    revisions: Dict[str, int] = field(default_factory=dict)
    expires: bool = True
    decoded: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return f"{self.service}/{self.task}"

    def value(self, key: str) -> Any:
        if key not in self.decoded and key in self.raw:
            self.decoded[key] = decode(self.raw[key])
        return self.decoded.get(key)

    @property
    def keys(self) -> Dict[str, Any]:
        """Every key, decoded: {'status': {...}, 'running': True, ...}."""
        return {key: self.value(key) for key in sorted(self.raw)}

    def set(self, key: str, raw: str, revision: int) -> None:
        self.raw[key] = raw
        self.revisions[key] = revision
        self.decoded.pop(key, None)

    def drop(self, key: str) -> None:
        self.raw.pop(key, None)
        self.revisions.pop(key, None)
        self.decoded.pop(key, None)

    def document(self, key: str) -> Dict[str, Any]:
        value = self.value(key)
        return value if isinstance(value, dict) else {}

    @property
    def status(self) -> Dict[str, Any]:
        return self.document("status")

    @property
    def info(self) -> Dict[str, Any]:
        return self.document("info")

    @property
    def endpoint(self) -> Dict[str, Any]:
        return self.document("endpoint")

    @property
    def metrics(self) -> Dict[str, Any]:
        return self.document("metrics")

    @property
    def container(self) -> Dict[str, Any]:
        """The latest sample's container figures. A row needs only these: when the metrics value is as a
        publisher writes it (compact, keys sorted: "container" first), only that part is decoded, not the
        process table after it (a fleet of 1,000 reads 1,000 of them)."""
        raw = self.raw.get("metrics", "")
        if "metrics" not in self.decoded and raw.startswith(CONTAINER_FIRST):
            try:
                found = DECODER.raw_decode(raw, len(CONTAINER_FIRST))[0]
            except ValueError:
                found = None
            if isinstance(found, dict):
                return found
        container = self.metrics.get("container")
        return container if isinstance(container, dict) else {}

    @property
    def state(self) -> Optional[str]:
        state = self.status.get("state")
        return state if isinstance(state, str) else None

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def host(self) -> str:
        return str(self.info.get("host") or self.endpoint.get("host") or "")

    @property
    def url(self) -> str:
        return str(self.endpoint.get("url") or "")

    @property
    def tags(self) -> List[str]:
        tags = self.info.get("tags")
        return [str(tag) for tag in tags] if isinstance(tags, list) else []


class Fleet:
    """The records under one namespace, by (service, task): built from ``read_prefix`` and moved on by
    ``apply`` with each change ``wait`` brings. Each key keeps its revision, so a change older than
    what is held (a re-read overtook it) is ignored."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.tasks: Dict[Tuple[str, str], Task] = {}

    @classmethod
    def read(cls, namespace: str, entries: Iterable[Entry]) -> "Fleet":
        fleet = cls(namespace)
        fleet.apply(entries)
        return fleet

    def apply(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            if entry.value is None:
                self.remove(entry.key, entry.revision)
                continue
            where = layout.split_key(self.namespace, entry.key)
            if where is None:
                continue
            service, task, name = where
            record = self.tasks.get((service, task))
            if record is None:  # not setdefault: a record has 5 keys, and a Task is not free to make
                record = self.tasks[(service, task)] = Task(service, task)
            if record.revisions.get(name, 0) > entry.revision:
                continue
            record.set(name, entry.value, entry.revision)
            record.expires = record.expires and entry.expires

    def remove(self, key: str, revision: int) -> None:
        """A key deleted or expired; on v2 the key may be a task's or a service's directory, which
        stands for every key under it."""
        for (service, task), record in list(self.tasks.items()):
            prefix = layout.task_prefix(self.namespace, service, task)
            if key == prefix or prefix.startswith(key + "/"):
                names = list(record.raw)
            elif key.startswith(prefix + "/"):
                names = [key[len(prefix) + 1:]]
            else:
                continue
            for name in names:
                if record.revisions.get(name, 0) <= revision:
                    record.drop(name)
            if not record.raw:
                del self.tasks[(service, task)]

    def replace(self, prefix: str, entries: Iterable[Entry]) -> None:
        """Everything under the directory ``prefix`` as a fresh read of it says, whatever was held."""
        for key in list(self.tasks):
            path = layout.task_prefix(self.namespace, *key)
            if path == prefix or path.startswith(prefix + "/"):
                del self.tasks[key]
        self.apply(entries)

    def get(self, service: str, task: str) -> Optional[Task]:
        return self.tasks.get((service, task))

    def sorted(self) -> List[Task]:
        return [self.tasks[key] for key in sorted(self.tasks)]


@dataclass(frozen=True)
class Selection:
    """The filters of ls, watch and the control commands: every one given must hold (each tag too)."""

    service: Optional[str] = None
    tags: Tuple[str, ...] = ()
    state: Optional[str] = None
    host: Optional[str] = None

    @property
    def empty(self) -> bool:
        return not (self.service or self.tags or self.state or self.host)

    def matches(self, task: Task) -> bool:
        if self.service is not None and task.service != self.service:
            return False
        if self.state is not None and task.state != self.state:
            return False
        if self.host is not None and self.host not in (task.info.get("host"), task.endpoint.get("host")):
            return False
        return not self.tags or set(self.tags) <= set(task.tags)

    def pick(self, fleet: Fleet) -> List[Task]:
        return [task for task in fleet.sorted() if self.matches(task)]
