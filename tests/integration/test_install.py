"""scripts/install.sh, the production install: into a temporary root (``--root``), with the units it installs
checked by systemd-analyze on their real paths, the installed package run, a second run that changes nothing,
and an upgrade that keeps the operator's files. The units of conf/ themselves are checked too (fast), and so
is the host tree's pair: conf/horizon-host.service and its example settings, conf/horizon.ini (issue 12).

The install runs from a copy of the checkout (its package, conf/, scripts/, README), so that work going on in
the checkout meanwhile cannot change the sources between two runs; it is a real pip install (pip's cache
makes it faster), with the current interpreter as ``--python``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from supervisor import config as cfg
from supervisor.hostconfig import HOST_FILE, HOST_SECTIONS
from tests.support import ROOT

VENV = "opt/horizon/venv"
HOST_UNIT = "horizon-host.service"
TASKS_D = "etc/horizon/tasks.d"
NOT_COPIED = {".git", ".venv", "tests", "bench", ".ci", "build", "__pycache__", ".pytest_cache", ".mypy_cache",
              ".hypothesis"}


def systemd_analyze_verify(unit: Path) -> None:
    """systemd-analyze verify exits 0 even on an unknown key or a bad value: its stderr must be empty too."""
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", f"{unit.name}: {result.stderr}"


def directives(unit: Path, key: str) -> List[str]:
    """The values of ``key=`` in a unit file (comments skipped)."""
    lines = [line.strip() for line in unit.read_text().splitlines()]
    return [line.split("=", 1)[1] for line in lines if line.startswith(f"{key}=")]


@dataclass
class Install:
    checkout: Path  # the copy the installs run from
    root: Path
    first: subprocess.CompletedProcess  # type: ignore[type-arg]
    seconds: float

    def run(self, *extra: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
        return run_install(self.checkout, "--root", str(self.root), "--python", sys.executable, *extra)

    @property
    def python(self) -> Path:
        return self.root / VENV / "bin/python"

    def in_venv(self, code: str) -> str:
        """Run code with the installed interpreter, away from the checkout (no package shadowed by the cwd)."""
        done = subprocess.run([str(self.python), "-c", code], capture_output=True, text=True, cwd=self.root,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout


def run_install(checkout: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(["bash", str(checkout / "scripts/install.sh"), *args], capture_output=True, text=True,
                          timeout=300, cwd="/", **kwargs)  # type: ignore[call-overload]


def snapshot(root: Path) -> Dict[str, Tuple[object, ...]]:
    """Every entry under root: its type and mode, mtime, and content (a file's hash, a link's target)."""
    seen: Dict[str, Tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                content: object = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                content = None
            seen[os.path.relpath(path, root)] = (info.st_mode, info.st_mtime_ns, content)
    return seen


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    checkout = tmp_path_factory.mktemp("checkout")
    for entry in ROOT.iterdir():
        if entry.name in NOT_COPIED or entry.name.endswith(".egg-info"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, checkout / entry.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(entry, checkout / entry.name)
    root = tmp_path_factory.mktemp("root")
    started = time.monotonic()
    first = run_install(checkout, "--root", str(root), "--python", sys.executable)
    seconds = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr
    print(f"first install: {seconds:.1f} s\n{first.stdout}{first.stderr}")
    return Install(checkout, root, first, seconds)


# -- the units of conf/, as shipped (fast) ---------------------------------------------------------------

def test_units_in_conf_verify(tmp_path):
    """Every unit of conf/ passes systemd-analyze verify with its interpreter swapped for this one (the
    installed unit, on its real paths, is checked by test_installed_units_verify_on_their_real_paths)."""
    units = sorted((ROOT / "conf").glob("*.service"))
    assert {"horizon-task@.service", HOST_UNIT} <= {unit.name for unit in units}
    for unit in units:
        text = unit.read_text()
        assert "Type=notify" in text
        assert directives(unit, "ExecStart")[0].startswith("/opt/horizon/venv/bin/python -m supervisor ")
        copy = tmp_path / unit.name.replace("@.", "@demo.")
        copy.write_text(text.replace("/opt/horizon/venv/bin/python ", f"{sys.executable} "))
        systemd_analyze_verify(copy)


def test_task_unit_runs_the_installed_interpreter_on_etc_horizon():
    unit = ROOT / "conf/horizon-task@.service"
    assert directives(unit, "ExecStart") == ["/opt/horizon/venv/bin/python -m supervisor /etc/horizon/%i.ini"]
    documentation = directives(unit, "Documentation")[0].split()
    assert documentation and all(uri.startswith("file:///opt/horizon/") for uri in documentation), documentation


def test_host_unit_runs_the_directory_reloads_with_sighup_and_stops_every_task_in_time():
    """horizon-host.service: one tree for /etc/horizon/tasks.d/, notified like the task unit, reloaded with
    SIGHUP to the supervisor alone, and given time to stop its tasks (in parallel) and write their records."""
    unit = ROOT / "conf" / HOST_UNIT
    assert directives(unit, "ExecStart") == ["/opt/horizon/venv/bin/python -m supervisor /etc/horizon/tasks.d/"]
    assert directives(unit, "ExecReload") == ["/bin/kill -HUP $MAINPID"]
    for key, value in {"Type": "notify", "NotifyAccess": "main", "KillMode": "mixed", "KillSignal": "SIGTERM",
                       "Restart": "on-failure"}.items():
        assert directives(unit, key) == [value], (key, directives(unit, key))
    stop_timeout = int(next(field for field in dataclasses.fields(cfg.TaskSection)
                            if field.name == "stop_timeout").metadata["default"])
    stop = int(directives(unit, "TimeoutStopSec")[0])
    task_unit_stop = int(directives(ROOT / "conf/horizon-task@.service", "TimeoutStopSec")[0])
    assert stop >= stop_timeout + 20 and stop >= task_unit_stop, stop  # the parent's own bound: +20 s
    assert int(directives(unit, "WatchdogSec")[0]) > 0
    assert int(directives(unit, "LimitNOFILE")[0]) >= 65536  # hundreds of tasks, each with descriptors open
    documentation = directives(unit, "Documentation")[0].split()
    assert "file:///opt/horizon/conf/horizon.ini" in documentation, documentation
    assert all(uri.startswith("file:///opt/horizon/") for uri in documentation), documentation


def check_directory(python: str, directory: Path) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([python, "-m", "supervisor", "--check", str(directory)], capture_output=True, text=True,
                          cwd="/" if python != sys.executable else ROOT, timeout=60)


def test_conf_horizon_ini_makes_a_host_directory_that_takes_the_example_task(tmp_path):
    """conf/horizon.ini as a directory's settings passes --check; the example task (conf/task.ini) without
    its [endpoint] runs there as it is (its [etcd] is the same as the example settings')."""
    directory = tmp_path / "tasks.d"
    directory.mkdir()
    shutil.copy(ROOT / "conf/horizon.ini", directory / HOST_FILE)
    alone = check_directory(sys.executable, directory)
    assert alone.returncode == 0 and alone.stdout == f"{directory}: no task files (*.ini besides {HOST_FILE})\n", \
        alone.stdout + alone.stderr
    example = (ROOT / "conf/task.ini").read_text()
    without_endpoint = re.sub(r"(?ms)^\[endpoint\]\n.*?(?=^\[|\Z)", "", example)
    assert "[endpoint]" in example and "[endpoint]" not in without_endpoint and "[etcd]" in without_endpoint
    (directory / "web-1.ini").write_text(without_endpoint)
    both = check_directory(sys.executable, directory)
    assert both.returncode == 0 and f"{directory}/web-1.ini: ok: service demo" in both.stdout, \
        both.stdout + both.stderr


def test_conf_horizon_ini_names_only_host_keys_even_in_comments():
    """Every ``key = value`` of conf/horizon.ini, the commented-out ones too (an operator uncomments them),
    is a key of its section, and its sections are the host's."""
    section = None
    seen = []
    for number, line in enumerate((ROOT / "conf/horizon.ini").read_text().splitlines(), 1):
        header = re.match(r"^\[(\w+)\]$", line)
        if header:
            section = header.group(1)
            assert section in HOST_SECTIONS, f"line {number}: [{section}] is not a host section"
            continue
        setting = re.match(r"^#?(\w+) = ", line)
        if setting:
            assert section is not None, f"line {number}: a key before any section"
            known = {field.name for field in dataclasses.fields(HOST_SECTIONS[section])}
            assert setting.group(1) in known, f"line {number}: [{section}] has no key {setting.group(1)!r}"
            seen.append((section, setting.group(1)))
    assert {section for section, _ in seen} == set(HOST_SECTIONS), seen  # every section shown


# -- mistakes and missing prerequisites: one line, nothing installed (fast) ------------------------------

def test_usage_mistakes_and_missing_prerequisites_are_one_line(tmp_path):
    def one_line_error(done: subprocess.CompletedProcess, code: int, words: str) -> None:  # type: ignore[type-arg]
        assert done.returncode == code and done.stdout == "", (done.returncode, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("install.sh: error: "), done.stderr
        assert words in done.stderr, done.stderr

    root = tmp_path / "root"
    one_line_error(run_install(ROOT, "--bogus"), 2, "unknown argument '--bogus'")
    one_line_error(run_install(ROOT, "--root"), 2, "--root needs a directory")
    one_line_error(run_install(ROOT, "--root", str(root), "--python", "/nonexistent/python3"), 1,
                   "no Python interpreter '/nonexistent/python3'")
    one_line_error(run_install(ROOT, "--root", str(tmp_path / "a b")), 1, "use a path of letters")
    # Debian's python3 without python3-venv has no ensurepip
    no_venv = tmp_path / "python3"
    no_venv.write_text(f"""#!/bin/sh
case "$*" in *ensurepip*) echo "ModuleNotFoundError: No module named 'ensurepip'" >&2; exit 1;; esac
exec {sys.executable} "$@"
""")
    no_venv.chmod(0o755)
    one_line_error(run_install(ROOT, "--root", str(root), "--python", str(no_venv)), 1,
                   "apt-get install python3-venv")
    assert not (root / VENV).exists()
    if os.geteuid() == 0 and shutil.which("setpriv"):
        as_nobody = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash",
                                    str(ROOT / "scripts/install.sh")], capture_output=True, text=True, timeout=60,
                                   cwd="/")
        one_line_error(as_nobody, 1, "run as root (or give --root DIR")


