"""Following the fleet as it changes, and saying what changed: the engine of ``watch`` and of the control
commands' wait for their effect.

A ``Follower`` reads a prefix once (``read_prefix``) and then applies the changes ``Backend.wait`` brings
(a v3 watch, a v2 wait), never polling. When etcd no longer has the history it was waiting from
(``Missing``: compacted), it reads the prefix again. On v2 a change to a directory (a task's record
deleted or expired, a service directory removed, or a record's directory given a new TTL, which etcd
reports like a removal) stands for every key under it: that directory is read again, and what the read
says replaces what was held.

``differences`` compares two looks at the fleet and names the changes: a task that ``appeared`` (once
its record has a state), whose state ``changed``, or that is ``gone``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from supervisor.etcd import layout
from supervisor.etcd.errors import Missing
from supervisor.etcd.store import Backend
from supervisor.fleet.records import Fleet, Selection, Task
from supervisor.fleet.render import row
from supervisor.state import utc_now

Look = Dict[str, str]  # "service/task" -> its state, for the tasks selected whose record has one


class Follower:
    """The records under ``prefix`` (by default every service's), kept current."""

    def __init__(self, backend: Backend, namespace: str, prefix: Optional[str] = None) -> None:
        self.backend = backend
        self.namespace = namespace
        self.prefix = prefix or layout.services_prefix(namespace) + "/"
        self.fleet = Fleet(namespace)
        self.revision = 0

    def read(self) -> Fleet:
        entries, self.revision = self.backend.read_prefix(self.prefix)
        self.fleet = Fleet.read(self.namespace, entries)
        return self.fleet

    def step(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for changes and apply them; whether any came."""
        try:
            changes, revision = self.backend.wait(self.prefix, self.revision, timeout)
        except Missing:
            self.read()
            return True
        for change in changes:
            if change.value is None and layout.split_key(self.namespace, change.key) is None:
                fresh, _ = self.backend.read_prefix(change.key + "/")
                self.fleet.replace(change.key, fresh)
            else:
                self.fleet.apply([change])
        self.revision = max(self.revision, revision)
        return bool(changes)


def selected(fleet: Fleet, selection: Selection) -> Dict[str, Task]:
    """The tasks selected whose record has a state, by name."""
    return {task.name: task for task in selection.pick(fleet) if task.state is not None}


def states(tasks: Dict[str, Task]) -> Look:
    return {name: task.state or "" for name, task in tasks.items()}


def differences(before: Look, after: Dict[str, Task], now: float) -> List[Dict[str, Any]]:
    """The changes from one look to the next, one JSON-ready document each: ``event`` (appeared,
    changed, gone), ``at``, and the task's row (``ls --json``'s); a change of state names the
    ``previous_state``, and a task gone the state it was last seen in."""
    at = utc_now()
    events: List[Dict[str, Any]] = []
    for name, task in after.items():
        old = before.get(name)
        if old is None:
            events.append({"event": "appeared", "at": at, **row(task, now)})
        elif old != task.state:
            events.append({"event": "changed", "at": at, "previous_state": old, **row(task, now)})
    for name, state in before.items():
        if name not in after:
            service, task_name = name.split("/", 1)
            events.append({"event": "gone", "at": at, "service": service, "task": task_name, "state": state})
    return events
