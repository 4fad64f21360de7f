"""The Docker CLI, as a user would call it, and what the engine says of a service's containers."""

from __future__ import annotations

import subprocess
from typing import List, Optional


def docker(*args: str) -> str:
    """stdout of ``docker ARGS``; a failure raises (CalledProcessError with the engine's words)."""
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=60).stdout


def service_containers(service: str, host: Optional[str] = None) -> List[str]:
    """Short ids of every container (running or not) horizon made for ``service``, on the default
    engine or the one at ``host`` (a private dockerd's socket URL)."""
    where = ["-H", host] if host else []
    return docker(*where, "ps", "-aq", "--filter", f"label=horizon.service={service}").split()


def inspect(container: str, template: str) -> str:
    return docker("inspect", "-f", template, container).strip()


def container_actions(service: str, since: float, until: float) -> List[str]:
    """What the engine did to the service's containers between two moments (create, start, die, ...)."""
    out = docker("events", "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--filter", "type=container",
                 "--filter", f"label=horizon.service={service}", "--format", "{{.Action}}")
    return [action for action in out.split() if not action.startswith("exec_")]