# -- an install into a temporary root (one pip install, shared by these tests) ---------------------------

@pytest.mark.slow
def test_installed_units_verify_on_their_real_paths(installed):
    units = sorted((installed.root / "etc/systemd/system").glob("*.service"))
    assert [unit.name for unit in units] == sorted(unit.name for unit in (ROOT / "conf").glob("*.service"))
    for unit in units:
        systemd_analyze_verify(unit)  # it checks that ExecStart's program exists and is executable
        program, *args = directives(unit, "ExecStart")[0].split()
        assert program == str(installed.python) and os.access(program, os.X_OK), program
        assert args[:2] == ["-m", "supervisor"] and args[2].startswith(f"{installed.root}/etc/horizon/"), args
        for uri in directives(unit, "Documentation")[0].split():
            assert uri.startswith(f"file://{installed.root}/") and Path(uri[len("file://"):]).is_file(), uri
    template = installed.root / "etc/systemd/system/horizon-task@.service"
    assert "%i.ini" in directives(template, "ExecStart")[0]
    host = installed.root / "etc/systemd/system" / HOST_UNIT
    directory = directives(host, "ExecStart")[0].split()[3]
    assert directory == f"{installed.root}/{TASKS_D}/" and Path(directory).is_dir(), directory
    assert directives(host, "ExecReload") == ["/bin/kill -HUP $MAINPID"]  # not a path under the root


