"""Where horizon's keys live in etcd: the same paths and the same JSON values on the v2 and v3 APIs.

::

    {namespace}/services/{service}/{task}/info      {"service","task","image","command","tags",...}
                                         /endpoint  {"host","port","url"}
                                         /running   true | false
                                         /status    {"state","exit_code","reason","updated_at",...}
                                         /metrics   the /metrics document (top processes only)
    {namespace}/control/{service}/{task}            {"action": "stop"|"pause"|"resume","id","requested_at","by"}

A control request lives apart from the record: it is written by any client (``horizon stop``) with a
TTL of its own, and the record is written by the task's publisher alone, so neither ever overwrites
or revives the other. The task's supervisor watches its control key, acts on a request once, and
deletes it.
"""

from __future__ import annotations

from typing import Optional, Tuple

# The order a record's keys are written in where they cannot be written at once (v2): ``running``
# goes before ``status``, so a reader that sees a state in ``status`` sees ``running`` agree with it.
RECORD_KEYS = ("info", "endpoint", "metrics", "running", "status")

# etcd is a registry, not a metrics store: the metrics value keeps the busiest processes only (the
# endpoint serves them all) and says how many there were.
STORED_PROCESSES = 20


def services_prefix(namespace: str) -> str:
    return f"{namespace}/services"


def task_prefix(namespace: str, service: str, task: str) -> str:
    """The task's record: a directory on v2, a key prefix on v3."""
    return f"{services_prefix(namespace)}/{service}/{task}"


def control_prefix(namespace: str) -> str:
    return f"{namespace}/control"


def control_key(namespace: str, service: str, task: str) -> str:
    return f"{control_prefix(namespace)}/{service}/{task}"


def split_key(namespace: str, key: str) -> Optional[Tuple[str, str, str]]:
    """(service, task, name) of a record key under ``namespace``, or None for any other key."""
    head = services_prefix(namespace) + "/"
    if not key.startswith(head):
        return None
    parts = key[len(head):].split("/")
    if len(parts) != 3 or "" in parts:
        return None
    return parts[0], parts[1], parts[2]
