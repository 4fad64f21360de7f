"""The one task-file writer of the tests (a file as a user writes it, mistakes included)."""

from __future__ import annotations

from pathlib import Path

from tests.support import IMAGE, NAMESPACE


def write_ini(directory: Path, service: str, command: str = "sleep 30", task: str = "", etcd: str = "") -> Path:
    """``directory/SERVICE.ini``: [task] image, command, service on lines 2-4 (what line numbers in error
    messages count on), then the lines ``task``; [etcd] namespace, then the lines ``etcd``, which may go on
    with other sections."""
    path = directory / f"{service}.ini"
    path.write_text(
        f"[task]\nimage = {IMAGE}\ncommand = {command}\nservice = {service}\n{task}"
        f"[etcd]\nnamespace = {NAMESPACE}\n{etcd}"
    )
    return path
