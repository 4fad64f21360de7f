"""Control requests from the fleet (``horizon stop|pause|resume``), watched in etcd for the publisher.

A request is a key under ``{namespace}/control/`` (supervisor/etcd/layout.py) written by any client.
A thread of the publisher watches that prefix (v3 watch, v2 wait: a request shows at once, it is not
polled for) with a backend of its own, so the publisher's loop never waits on it, and hands each
request for one of the publisher's tasks over through a queue and a pipe the loop selects on. The loop
then passes it to the parent (a ``control`` frame, once per id) and deletes the key, guarded by its
revision, once the task's status settles it (``Status.settles``). Requests already there when the watch
starts (written while no supervisor was up, or taken by a supervisor killed before it acted) count too;
a request nobody takes expires with its own TTL. A host tree's tasks come and go (``watch``): the
requests seen for other tasks are kept (until deleted), so a task taken on later gets its own at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from supervisor.channel import Handover
from supervisor.etcd.errors import Missing, Refused, Unavailable
from supervisor.etcd.layout import control_key, control_prefix
from supervisor.etcd.store import Backend, Entry
from supervisor.frames import CONTROL_ACTIONS, TaskKey

log = logging.getLogger("publisher")

WAIT = 10.0  # seconds one watch (v3) or wait (v2) stays open without news before it is opened again
RETRY = 1.0  # seconds between tries while etcd does not answer


@dataclass(frozen=True)
class Request:
    task: TaskKey
    action: str
    id: str
    by: str
    key: str
    revision: int


def parse(entry: Entry, tasks: Dict[str, TaskKey]) -> Optional[Request]:
    """The request an entry holds for one of ``tasks`` (by control key); None for anything else."""
    task = tasks.get(entry.key)
    if task is None or entry.value is None:
        return None
    try:
        body = json.loads(entry.value)
        action = body["action"]
    except (ValueError, TypeError, KeyError):
        log.warning("ignored a control request for %s that is not horizon's JSON: %.80r", task.path, entry.value)
        return None
    if action not in CONTROL_ACTIONS:
        log.warning("ignored a control request for %s: unknown action %r", task.path, action)
        return None
    return Request(task, action, str(body.get("id", "")), str(body.get("by", "someone")), entry.key, entry.revision)


class ControlWatch:
    """The watching thread and its hand-over: ``fd`` becomes readable when ``take`` has requests."""

    def __init__(self, backend: Backend, namespace: str, tasks: List[TaskKey]) -> None:
        self.backend = backend
        self.prefix = control_prefix(namespace) + "/"
        self.namespace = namespace
        self.tasks: Dict[str, TaskKey] = {}
        self.unclaimed: Dict[str, Entry] = {}  # the latest entry of each key under the prefix of no task of ours
        self._lock = threading.Lock()  # tasks and unclaimed: the loop's ``watch`` and the thread's hand-over
        self.requests: Handover[Request] = Handover()
        self.fd = self.requests.fd
        self._thread = threading.Thread(target=self._run, name="control-watch", daemon=True)
        self.watch(tasks)

    def start(self) -> "ControlWatch":
        self._thread.start()
        return self

    def take(self) -> List[Request]:
        """The requests handed over since the last call."""
        return self.requests.take()

    def watch(self, tasks: List[TaskKey]) -> None:
        """The tasks whose requests count from now on; requests already seen for a new one are handed over."""
        with self._lock:
            self.tasks = {control_key(self.namespace, task.service, task.name): task for task in tasks}
            claimed = [entry for key, entry in self.unclaimed.items() if key in self.tasks]
            for entry in claimed:
                del self.unclaimed[entry.key]
        self._hand_over(claimed)

    def _hand_over(self, entries: List[Entry], whole: bool = False) -> None:
        """Hand over the requests among ``entries`` (``whole``: everything under the prefix now)."""
        with self._lock:
            if whole:
                self.unclaimed.clear()
            for entry in entries:
                if entry.key in self.tasks:
                    continue
                if entry.value is None:
                    self.unclaimed.pop(entry.key, None)
                else:
                    self.unclaimed[entry.key] = entry
            found = [request for request in (parse(entry, self.tasks) for entry in entries) if request]
        for request in found:
            self.requests.put(request)

    def _run(self) -> None:
        after: Optional[int] = None
        refused = False
        while True:
            try:
                if after is None:
                    entries, after = self.backend.read_prefix(self.prefix)
                    self._hand_over(entries, whole=True)
                changes, after = self.backend.wait(self.prefix, after, WAIT)
                self._hand_over(changes)
            except Missing:
                after = None  # etcd compacted the history we were at: read what is there now
            except Refused as exc:
                if not refused:
                    log.warning("etcd refuses horizon the control requests under %s (%s): %s", self.prefix, exc, exc.fix)
                refused = True
                time.sleep(RETRY)
            except Unavailable as exc:
                log.debug("control requests: etcd does not answer (%s); watching again in %.0f s", exc, RETRY)
                time.sleep(RETRY)  # then go on from where we were: the watch replays what we missed
            except Exception:  # a bug here must not take control away silently
                log.exception("bug: the control watch failed; watching again")
                after = None
                time.sleep(RETRY)
