"""What every benchmark shares: result rows, supervisors started like a user would (tests/support's, with
the bench's flags), wrk, a fast /metrics poller, percentiles, and cleanup that always runs. Private etcd
members, etcd reads and waiting come from tests/support too, as the tests use them.

Nothing here asserts timings: benchmarks return rows of figures, run.py turns them into one table.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import psutil

from supervisor.lock import lock_dir
from tests.support import ETCD_HOSTS, IMAGE
from tests.support.docker import inspect
from tests.support.etcd import etcd_client
from tests.support.net import free_port, http_get
from tests.support.supervisor import Supervisor
from tests.support.waiting import wait_for
from workers.cgroups import CgroupFiles, NetDev

PYTHON = sys.executable
TEN_PROCESSES = "sh -c 'for i in 1 2 3 4 5 6 7 8 9; do sleep 100000 & done; wait'"
LOG_DIR = Path(tempfile.gettempdir()) / "horizon-bench-logs"
# Everything a run creates carries its id (services, container names, the etcd namespace), so that a
# run's cleanup never touches another run's (the smoke test may run while someone benchmarks).
RUN_ID = os.environ.get("HORIZON_BENCH_RUN") or uuid.uuid4().hex[:6]
NAMESPACE = f"/horizon-bench-{RUN_ID}"


class Failed(Exception):
    """A benchmark that failed part of the way: run.py prints the ``rows`` it measured, then its ERROR row."""

    def __init__(self, message: str, rows: Sequence["Row"]) -> None:
        super().__init__(message)
        self.rows = list(rows)


class Row(NamedTuple):
    what: str
    figure: str
    baseline: str
    ratio: str
    target: str
    met: Optional[bool]
    note: str = ""


# -- small helpers ------------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """Percentile q (0-100), nearest-rank on sorted values; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1)))))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.2f} ms"


def us(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1e6:.1f} µs"


def ratio(a: float, b: float, fmt: str = "{:.2f}×") -> str:
    if not b or a != a or b != b:
        return "n/a"
    return fmt.format(a / b)


def sh(*argv: str, timeout: float = 120, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout).stdout


def etcd_wipe(host: str, apis: Sequence[str] = ("v3", "v2")) -> None:
    """Remove this run's namespace from the etcd at ``host``, from each API's keys (etcd 3.4 keeps v2's
    and v3's apart; an etcd without v2 answers 404 there: nothing to remove). Never raises."""
    for api in apis:
        etcd_client(api, f"http://{host}").delete(NAMESPACE)


# -- supervisors --------------------------------------------------------------------------------------

class BenchSupervisor(Supervisor):
    """``python main.py IMAGE COMMAND`` with a bench service, a fixed port and the flags every benchmark
    runs with, on etcd's ``api`` (v3 by default) at ``etcd`` (by default that API's shared etcd); the
    psutil view of its processes, and the container's pid, for measurement."""

    def __init__(self, name: str, command: str = TEN_PROCESSES, interval: float = 1.0, etcd: Optional[str] = None,
                 network: str = "none", extra: Sequence[str] = (), api: str = "v3") -> None:
        service = f"bench-{name}-{RUN_ID}"[:63].rstrip("-")
        etcd = etcd or ETCD_HOSTS[api]
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        super().__init__(service, LOG_DIR / f"{service}.log", NAMESPACE, etcd_client(api, f"http://{etcd}"),
                         free_port())
        self.task_name = "t1"  # not ``task``: Supervisor.task() reads the task's record
        self.key = f"{self.prefix}/{self.task_name}"  # the task's keys are under it
        self.flags = ["--name", self.task_name, "--etcd", etcd, "--interval", str(interval), "--network", network,
                      "--stop-signal", "SIGKILL", "--stop-timeout", "1", "--log-level", "WARNING", *extra]
        self.command = command

    def launch(self) -> "BenchSupervisor":
        self.main(self.command, *self.flags)
        return self

    def serving(self) -> bool:
        """/metrics answers 200; a supervisor that has exited fails the benchmark with its output."""
        if http_get(f"{self.url()}/metrics", timeout=1)[0] == 200:
            return True
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"supervisor {self.service} exited {self.proc.returncode}: "
                               f"{self.output()[-2000:]}")
        return False

    def wait_serving(self, timeout: float = 60) -> "BenchSupervisor":
        wait_for(self.serving, timeout, f"{self.service} serving /metrics", every=0.1)
        return self

    def processes(self) -> List[psutil.Process]:
        """The supervisor and its workers (not the container, which belongs to the engine)."""
        assert self.proc is not None
        return tree(self.proc.pid)

    def container_pid(self) -> int:
        return int(inspect(self.containers()[0], "{{.State.Pid}}"))


