"""What ``horizon prune`` removes, and removing it; never a live record.

- A finished record (its state is final) that would never expire: a key of it bound to no lease (v3) or
  under no TTL (v2), as a record planted by hand, or one etcd v2 re-created bare, is left forever.
- A finished record whose ``status.finished_at`` is older than ``older_than`` seconds (a record kept
  longer than its ``keep_finished``, or with a clock that is wrong).
- v2: the service directories expired records left empty (``Backend.tidy``; etcd deletes a directory only
  when it is empty, atomically).

Each record is removed in one guarded step (``Backend.remove``): only if its ``status`` is still the one
read, so a record that changed in between (a task started again under the same name) is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from supervisor.etcd import layout
from supervisor.etcd.store import Backend
from supervisor.fleet.records import Fleet, Task
from supervisor.fleet.render import duration, parse_time, state_text


@dataclass(frozen=True)
class Removal:
    task: Task
    why: str


def plan(fleet: Fleet, now: float, older_than: float) -> List[Removal]:
    removals = []
    for task in fleet.sorted():
        if not task.final or "status" not in task.revisions:
            continue  # a live record, or one without a state: never ours to remove
        finished = parse_time(task.status.get("finished_at"))
        if not task.expires:
            removals.append(Removal(task, f"{state_text(task)}, and it would never expire (no TTL or lease)"))
        elif finished is not None and now - finished > older_than:
            removals.append(Removal(task, f"{state_text(task)}, finished {duration(now - finished)} ago"))
    return removals


def remove(backend: Backend, namespace: str, removal: Removal) -> bool:
    """Remove the record if its status is still the one read; False if it changed or is gone."""
    task = removal.task
    prefix = layout.task_prefix(namespace, task.service, task.task)
    return backend.remove(prefix, f"{prefix}/status", task.revisions["status"])
