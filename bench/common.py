"""What every benchmark shares: result rows, supervisors started like a user would, a private etcd that
can be frozen, wrk, a fast /metrics poller, percentiles, and cleanup that always runs.

Nothing here asserts timings: benchmarks return rows of figures, run.py turns them into one table.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import psutil

from workers.cgroups import CgroupFiles, NetDev

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
IMAGE = "horizon-busybox:latest"
ETCD = "127.0.0.1:2379"
TEN_PROCESSES = "sh -c 'for i in 1 2 3 4 5 6 7 8 9; do sleep 100000 & done; wait'"
LOG_DIR = Path(tempfile.gettempdir()) / "horizon-bench-logs"
# Everything a run creates carries its id (services, container names, the etcd namespace), so that a
# run's cleanup never touches another run's (the smoke test may run while someone benchmarks).
RUN_ID = os.environ.get("HORIZON_BENCH_RUN") or uuid.uuid4().hex[:6]
NAMESPACE = f"/horizon-bench-{RUN_ID}"


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


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sh(*argv: str, timeout: float = 120, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout).stdout


def services_up() -> None:
    subprocess.run(["bash", str(ROOT / "scripts/services.sh"), "up"], check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- etcd v2 over plain HTTP ----------------------------------------------------------------------

def etcd_request(host: str, path: str, method: str = "GET", data: Optional[bytes] = None,
                 timeout: float = 5) -> Tuple[Optional[int], Any, Dict[str, str]]:
    request = urllib.request.Request(f"http://{host}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null"), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, None, {}
    except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout):
        return None, None, {}


def etcd_value(host: str, key: str) -> Any:
    status, body, _ = etcd_request(host, f"/v2/keys{key}", timeout=2)
    if status != 200 or not body:
        return None
    try:
        return json.loads(body["node"]["value"])
    except (KeyError, TypeError, ValueError):
        return None


def etcd_wipe(host: str) -> None:
    etcd_request(host, f"/v2/keys{NAMESPACE}?recursive=true&dir=true", method="DELETE", timeout=5)


class PrivateEtcd:
    """An etcd of our own on other loopback ports, so that freezing it disturbs nobody."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="horizon-bench-etcd-")
        self.client_port, self.peer_port = free_port(), free_port()
        self.host = f"127.0.0.1:{self.client_port}"
        self.proc: Optional[subprocess.Popen] = None
        self.frozen = False

    def start(self) -> "PrivateEtcd":
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        self.log = open(os.path.join(self.dir, "etcd.log"), "w")
        self.proc = subprocess.Popen(
            ["etcd", "--name", "bench", "--data-dir", os.path.join(self.dir, "data"), "--enable-v2",
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"bench={peer}", "--initial-cluster-state", "new"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(lambda: etcd_request(self.host, "/v2/keys/", timeout=1)[0] == 200, 30, "the private etcd")
        return self

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.proc is not None and self.frozen:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.frozen = False

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
            self.log.close()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


# -- supervisors --------------------------------------------------------------------------------------

class Supervisor:
    """``python main.py IMAGE COMMAND`` in its own session, with a bench service and a known port."""

    def __init__(self, name: str, command: str = TEN_PROCESSES, interval: float = 1.0, etcd: str = ETCD,
                 network: str = "none", extra: Sequence[str] = ()) -> None:
        self.service = f"bench-{name}-{RUN_ID}"[:63].rstrip("-")
        self.task = "t1"
        self.command = command
        self.interval = interval
        self.etcd = etcd
        self.network = network
        self.extra = list(extra)
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.prefix = f"{NAMESPACE}/services/{self.service}/{self.task}"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{self.service}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> List[str]:
        return [PYTHON, "main.py", IMAGE, self.command, "--service", self.service, "--name", self.task,
                "--etcd", self.etcd, "--etcd-namespace", NAMESPACE, "--interval", str(self.interval),
                "--port", str(self.port), "--network", self.network, "--stop-signal", "SIGKILL",
                "--stop-timeout", "1", "--log-level", "WARNING", *self.extra]

    def start(self) -> "Supervisor":
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv(), cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def serving(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            conn.request("GET", "/metrics")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"supervisor {self.service} exited {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            return False

    def wait_serving(self, timeout: float = 60) -> "Supervisor":
        wait_for(self.serving, timeout, f"{self.service} serving /metrics", every=0.1)
        return self

    def processes(self) -> List[psutil.Process]:
        """The supervisor and its workers (not the container, which belongs to the engine)."""
        assert self.proc is not None
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def container_pid(self) -> int:
        cid = sh("docker", "ps", "-q", "--filter", f"label=horizon.service={self.service}").split()[0]
        return int(sh("docker", "inspect", "-f", "{{.State.Pid}}", cid).strip())

    def signal_group(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    def finish(self, wait: float = 10) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait(10)
            self.log.close()


def stop_all(supervisors: Sequence[Supervisor], etcd_hosts: Sequence[str] = (ETCD,)) -> None:
    """SIGTERM every group, wait, SIGKILL stragglers, remove containers and keys. Never raises."""
    for sup in supervisors:
        sup.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for sup in supervisors:
        try:
            sup.finish(wait=max(0.5, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001
            log(f"cleanup of {sup.service}: {exc}")
    remove_containers([sup.service for sup in supervisors])
    for host in etcd_hosts:
        etcd_wipe(host)


def remove_containers(services: Optional[Sequence[str]] = None) -> None:
    """Remove the containers of these bench services, or (None) every container this run left."""
    try:
        if services is None:
            ids = sh("docker", "ps", "-aq", "--filter", f"name=^/bench-.*{RUN_ID}").split()
        else:
            ids = []
            for service in services:
                ids += sh("docker", "ps", "-aq", "--filter", f"label=horizon.service={service}").split()
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


def wrk(url: str, seconds: float, threads: int = 2, connections: int = 50) -> WrkResult:
    out = sh("wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, int(round(seconds)))}s", "--latency", url,
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

    def poll_once(self) -> None:
        sent = time.time()
        body = self._get()
        received = time.time()
        self.rtts.append(received - sent)
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


class Floor:
    """The least a sampler must do: re-read the same cgroup and /proc files (stat, status, cmdline of
    each process) with ``os.pread`` on kept-open descriptors, parsing nothing."""

    def __init__(self, pid: int) -> None:
        self._cgroup = CgroupFiles(pid)
        self._net = NetDev(pid)
        self.procs = self._cgroup.read().procs
        paths = [self._cgroup.procs_path]
        paths += [f"/proc/{p}/{name}" for p in self.procs for name in ("stat", "status", "cmdline")]
        self._own = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in paths]
        self.fds = [*self._cgroup.fds(), *self._net.fds(), *self._own]

    def read(self) -> None:
        pread = os.pread
        for fd in self.fds:
            pread(fd, 65536, 0)

    def close(self) -> None:
        for fd in self._own:
            os.close(fd)
        self._cgroup.close()
        self._net.close()