@pytest.mark.slow
def test_the_package_is_pip_installed_with_its_runtime_dependencies_only(installed):
    print(f"first install took {installed.seconds:.1f} s")
    found = json.loads(installed.in_venv(
        "import importlib.metadata as m, json, supervisor, workers, docker, etcd, tornado, psutil, msgpack\n"
        "d = m.distribution('horizon')\n"
        "print(json.dumps({'file': supervisor.__file__, 'workers': workers.__file__, 'version': d.version,\n"
        "  'direct_url': json.loads(d.read_text('direct_url.json') or '{}'),\n"
        "  'pytest': any(x.metadata['Name'] == 'pytest' for x in m.distributions())}))"))
    site = f"{installed.root}/{VENV}/lib/"
    assert found["file"].startswith(site) and found["workers"].startswith(site), found  # not the checkout's
    assert not found["direct_url"].get("dir_info", {}).get("editable"), found["direct_url"]
    assert found["pytest"] is False  # the test extra is not installed
    stamp = (installed.root / VENV / ".horizon-install").read_text()
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    assert f"horizon {found['version']} " in stamp and f"python {base} " in stamp, stamp


@pytest.mark.slow
def test_the_installed_supervisor_checks_the_example_task(installed):
    example = installed.root / "etc/horizon/example.ini"
    assert example.read_text() == (ROOT / "conf/task.ini").read_text()
    done = subprocess.run([str(installed.python), "-m", "supervisor", "--check", str(example)],
                          capture_output=True, text=True, cwd="/", timeout=60)
    assert done.returncode == 0 and f"{example}: ok: service demo" in done.stdout, done.stdout + done.stderr