def stop_all(supervisors: Sequence[BenchSupervisor], etcd_hosts: Sequence[str] = tuple(ETCD_HOSTS.values())) -> None:
    """SIGTERM every group at once, give them 15 s in all, then clean up each (SIGKILL for stragglers,
    containers, keys) and wipe the run's namespace. Never raises."""
    for sup in supervisors:
        sup.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for sup in supervisors:
        try:
            sup.cleanup(grace=max(0.5, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001
            log(f"cleanup of {sup.service}: {exc}")
    for host in etcd_hosts:
        etcd_wipe(host)


class HostTree(Supervisor):
    """``python -m supervisor DIR``: ``tasks`` task files of one bench service (tasks t000, t001, ...) run in
    one tree, as a user runs a host's tasks.d. DIR's horizon.ini holds this run's etcd namespace on etcd's
    ``api``, a fixed loopback port, and the [host] defaults (capacity 256, history 600). Each task runs
    ``command`` at ``interval`` with the bench's flags (network none, SIGKILL, stop_timeout 1, remove).
    ``stop`` is the tree's own end (SIGTERM: every container stopped and removed, every final record
    written); ``cleanup`` removes whatever is left, even after a failure."""

    LINE = re.compile(r"^\S+ \S+ horizon\[\d+\] \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")

    def __init__(self, name: str, tasks: int, command: str = TEN_PROCESSES, interval: float = 1.0, api: str = "v3",
                 log_level: str = "INFO") -> None:
        service = f"bench-{name}-{RUN_ID}"[:63].rstrip("-")
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        super().__init__(service, LOG_DIR / f"{service}.log", NAMESPACE, etcd_client(api, f"http://{ETCD_HOSTS[api]}"),
                         free_port())
        self.directory = LOG_DIR / f"{service}.d"
        self.names = [f"t{i:03d}" for i in range(tasks)]
        self.command = command
        self.interval = interval
        self.log_level = log_level
        self.started = 0.0

    @property
    def count(self) -> int:
        return len(self.names)

    def write(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        (self.directory / "horizon.ini").write_text(
            f"[etcd]\napi = {self.api}\nhosts = {self.etcd.address}\nnamespace = {self.namespace}\n"
            f"[endpoint]\nhost = 127.0.0.1\nport = {self.port}\n", encoding="utf-8")
        for name in self.names:
            (self.directory / f"{name}.ini").write_text(
                f"[task]\nimage = {IMAGE}\ncommand = {self.command}\nservice = {self.service}\nname = {name}\n"
                "network = none\nstop_signal = SIGKILL\nstop_timeout = 1\nremove = true\n"
                f"[metrics]\ninterval = {self.interval}\n", encoding="utf-8")

    def launch(self) -> "HostTree":
        self.write()
        self.started = time.monotonic()
        self.ini(self.directory, "--log-level", self.log_level)
        return self

    def url(self, timeout: float = 20) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tasks(self) -> Optional[List[Dict[str, Any]]]:
        """GET /tasks: the tasks served now, each with its state; None while the endpoint does not answer."""
        status, body = http_get(f"{self.url()}/tasks", timeout=10)
        return body if status == 200 and isinstance(body, list) else None

    def states(self) -> Dict[str, int]:
        """How many tasks are in each state, as /tasks says ("unserved": not at /tasks; {"no answer": N}
        while the endpoint does not answer)."""
        tasks = self.tasks()
        if tasks is None:
            return {"no answer": self.count}
        counts: Dict[str, int] = {}
        for task in tasks:
            counts[task.get("state", "?")] = counts.get(task.get("state", "?"), 0) + 1
        served = sum(counts.values())
        if served < self.count:
            counts["unserved"] = self.count - served
        return counts

    def wait_running(self, timeout: float, every: float = 1.0) -> float:
        """Until /tasks lists every task as running; the seconds since the launch. A tree that exits, a task
        that ends (failed, exited, stopped, or gone from /tasks: the bench's tasks never restart) or a start
        that stalls fails, with the course of the states (every 15 s) and a summary of the log's problems;
        once a task has ended, the wait goes on until the states stop changing for 15 s, to show where the
        tree ends up."""
        deadline = self.started + timeout
        said = time.monotonic()
        course: List[str] = []
        last: Dict[str, int] = {}
        settled_since = time.monotonic()
        most = 0  # the most tasks /tasks has listed: fewer later, and some are gone (ended, dropped)
        while True:
            counts = self.states()
            now = time.monotonic()
            if counts.get("running", 0) == self.count:
                return now - self.started
            if counts != last:
                last, settled_since = counts, now
            served = most if "no answer" in counts else self.count - counts.get("unserved", 0)
            most = max(most, served)
            ended = {state: counts[state] for state in ("failed", "exited", "stopped") if counts.get(state)}
            if served < most:
                ended["gone from /tasks"] = most - served
            exited = self.proc is not None and self.proc.poll() is not None
            if exited or now >= deadline or (ended and now - settled_since >= 15):
                course.append(f"{now - self.started:.0f} s: {counts}")
                why = (f"exited {self.proc.returncode if self.proc is not None else '?'}" if exited else
                       f"tasks ended ({ended})" if ended else f"not every task running {timeout:.0f} s after the start")
                raise RuntimeError(f"host tree of {self.count} tasks: {why}; states: {'; '.join(course)}; "
                                   f"its log ({self.log_path}): {summarize(self.problems()) or 'no warnings'}")
            if now - said >= 15:
                said = now
                course.append(f"{now - self.started:.0f} s: {counts}")
                log(f"{self.service}: {course[-1]}")
            time.sleep(every)

    def processes(self) -> List[psutil.Process]:
        """The parent and its workers (not the containers, nor their shims: they belong to the engine)."""
        assert self.proc is not None
        return tree(self.proc.pid)

    def container_pids(self) -> List[int]:
        """The main process of each of the tree's containers."""
        ids = self.containers()
        if not ids:
            return []
        out = sh("docker", "inspect", "-f", "{{.State.Pid}}", *ids, timeout=120, check=False)
        return [int(pid) for pid in out.split() if pid.isdigit() and int(pid) > 0]

    def problems(self) -> List[str]:
        """The log's warnings and errors, a task's failure (INFO), and the exception of each traceback in it
        (a worker's crash)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        found = []
        for line in lines:
            match = self.LINE.match(line)
            if match is None:
                if EXCEPTION.match(line):  # a traceback's last line: the exception and its message
                    found.append(line.strip())
            elif match.group(1) in ("WARNING", "ERROR", "CRITICAL") or NOTABLE.search(line):
                found.append(line.strip())
        return found

    def stop(self, timeout: float) -> Optional[float]:
        """SIGTERM to the parent, as systemd stops it; the seconds until the tree exited (None: it did not
        within ``timeout``, and was killed). Then ``cleanup``. Never raises."""
        took: Optional[float] = None
        try:
            if self.proc is not None and self.proc.poll() is None:
                begun = time.monotonic()
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                    took = time.monotonic() - begun
                except subprocess.TimeoutExpired:
                    log(f"{self.service}: still running {timeout:.0f} s after SIGTERM: killing the tree")
        except Exception as exc:  # noqa: BLE001
            log(f"stop of {self.service}: {exc}")
        self.cleanup()
        return took

    def cleanup(self, grace: float = 0) -> None:
        """SIGKILL the tree's group if it still runs, then remove its containers (in one call), its keys
        and its directory. Never raises."""
        try:
            self.reap(grace)
            ids = self.containers()
            if ids:
                log(f"{self.service}: removing {len(ids)} container(s) left behind")
                sh("docker", "rm", "-f", *ids, timeout=300, check=False)
            self.etcd.delete(self.prefix)
            self.etcd.delete(f"{self.namespace}/control/{self.service}")
        except Exception as exc:  # noqa: BLE001
            log(f"cleanup of {self.service}: {exc}")
        shutil.rmtree(self.directory, ignore_errors=True)
        for leftover in glob.glob(os.path.join(lock_dir(), f"{glob.escape(self.service)}.*")):  # a killed tree's
            try:
                os.unlink(leftover)
            except OSError:
                pass


EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
NOTABLE = re.compile(r"task failed|cannot |gave up|giving up")  # an INFO line that tells of trouble
_PREFIX = re.compile(r"^\S+ \S+ horizon\[\d+\] ")


def summarize(problems: Sequence[str], limit: int = 8) -> str:
    """Log lines told apart by what they say, not by when, which process, task or number: each kind once,
    with how often it came, in the order of its first coming (the first ``limit`` kinds)."""
    kinds: Dict[str, List[Any]] = {}
    for line in problems:
        text = _PREFIX.sub("", line)
        kind = re.sub(r"\d+(\.\d+)?", "#", text)
        kinds.setdefault(kind, [0, text])[0] += 1
    shown = [f"{count}× {text[:220]}" for count, text in list(kinds.values())[:limit]]
    more = len(kinds) - limit
    return " | ".join(shown) + (f" | {more} more kind(s)" if more > 0 else "")


def remove_containers() -> None:
    """Remove every container this run left (all are named bench-...-RUN_ID)."""
    try:
        ids = sh("docker", "ps", "-aq", "--filter", f"name=^/bench-.*{RUN_ID}").split()
        if ids:
            sh("docker", "rm", "-f", *ids, check=False)
    except Exception as exc:  # noqa: BLE001
        log(f"container cleanup: {exc}")


# -- load and measurement tools ----------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _duration(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


class WrkResult(NamedTuple):
    rps: float
    p50: float
    p99: float
    errors: str
    requests: int


def wrk(url: str, seconds: float, threads: int = 2, connections: int = 50, accept: Optional[str] = None) -> WrkResult:
    header = ["-H", f"Accept: {accept}"] if accept else []
    out = sh("wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, int(round(seconds)))}s", "--latency", *header, url,
             timeout=seconds + 60)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _duration(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _duration(re.search(r"\s99%\s+(\S+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = []
    match = re.search(r"Socket errors: (.*)", out)
    if match:
        errors.append(match.group(1).strip())
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if match:
        errors.append(f"non-2xx {match.group(1)}")
    return WrkResult(rps, p50, p99, "; ".join(errors), requests)


class WrkBackground:
    """wrk against a URL for a while, in the background (the load of a cadence window)."""

    def __init__(self, url: str, seconds: float, threads: int = 2, connections: int = 50) -> None:
        self.result: Optional[WrkResult] = None
        self.thread = threading.Thread(target=self._run, args=(url, seconds, threads, connections), daemon=True)

    def _run(self, *args: Any) -> None:
        try:
            self.result = wrk(*args)
        except Exception as exc:  # noqa: BLE001
            log(f"wrk failed: {exc}")

    def __enter__(self) -> "WrkBackground":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.thread.join()


_SEQ_RE = re.compile(rb'"seq":(\d+)')
_TS_RE = re.compile(rb'"timestamp":([\d.]+)')


class MetricsPoller:
    """GET /metrics on one kept-alive connection; each new seq is recorded with its timestamp and the
    wall time we received it. Regexes, not json.loads, so that polling stays cheap."""

    def __init__(self, port: int, every: float) -> None:
        self.port = port
        self.every = every
        self.samples: List[Tuple[int, float, float]] = []  # (seq, timestamp, received)
        self.rtts: List[float] = []
        self.errors = 0
        self._conn: Optional[http.client.HTTPConnection] = None

    def _get(self) -> Optional[bytes]:
        for _ in range(2):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                self._conn.request("GET", "/metrics")
                response = self._conn.getresponse()
                body = response.read()
                return body if response.status == 200 else None
            except (OSError, http.client.HTTPException):
                self.errors += 1
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
        return None

    def _timed_get(self) -> Tuple[Optional[bytes], float]:
        """``_get``, its round trip added to ``rtts``: the body (None: no answer) and when it came."""
        sent = time.time()
        body = self._get()
        received = time.time()
        self.rtts.append(received - sent)
        return body, received

    def poll_once(self) -> None:
        body, received = self._timed_get()
        if body is None:
            return
        seq = int(_SEQ_RE.search(body).group(1))
        if not self.samples or seq != self.samples[-1][0]:
            self.samples.append((seq, float(_TS_RE.search(body).group(1)), received))

    def run(self, seconds: float) -> "MetricsPoller":
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll_once()
            if self.every:
                time.sleep(self.every)
        if self._conn is not None:
            self._conn.close()
        return self


def deviations(samples: Sequence[Tuple[int, float, float]], interval: float) -> Tuple[List[float], int]:
    """|Δtimestamp − k·interval| between consecutive seen seqs (k = seq gap, 1 normally), and how many
    seqs were never seen. Both the supervisor skipping a tick and our poller missing one count as missed."""
    devs, missed = [], 0
    for (s0, t0, _), (s1, t1, _) in zip(samples, samples[1:]):
        k = s1 - s0
        if k <= 0:
            continue
        missed += k - 1
        devs.append(abs((t1 - t0) - k * interval))
    return devs, missed


class HostPoller(MetricsPoller):
    """GET /metrics (JSON) on a host tree's endpoint: one answer holds every task's latest document; each
    task's new seqs are recorded, by task (``by_task``), with the document's timestamp and the wall time
    we received it. ``latest`` keeps each task's last document."""

    def __init__(self, port: int, every: float) -> None:
        super().__init__(port, every)
        self.by_task: Dict[str, List[Tuple[int, float, float]]] = {}
        self.latest: Dict[str, Dict[str, Any]] = {}
        self.sizes: List[int] = []

    def poll_once(self) -> None:
        body, received = self._timed_get()
        if body is None:
            return
        self.sizes.append(len(body))
        for doc in json.loads(body)["tasks"]:
            key = f"{doc['service']}/{doc['task']}"
            samples = self.by_task.setdefault(key, [])
            if not samples or doc["seq"] != samples[-1][0]:
                samples.append((doc["seq"], doc["timestamp"], received))
            self.latest[key] = doc


class ThreadedPoll:
    """Run a MetricsPoller in a thread (to poll several supervisors during one window)."""

    def __init__(self, poller: MetricsPoller, seconds: float) -> None:
        self.poller = poller
        self.thread = threading.Thread(target=poller.run, args=(seconds,), daemon=True)

    def __enter__(self) -> MetricsPoller:
        self.thread.start()
        return self.poller

    def __exit__(self, *exc: Any) -> None:
        self.thread.join()


def cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def tree(pid: int) -> List[psutil.Process]:
    """A process and all its descendants ([] once it is gone)."""
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def run_seconds(pid: int) -> float:
    """CPU time a process has run, in nanoseconds from /proc/PID/schedstat (psutil's cpu_times count
    10 ms clock ticks: too coarse for a process that uses a few ms a second). 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat") as handle:
            return int(handle.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def rss_bytes(procs: Sequence[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def pss_bytes(procs: Sequence[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
            pass
    return total


def memory_bytes(procs: Sequence[psutil.Process]) -> Tuple[int, int, int]:
    """RSS, PSS and USS of the processes, summed (what one read of each process's smaps gives)."""
    rss = pss = uss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, pss, uss = rss + info.rss, pss + getattr(info, "pss", 0), uss + info.uss
    return rss, pss, uss


def shim_pss(container_pids: Sequence[int]) -> Tuple[float, int]:
    """The engine's own cost per container: the mean PSS of the containerd shim of each container (the
    parent of its main process), and how many shims were read."""
    seen: Dict[int, int] = {}
    for pid in container_pids:
        try:
            shim = psutil.Process(pid).parent()
            if shim is not None and shim.pid not in seen and shim.name().startswith("containerd-shim"):
                seen[shim.pid] = shim.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
            pass
    return (sum(seen.values()) / len(seen) if seen else float("nan")), len(seen)


class Floor:
    """The least a sampler must do: re-read the same cgroup and /proc files (stat, status, cmdline of
    each process) with ``os.pread`` on kept-open descriptors, parsing nothing but the pid list. Like any
    sampler it follows the container's processes: a process new since the last read has its three files
    opened, and a process gone has them closed (the bench's tasks fork a ``sleep`` every second). The pid
    list is read from a fresh descriptor each time: on cgroup v1 a kept one serves the list of its first
    read for about a second (../shared/field-notes.md)."""

    PROCESS_FILES = (b"stat", b"status", b"cmdline")

    def __init__(self, pid: int) -> None:
        self._cgroup = CgroupFiles(pid)
        self._net = NetDev(pid)
        self._fixed = [*self._cgroup.fds(), *self._net.fds()]
        self._kept: Dict[bytes, List[int]] = {}
        self.read()

    @property
    def files(self) -> int:
        """How many files the last read read: the fixed ones, the pid list, each process's."""
        return len(self._fixed) + 1 + sum(map(len, self._kept.values()))

    def _open(self, pid: bytes) -> List[int]:
        fds: List[int] = []
        try:
            for name in self.PROCESS_FILES:
                fds.append(os.open(b"/proc/%s/%s" % (pid, name), os.O_RDONLY | os.O_CLOEXEC))
        except FileNotFoundError:
            pass  # gone already: what it opened is read (nothing) until the next list drops it
        return fds

    def read(self) -> None:
        pread = os.pread
        for fd in self._fixed:
            pread(fd, 65536, 0)
        procs = os.open(self._cgroup.procs_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            pids = set(pread(procs, 65536, 0).split())
        finally:
            os.close(procs)
        for gone in self._kept.keys() - pids:
            for fd in self._kept.pop(gone):
                os.close(fd)
        for pid in pids:
            fds = self._kept.get(pid)
            if fds is None:
                fds = self._kept[pid] = self._open(pid)
            for fd in fds:
                try:
                    pread(fd, 65536, 0)
                except ProcessLookupError:
                    pass  # a process gone since the list was read: its files read nothing, as a sampler's

    def close(self) -> None:
        for fds in self._kept.values():
            for fd in fds:
                os.close(fd)
        self._kept.clear()
        self._cgroup.close()
        self._net.close()
