"""Static checks: the parent's package never imports the workers' (nor their libraries), since the
types both need live in supervisor/ and each worker imports docker, python-etcd or tornado only after the
fork; and both packages type-check under ``mypy --strict`` (settings in mypy.ini)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER_LIBRARIES = {"workers", "docker", "etcd", "tornado", "psutil", "requests", "urllib3"}


def imported(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "supervisor").glob("*.py")), ids=lambda p: p.name)
def test_supervisor_imports_nothing_of_the_workers(path: Path) -> None:
    assert not imported(path) & WORKER_LIBRARIES


def test_supervisor_and_workers_type_check_strictly() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "supervisor", "workers"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
