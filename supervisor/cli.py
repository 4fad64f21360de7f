"""Command lines: ``python -m supervisor [--check] TASK.ini``, ``python -m supervisor [--check] DIR`` (a
host tree: every task file of the directory in one tree, supervisor/hostflow.py) and the original
``python main.py IMAGE "COMMAND"``.

Exit status: the task's own exit code when it ends by itself; 0 when it was stopped by a signal (a host
tree: always, unless a worker gave up);
1 when the supervisor failed (engine unreachable, image missing, a worker that keeps dying);
2 for a mistake in the configuration or the command line. User mistakes print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

from supervisor import config as cfg
from supervisor.ending import StartupError
from supervisor.hostconfig import HostSection
from supervisor.logs import configure_logging
from supervisor.taskflow import supervise
from supervisor.usage import EXIT_USAGE, Parser, fail

# Short forms the original horizon docs used; every key also has its long --section-key flag.
ALIASES = {("etcd", "hosts"): "--etcd", ("endpoint", "port"): "--port", ("metrics", "interval"): "--interval"}


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="validate the configuration, print it, and exit")
    parser.add_argument(
        "--log-level", default=os.environ.get("HORIZON_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper, help="log verbosity (default INFO)",
    )


def long_flag(section: str, key: str) -> str:
    name = key if section == "task" else f"{section}-{key}"
    return "--" + name.replace("_", "-")


def flag(section: str, key: str) -> str:
    """The flag that error messages name: the short alias where there is one."""
    return ALIASES.get((section, key), long_flag(section, key))


def run(config: cfg.Config, args: argparse.Namespace) -> int:
    if args.check:
        print(f"{config.source}: ok: service {config.task.service}, task {config.task.name}, image {config.task.image}")
        return 0
    return supervised(lambda level: supervise(config, level), args)


def supervised(course: Callable[[int], Tuple[int, Optional[str]]], args: argparse.Namespace) -> int:
    """Run a tree at the asked log level: its exit status, its failure printed on one line."""
    level = getattr(logging, args.log_level)
    configure_logging(level)
    try:
        code, failure = course(level)
    except StartupError as exc:
        fail(str(exc), exc.code)
    if failure:
        print(f"horizon: error: {failure}", file=sys.stderr)
    return code


def run_host(directory: str, args: argparse.Namespace) -> int:
    """A directory of task files: every task in one tree, until SIGTERM."""
    from supervisor.hostconfig import load_host, scan
    from supervisor.hostflow import supervise_host

    try:
        host = load_host(directory)
    except cfg.ConfigError as exc:
        fail(str(exc))
    if args.check:
        files = scan(host)
        for file in files:
            config = file.config
            print(file.error if config is None else
                  f"{file.path}: ok: service {config.task.service}, task {config.task.name}, image {config.task.image}")
        if not files:
            print(f"{directory}: no task files (*.ini besides {os.path.basename(host.source)})")
        return EXIT_USAGE if any(file.error for file in files) else 0
    return supervised(lambda level: supervise_host(host, level), args)


def main(argv: Optional[List[str]] = None) -> None:
    parser = Parser(
        prog="python -m supervisor",
        description="Run the task a config file describes: one command in one Docker container, "
        "registered in etcd, with its metrics served over HTTP. Given a directory, run every task file "
        "in it (*.ini; its horizon.ini holds the shared [etcd], [endpoint] and [host]) in one tree.",
        epilog="config keys:\n" + cfg.describe() + "\n\na directory's horizon.ini (shared by its task files):\n"
        + cfg.describe({"host": HostSection}) + "\n  and [etcd] and [endpoint] as above",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="the task's .ini file, or a directory of them")
    add_common(parser)
    args = parser.parse_args(argv)
    if os.path.isdir(args.config):
        sys.exit(run_host(args.config, args))
    try:
        config = cfg.load(args.config)
    except cfg.ConfigError as exc:
        fail(str(exc))
    sys.exit(run(config, args))


def legacy_main(argv: Optional[List[str]] = None) -> None:
    """``python main.py IMAGE "COMMAND" [--flags]``: the same task, its settings from flags and defaults."""
    parser = Parser(
        prog="python main.py",
        description="Run COMMAND in a container of IMAGE, registered in etcd, with its metrics served over HTTP.",
    )
    parser.add_argument("image", help="Docker image, e.g. horizon-busybox:latest")
    parser.add_argument("command", help='the command, quoted as one argument, e.g. "sleep 5m"')
    for section, cls in cfg.SECTIONS.items():
        for spec in dataclasses.fields(cls):
            if section == "task" and spec.name in ("image", "command"):
                continue
            names = dict.fromkeys([flag(section, spec.name), long_flag(section, spec.name)])
            parser.add_argument(*names, dest=f"{section}.{spec.name}", metavar="VALUE", help=spec.metadata["doc"])
    add_common(parser)
    args = parser.parse_args(argv)
    values: Dict[str, Dict[str, str]] = {"task": {"image": args.image, "command": args.command}}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, key = dest.split(".")
            values.setdefault(section, {})[key] = value

    def where(section: str, key: str) -> str:
        return key.upper() if section == "task" and key in ("image", "command") else flag(section, key)

    try:
        config = cfg.build(values, where, "command line", task_seed=None)
    except cfg.ConfigError as exc:
        fail(str(exc))
    sys.exit(run(config, args))
