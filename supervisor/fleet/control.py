"""stop, pause and resume through etcd: the request, and the wait for its effect.

A request is one key, ``{namespace}/control/{service}/{task}`` (layout.control_key), holding
``{"action","id","requested_at","by"}`` with a TTL of its own (the wait's timeout and 5 s), so a request
nobody takes goes by itself. The task's supervisor watches that key, acts once and deletes it once the
record shows the effect (``status.state``) or its refusal (``status.refused``, with the request's id). Nothing is asked of a task that does not exist, has ended,
or is not in a state the action applies to: each gets one line, and nothing is written.

The wait follows the tasks' records with ``Backend.wait`` (changes.Follower), never polling. A request
still untaken when the wait times out is withdrawn (deleted if it is still ours), so that a supervisor
that comes back later does not act on a question nobody waits for any more.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from supervisor.etcd import layout
from supervisor.etcd.store import Backend
from supervisor.fleet.changes import Follower
from supervisor.fleet.records import ACTIONS, Fleet, Task
from supervisor.fleet.render import state_text
from supervisor.state import utc_now

EXTRA_TTL = 5  # a request outlives the wait by this much: the supervisor may be taking it just then


def requester() -> str:
    """user@host of whoever asks (the ``by`` of a request)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def refusal(name: str, task: Optional[Task], action: str) -> Optional[str]:
    """Why ``action`` cannot be asked of the task (one line), or None when it can."""
    applies, effect = ACTIONS[action]
    if task is None:
        return f"{name}: no such task in etcd (horizon ls lists them)"
    if task.final:
        return f"{name} has ended ({state_text(task)}): nothing to {action}"
    if task.state == effect:
        return f"{name} is already {effect}"
    if task.state not in applies:
        return f"{name} is {task.state or 'in no known state'}: {action} applies to a task that is {' or '.join(applies)}"
    return None


@dataclass
class Request:
    task: Task
    action: str
    id: str
    key: str
    document: str


def request(namespace: str, task: Task, action: str) -> Request:
    body = {"action": action, "id": uuid.uuid4().hex, "requested_at": utc_now(), "by": requester()}
    return Request(task, action, body["id"], layout.control_key(namespace, task.service, task.task),
                   json.dumps(body, separators=(",", ":")))


def send(backend: Backend, requests: Sequence[Request], timeout: float) -> None:
    """Write every request (Refused or Unavailable from the first that cannot be written)."""
    for one in requests:
        backend.put(one.key, one.document, ttl=math.ceil(timeout) + EXTRA_TTL)


def common_prefix(paths: Sequence[str]) -> str:
    """The deepest directory (ending with "/") holding every one of the directories ``paths``."""
    parts = [path.split("/") for path in paths]
    shared: List[str] = []
    for segments in zip(*parts):
        if len(set(segments)) != 1:
            break
        shared.append(segments[0])
    return "/".join(shared) + "/"


def outcome(task: Optional[Task], one: Request) -> Optional[str]:
    """None while the effect is still awaited; "" once it shows; else why it never will (one line). A
    record gone is awaited too: a lease lost to a frozen etcd leader comes back with the next write."""
    effect = ACTIONS[one.action][1]
    if task is None:
        return None
    if task.state == effect:
        return ""
    if task.final:
        return f"it ended {state_text(task)} instead of {effect}"
    refused = task.status.get("refused")
    if isinstance(refused, dict) and refused.get("id") == one.id:
        return f"its supervisor could not {one.action} it: {refused.get('reason')}"
    return None


@dataclass
class Result:
    request: Request
    problem: Optional[str]  # None: the effect showed
    seconds: float


def await_effect(backend: Backend, namespace: str, fleet: Fleet, revision: int, requests: Sequence[Request],
                 timeout: float, clock: Callable[[], float] = time.monotonic) -> List[Result]:
    """Follow the tasks' records from ``revision`` (the read the requests were decided on) until each
    shows its effect, ends otherwise, or ``timeout`` passes."""
    started = clock()
    follower = Follower(backend, namespace, common_prefix(
        [layout.task_prefix(namespace, r.task.service, r.task.task) for r in requests]))
    follower.fleet, follower.revision = fleet, revision
    done: Dict[str, Result] = {}
    while True:
        for one in requests:
            if one.task.name not in done:
                problem = outcome(follower.fleet.get(one.task.service, one.task.task), one)
                if problem is not None:
                    done[one.task.name] = Result(one, problem or None, clock() - started)
        left = timeout - (clock() - started)
        if len(done) == len(requests) or left <= 0:
            break
        follower.step(left)
    for one in requests:
        if one.task.name not in done:
            done[one.task.name] = Result(one, timed_out(backend, namespace, follower.fleet, one, timeout), timeout)
    return [done[one.task.name] for one in requests]


def timed_out(backend: Backend, namespace: str, fleet: Fleet, one: Request, timeout: float) -> str:
    """What was seen of a request whose effect did not show in time; withdraws it if nobody took it."""
    task = fleet.get(one.task.service, one.task.task)
    seen = f"it is still {state_text(task)}" if task is not None else "its record is gone"
    entries, _ = backend.read_prefix(layout.control_prefix(namespace) + f"/{one.task.service}/")
    pending = next((e for e in entries if e.key == one.key and e.value and one.id in e.value), None)
    if pending is None:
        taken = "its supervisor took the request"
    elif backend.delete(one.key, pending.revision):
        taken = "the request is withdrawn: is its supervisor running, and a version that watches control keys?"
    else:
        taken = "its supervisor took the request just now"
    return f"no {ACTIONS[one.action][1]} state within {timeout:g} s: {seen}; {taken}"

