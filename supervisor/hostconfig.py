"""A host tree's configuration: a directory of task files (``python -m supervisor /etc/horizon/tasks.d/``).

Every ``*.ini`` in the directory is a task file, as for ``python -m supervisor TASK.ini``, but for
``horizon.ini``: the host's own settings, which every task shares.

    [etcd]      the one etcd connection of the tree (a task file may repeat it, the same, or leave it out)
    [endpoint]  the one HTTP endpoint of the tree; each task is served under /tasks/SERVICE/TASK/
    [host]      capacity (tasks at once) and history (samples kept per task)

A mistake in ``horizon.ini`` stops the start (exit 2). A mistake in a task file is one line naming the
file, the key and the fix; that file is skipped and the others run, at start and on every reload.
Each file is parsed and validated here, in the parent, once per reload; workers get the result.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from supervisor import config as cfg

HOST_FILE = "horizon.ini"


@dataclass(frozen=True)
class HostSection:
    capacity: int = cfg.option(cfg.integer(1, 4096), "256", doc="tasks the tree can hold at once (its shared memory)")
    history: int = cfg.option(cfg.integer(0, 100000), "600", doc="samples kept per task: a task's [metrics] history may not exceed it")


HOST_SECTIONS: Mapping[str, type] = {"etcd": cfg.EtcdSection, "endpoint": cfg.EndpointSection, "host": HostSection}


@dataclass(frozen=True)
class HostConfig:
    directory: str
    etcd: cfg.EtcdSection
    endpoint: cfg.EndpointSection
    host: HostSection
    etcd_values: Mapping[str, str]  # horizon.ini's [etcd] as written: a task file's [etcd] is read with it

    @property
    def source(self) -> str:
        return os.path.join(self.directory, HOST_FILE)


@dataclass(frozen=True)
class TaskFile:
    """One task file as read now: its config, or the one-line mistake that keeps it from running."""

    path: str
    stamp: str  # a digest of its bytes: a changed file is a changed task
    config: Optional[cfg.Config] = None
    error: Optional[str] = None


def load_host(directory: str) -> HostConfig:
    """The directory's horizon.ini (defaults when there is none); ConfigError for a mistake in it."""
    if not os.path.isdir(directory):
        raise cfg.ConfigError(f"{directory}: not a directory; give a directory of task .ini files, or one task file")
    path = os.path.join(directory, HOST_FILE)
    values = cfg.read_ini(path, HOST_SECTIONS) if os.path.exists(path) else {}

    def where(section: str, key: str) -> str:
        return f"{path}: [{section}] {key}"

    sections = {name: cfg.convert_section(name, values.get(name, {}), where, HOST_SECTIONS) for name in HOST_SECTIONS}
    cfg.check_etcd_security(sections["etcd"], where)
    return HostConfig(directory=directory, etcd=cfg.EtcdSection(**sections["etcd"]),
                      endpoint=cfg.endpoint_section(sections["endpoint"]), host=HostSection(**sections["host"]),
                      etcd_values=values.get("etcd", {}))


def task_paths(directory: str) -> List[str]:
    return sorted(path for path in glob.glob(os.path.join(glob.escape(directory), "*.ini"))
                  if os.path.basename(path) != HOST_FILE)


def load_task(host: HostConfig, path: str) -> cfg.Config:
    """One task file, read as a task of this host; ConfigError names the file, the key and the fix."""
    values: Dict[str, Dict[str, Any]] = cfg.read_ini(path)
    if "task" not in values:
        raise cfg.ConfigError(f"{path}: no [task] section; it needs at least image and command")
    if "endpoint" in values:
        raise cfg.ConfigError(f"{path}: [endpoint]: one endpoint serves every task of a directory: "
                              f"remove the section here, and set it in {host.source}")

    def where(section: str, key: str) -> str:
        return f"{path}: [{section}] {key}"

    if "etcd" in values and cfg.build_etcd(values["etcd"], where) != host.etcd:
        raise cfg.ConfigError(f"{path}: [etcd] differs from {host.source}'s: one tree has one etcd connection: "
                              "remove the section here, or make it the same")
    values["etcd"] = dict(host.etcd_values)
    config = cfg.build(values, where, path, os.path.realpath(path))
    metrics = config.metrics
    if "history" not in values.get("metrics", {}):  # the default: as much as the host keeps, up to it
        metrics = dataclasses.replace(metrics, history=min(metrics.history, host.host.history))
    elif metrics.history > host.host.history:
        raise cfg.ConfigError(f"{where('metrics', 'history')}: {metrics.history} is above the host's "
                              f"{host.host.history}: lower it, or raise [host] history in {host.source}")
    return dataclasses.replace(config, endpoint=host.endpoint, metrics=metrics)


def scan(host: HostConfig) -> List[TaskFile]:
    """Every task file of the directory, sorted by name; two files of one task: the second is the mistake."""
    found: List[TaskFile] = []
    owners: Dict[Any, str] = {}
    for path in task_paths(host.directory):
        try:
            with open(path, "rb") as handle:
                stamp = hashlib.sha256(handle.read()).hexdigest()
        except OSError as exc:
            found.append(TaskFile(path, "", error=f"{path}: cannot read it ({exc.strerror}): make it readable"))
            continue
        try:
            config = load_task(host, path)
        except cfg.ConfigError as exc:
            found.append(TaskFile(path, stamp, error=str(exc)))
            continue
        owner = owners.setdefault(config.key, path)
        if owner != path:
            found.append(TaskFile(path, stamp, error=f"{path}: task {config.key.path} is {owner}'s already: "
                                                     "give [task] name a value of its own"))
            continue
        found.append(TaskFile(path, stamp, config=config))
    return found