@pytest.mark.slow
def test_the_installed_supervisor_checks_the_host_directory(installed):
    """tasks.d holds the example settings and no task (each *.ini there would run); the installed
    supervisor finds it a valid, empty host directory."""
    directory = installed.root / TASKS_D
    assert sorted(path.name for path in directory.iterdir()) == [HOST_FILE]
    assert (directory / HOST_FILE).read_text() == (ROOT / "conf/horizon.ini").read_text()
    assert (installed.root / "opt/horizon/conf/horizon.ini").read_text() == (ROOT / "conf/horizon.ini").read_text()
    done = check_directory(str(installed.python), directory)
    assert done.returncode == 0 and done.stdout == f"{directory}: no task files (*.ini besides {HOST_FILE})\n", \
        done.stdout + done.stderr


@pytest.mark.slow
def test_the_horizon_command_is_on_the_path(installed):
    link = installed.root / "usr/local/bin/horizon"
    scripts = installed.in_venv(
        "import importlib.metadata as m\n"
        "print(' '.join(e.name for e in m.distribution('horizon').entry_points if e.group == 'console_scripts'))")
    if "horizon" not in scripts.split():  # the package has no horizon command (yet): the step is skipped
        assert not os.path.lexists(link)
        assert "skipped" in installed.first.stdout and "no 'horizon' command" in installed.first.stdout
        pytest.skip("setup.py has no 'horizon' console script")
    assert link.is_symlink() and os.readlink(link) == str(installed.root / VENV / "bin/horizon")
    done = subprocess.run([str(link), "--help"], capture_output=True, text=True, cwd="/", timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: horizon"), done.stdout + done.stderr


@pytest.mark.slow
def test_a_second_run_is_quiet_and_changes_nothing(installed):
    before = snapshot(installed.root)
    again = installed.run()
    assert again.returncode == 0, again.stdout + again.stderr
    lines = (again.stdout + again.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("install.sh: up to date: horizon "), lines
    assert snapshot(installed.root) == before


@pytest.mark.slow
def test_an_upgrade_reinstalls_the_package_and_keeps_the_operators_example(installed):
    example = installed.root / "etc/horizon/example.ini"
    edited = example.read_text().replace("service = demo", "service = edited-by-the-operator")
    example.write_text(edited)
    unit = installed.root / "etc/systemd/system/horizon-task@.service"
    unit_before = unit.read_text()
    unit.write_text(unit_before.replace("TimeoutStopSec=40", "TimeoutStopSec=99"))  # edited in place: replaced
    with open(installed.checkout / "workers/__init__.py", "a") as source:  # the new version's sources
        source.write("# an upgrade\n")

    upgrade = installed.run()
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "installing horizon " in upgrade.stdout and f"updated {unit}" in upgrade.stdout, upgrade.stdout
    assert example.read_text() == edited and str(example) not in upgrade.stdout
    assert unit.read_text() == unit_before
    installed_workers = installed.in_venv("import workers; print(workers.__file__)").strip()
    assert Path(installed_workers).read_text().endswith("# an upgrade\n")

    example.unlink()  # a removed example comes back; nothing else changes
    again = installed.run()
    assert again.returncode == 0 and again.stdout == f"install.sh: installed the example task {example}\n", \
        again.stdout + again.stderr
    assert example.read_text() == (ROOT / "conf/task.ini").read_text()


@pytest.mark.slow
def test_the_host_directory_is_the_operators_once_made(installed):
    """install.sh makes tasks.d (with horizon.ini) only where there is none: an edited horizon.ini, a task
    file and even a removed horizon.ini (the tree then runs on defaults) are left as they are; a removed
    directory is made again."""
    directory = installed.root / TASKS_D
    settings = directory / HOST_FILE
    edited = settings.read_text().replace("capacity = 256", "capacity = 32")
    assert edited != settings.read_text()
    settings.write_text(edited)
    task = directory / "web-1.ini"
    task.write_text("[task]\nimage = horizon-busybox:latest\ncommand = sleep 1\n")

    def quiet_run() -> None:
        again = installed.run()
        lines = (again.stdout + again.stderr).splitlines()
        assert again.returncode == 0 and len(lines) == 1 and lines[0].startswith("install.sh: up to date: "), lines

    quiet_run()
    assert settings.read_text() == edited and task.exists()
    settings.unlink()
    quiet_run()
    assert sorted(path.name for path in directory.iterdir()) == ["web-1.ini"]

    shutil.rmtree(directory)
    made = installed.run()
    assert made.returncode == 0 and made.stdout == \
        f"install.sh: installed the host tree's directory {directory} with its settings, horizon.ini\n", \
        made.stdout + made.stderr
    assert sorted(path.name for path in directory.iterdir()) == [HOST_FILE]
    assert settings.read_text() == (ROOT / "conf/horizon.ini").read_text()
    assert [path.name for path in directory.parent.iterdir() if ".new." in path.name] == []
