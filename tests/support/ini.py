"""The one task-file writer of the tests (a file as a user writes it, mistakes included)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import ETCD_HOSTS, IMAGE, NAMESPACE


def write_ini(directory: Path, service: str, command: str = "sleep 30", task: str = "", etcd: str = "",
              api: str = "v3") -> Path:
    """``directory/SERVICE.ini``: [task] image, command, service on lines 2-4 (what line numbers in error
    messages count on), then the lines ``task``; [etcd] namespace, ``api`` and the hosts of that API's
    shared etcd (each unless the lines ``etcd`` give it), then the lines ``etcd``, which may go on with
    other sections."""

    def unless_given(key: str, value: str) -> str:
        return "" if re.search(rf"^\s*{key}\s*=", etcd, re.MULTILINE) else f"{key} = {value}\n"

    path = directory / f"{service}.ini"
    path.write_text(
        f"[task]\nimage = {IMAGE}\ncommand = {command}\nservice = {service}\n{task}"
        f"[etcd]\n{unless_given('namespace', NAMESPACE)}{unless_given('api', api)}{unless_given('hosts', ETCD_HOSTS[api])}{etcd}"
    )
    return path
