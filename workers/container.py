"""The container worker: starts (or adopts) the task's container, samples it every interval, and acts on
control requests (stop, pause, resume).

It is the only process that acts on the Docker engine (the endpoint only reads the container's logs),
and its final status keeps the ended container's last lines (``last_logs``), read before the container
is removed. Every sample goes to shared memory (for the endpoint); every ``publish_every``-th one, and
the last one before the task's end, also goes as a ``metrics`` frame to the parent (for the publisher),
so the parent and the publisher do not wake for samples they would not write. ``info`` and ``status``
go both ways too. The task's state moves only through its ``TaskMachine``. The container is found again
by its name and labels, so a restarted worker, or a restarted supervisor, adopts the running (or
paused) container instead of starting a second one; an ended one that nobody recorded yet has its real
exit code read and recorded.

Sampling runs on a fixed schedule (tick k at start + k * interval) and never waits on the engine:
the counters come from the cgroup files, and the container's end is noticed by a thread blocked in
the engine's wait call, which wakes the loop through a pipe. Each turn of that loop (a sample, at most
``MAX_WAIT`` apart) is the worker's heartbeat; every engine call is announced first with how long it
may take (``Pulse.busy``). In a host tree (workers/containers.py) each task's ``ContainerWorker`` runs on a
thread of its own, its samples are taken on the tree's one ``Schedule`` instead of in its loop, and its
start waits for a place at the ``gate``.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sys
import threading
import time
from dataclasses import replace
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, TypeVar

import docker
import docker.errors
import docker.utils
import requests
from docker.models.containers import Container

from supervisor import frames
from supervisor.config import Config
from supervisor.frames import CONTROL_ACTIONS, TaskKey
from supervisor.link import EXIT_DONE, EXIT_FATAL, EXIT_ORPHANED, MAX_WAIT, STOP_GRACE, WorkerStart
from supervisor.restarts import Policy, Restarts, State as RestartState
from supervisor.selfstats import SelfReport
from supervisor.shm import SharedMemory, Slot, TaskSlots
from supervisor.channel import Outbox
from supervisor.state import Ended, Status, TaskMachine, TaskState, utc_now
from workers.loglines import LAST_LOGS, last_lines
from workers.process import Link, become_worker, drain
from workers.sampler import DETAIL_PERIOD, Sampler
from workers.seqfile import SeqFile

log = logging.getLogger("container")

LABEL_SERVICE = "horizon.service"
LABEL_TASK = "horizon.task"
ENGINE_TIMEOUT = 30  # seconds one engine call may take (the SDK's socket timeout)
ENGINE_OUTAGE_LIMIT = 60.0  # seconds without the engine before the task is declared failed
ENDING_OUTAGE_LIMIT = STOP_GRACE - 5  # seconds a stop or a removal waits for the engine: within the parent's wait
LAST_LOGS_TIMEOUT = 5  # seconds to read the ended container's last lines: they must not hold its end back
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
LIVE = frozenset({"running", "paused", "restarting"})
T = TypeVar("T")
SERIES = "restart_series"  # a status frame's key beside the document's: the restart series (Restarts.carried)


def engine_away(exc: BaseException) -> bool:
    """The engine did not answer at all (its socket missing, refused or closed: dockerd restarting), as
    opposed to answering with an error, which trying again would not change."""
    if isinstance(exc, requests.exceptions.ConnectionError):
        return True
    return isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.APIError)


def engine_reason(exc: BaseException) -> str:
    """What the engine said (an API error's explanation), else the error itself."""
    return str(getattr(exc, "explanation", None) or exc)


def next_sample(tick: float, interval: float, now: float) -> float:
    """The tick after ``tick``; after a stall (the host, or the process, did not run), the next one from
    now: skip, never burst."""
    tick += interval
    return tick if tick > now else now + interval


class Schedule(Protocol):
    """Where a host tree's samples are taken, every task's on one schedule (workers/containers.py)."""

    def add(self, key: TaskKey, sample: Callable[[float], None], interval: float) -> None: ...

    def remove(self, key: TaskKey) -> None: ...


class FatalError(Exception):
    """A user-facing problem that restarting cannot fix (missing image, engine unreachable)."""


class Orphaned(Exception):
    """The parent is gone: leave the container running for the next supervisor to adopt."""


class StopAsked(Exception):
    """A stop came before the container existed: create nothing."""


def engine_time(value: Optional[str]) -> Optional[str]:
    """The engine's timestamps ('0001-01-01T00:00:00Z' means never), trimmed to milliseconds."""
    if not value or value.startswith("0001-"):
        return None
    head, _, rest = value.partition(".")
    digits = rest.rstrip("Z")  # Go's RFC 3339 drops trailing zeros: ".5Z" is half a second
    return f"{head}.{digits[:3].ljust(3, '0')}Z" if rest else value


def container_name(config: Config) -> str:
    return f"{config.task.service}.{config.task.name}"


def ended_run(attrs: Dict[str, Any], stopped: bool) -> Ended:
    """How an ended container's run ended, from its inspect data."""
    state = attrs["State"]
    code = state.get("ExitCode")
    if stopped:
        name, reason = TaskState.STOPPED, "stopped by the supervisor"
    elif state.get("OOMKilled"):
        name, reason = TaskState.FAILED, "oom-killed: the task exceeded its memory limit"
    elif state.get("Error"):
        name, reason = TaskState.FAILED, state["Error"]
    elif code == 0:
        name, reason = TaskState.EXITED, "exited"
    else:
        name, reason = TaskState.FAILED, f"exited with code {code}"
    return Ended(
        state=name, exit_code=code, reason=reason, oom_killed=bool(state.get("OOMKilled")),
        started_at=engine_time(state.get("StartedAt")), finished_at=engine_time(state.get("FinishedAt")) or utc_now(),
    )


class TaskOutput:
    """One task's documents on their way out: shared memory for the endpoint, frames for the parent.

    It owns the task's ``seq`` (carried on from shared memory after a worker restart, or from the seq
    file after a supervisor restart) and decides which samples also become frames: the first one, every
    ``publish_every``-th, and the latest one when the run ends.

    Each status frame also carries the task's restart ``series`` (under ``SERIES``, beside the document:
    every reader of the document, ``Status.from_dict``, drops it, so it goes no further than the parent),
    for the next worker of this supervisor to go on with (``ContainerWorker.take_over``)."""

    def __init__(self, key: TaskKey, slots: TaskSlots, outbox: Outbox, publish_every: int, seq_file: SeqFile) -> None:
        self._lock = threading.Lock()  # a host tree samples on its main thread, the task's thread publishes its state
        self.key = key
        self.slots = slots
        self.outbox = outbox
        self.publish_every = publish_every
        self.seq_file = seq_file
        previous = self.own(slots.metrics)
        self.seq = max(int(previous.body.get("seq", 0)) if previous else 0, seq_file.load())
        self.sent_any = False
        self.unsent: Optional[bytes] = None  # the latest sample, when no frame carried it yet
        self.series: Optional[Restarts] = None  # the task's restart series, set by its worker

    def last_series(self) -> Optional[Dict[str, Any]]:
        """The restart series the previous worker's latest status carried (None for the first worker)."""
        previous = self.own(self.slots.status)
        series = previous.body.get(SERIES) if previous else None
        return series if isinstance(series, dict) else None

    def last_status(self) -> Optional[Status]:
        """What a previous worker of this supervisor published last (None for the first worker)."""
        previous = self.own(self.slots.status)
        return Status.from_dict(previous.body) if previous else None

    def own(self, slot: Slot) -> Optional[frames.Frame]:
        """The slot's frame if it is this task's (a host tree's block may have held another task's)."""
        frame = slot.read_frame()
        return frame if frame is not None and frame.task == self.key else None

    def emit(self, kind: str, body: Dict[str, Any]) -> None:
        slot = self.slots.slots.get(kind)
        data = slot.write_frame(kind, self.key, body) if slot is not None else frames.encode(kind, self.key, body)
        self.outbox.send_encoded(kind, self.key, data)

    def status(self, status: Status) -> None:
        with self._lock:
            if status.state.final or status.state is TaskState.RESTARTING:
                self.send_latest_sample()  # the run's last sample goes with its end
            body = status.to_dict()
            if self.series is not None:
                body[SERIES] = self.series.carried()
            self.emit("status", body)

    def sample(self, figures: Dict[str, Any], interval: float) -> None:
        with self._lock:
            self._record(figures, interval)

    def _record(self, figures: Dict[str, Any], interval: float) -> None:
        self.seq += 1
        self.seq_file.store(self.seq)
        timestamp = round(time.time(), 6)
        body = {
            "service": self.key.service, "task": self.key.name, "seq": self.seq,
            "timestamp": timestamp, "interval": interval,
        }
        body.update(figures)
        self.unsent = self.slots.metrics.write_frame("metrics", self.key, body)
        self.slots.history.append(self.seq, timestamp, figures["container"])
        if not self.sent_any or self.seq % self.publish_every == 0:
            self.send_latest_sample()

    def send_latest_sample(self) -> None:
        if self.unsent is not None:
            self.outbox.send_encoded("metrics", self.key, self.unsent)
            self.unsent = None
            self.sent_any = True


class ContainerWorker:
    def __init__(self, config: Config, output: TaskOutput, worker: Link, report: Optional[SelfReport] = None,
                 schedule: Optional[Schedule] = None, gate: Optional[threading.Semaphore] = None) -> None:
        """``schedule``: where the samples are taken instead of this loop; ``gate``: how many tasks may be
        starting at once (a host tree's)."""
        self.config = config
        self.schedule = schedule
        self.gate = gate
        self.gate_held = False
        self.output = output
        self.report = report  # the worker's own figures (supervisor/selfstats.py)
        self.inbox = worker.inbox
        self.outbox = worker.outbox
        self.watch = worker.watch
        self.pulse = worker.pulse
        self.stop_requested = False
        self.pause_requested: Optional[Dict[str, Any]] = None  # the latest pause or resume frame not acted on
        self.published: Optional[Status] = None  # the latest status published
        self.start_error: Optional[str] = None
        self.engine_retry_at = 0.0
        self.outage_seen = False  # the engine went away while this run of the container was watched
        self.engine_lost = False  # the container or the engine vanished: there are no last lines to read
        task = config.task
        self.restarts = Restarts(Policy(
            max_tries=task.max_restarts, first_delay=task.restart_delay, max_delay=60.0, stable_after=task.restart_reset,
        ))
        output.series = self.restarts  # carried in every status, for the next worker (take_over)
        self._wake_r, self._wake_w = os.pipe()
        self._exit_seen = threading.Event()
        self.recorded = output.last_status()  # what this supervisor's previous worker published last
        self.machine = TaskMachine(restarts=self.recorded.restarts if self.recorded else 0)  # counting goes on

    # -- talking to the parent ----------------------------------------------------------------

    def move(self, to: TaskState, ended: Optional[Ended] = None, restart_in_s: Optional[float] = None,
             last_logs: Sequence[str] = ()) -> None:
        """Move the task's state and publish it; an illegal move is refused and logged by the machine."""
        if self.machine.move(to):
            self.published = self.machine.status(ended, restart_in_s, last_logs)
            self.output.status(self.published)

    def read_control(self) -> None:
        for frame in self.inbox.read():
            if frame.kind != "control" or frame.task != self.output.key:
                continue
            action = frame.body.get("action")
            if action == "stop":
                self.stop_requested = True
            elif action in CONTROL_ACTIONS:
                self.pause_requested = frame.body
            else:
                log.error("bug: a control frame with action %r, not one of %s", action, ", ".join(CONTROL_ACTIONS))
        if self.inbox.eof:
            raise Orphaned()

    def check_parent(self) -> None:
        if self.watch.gone():
            raise Orphaned()

    # -- the engine ---------------------------------------------------------------------------

    def ride_out(self, what: str, call: Callable[[], T], limit: float = ENGINE_OUTAGE_LIMIT,
                 bound: float = 2 * ENGINE_TIMEOUT) -> T:
        """``call()`` (an engine call that may take ``bound`` seconds), tried again every second while the
        engine does not answer, for up to ``limit`` seconds: a restarting dockerd is gone for seconds, and
        a worker that gave up on it would record a live task as failed. Once back, an engine still
        restoring its containers answers with server errors for a moment (seen: a start cut by the restart,
        tried again, "task ...: already exists" until the engine cleaned it up): after an outage these are
        tried again too. Any other error, or the engine still away after ``limit``, is raised."""
        away_since: Optional[float] = None
        while True:
            try:
                with self.pulse.busy(bound):
                    return call()
            except ENGINE_ERRORS as exc:
                now = time.monotonic()
                restoring = away_since is not None and isinstance(exc, docker.errors.APIError) and exc.is_server_error()
                first = away_since is None
                away_since = now if away_since is None else away_since
                if not (engine_away(exc) or restoring) or now - away_since >= limit:
                    raise
                if first:
                    log.warning("the Docker engine does not answer while %s (%s); trying again for up to %.0f s",
                                what, exc, limit)
            self.idle_until(time.monotonic() + 1.0)

    def connect(self) -> docker.DockerClient:
        """A client of the engine. A task already run by this supervisor (or by a killed one before it: its
        seq goes on) rides out an engine restart; a first start fails at once, naming the fix."""
        def reach() -> docker.DockerClient:
            client = docker.from_env(timeout=ENGINE_TIMEOUT)
            client.ping()
            return client

        ran_before = self.recorded is not None or self.output.seq > 0
        try:
            return self.ride_out("connecting", reach, ENGINE_OUTAGE_LIMIT if ran_before else 0.0)
        except ENGINE_ERRORS as exc:
            raise FatalError(
                f"cannot reach the Docker engine ({exc}): start dockerd, or point DOCKER_HOST at it"
            ) from None

    def ensure_image(self, client: docker.DockerClient) -> None:
        image = self.config.task.image
        try:
            with self.pulse.busy(ENGINE_TIMEOUT):
                client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        log.info("image %s is not on this host; pulling it", image)
        repository, tag = docker.utils.parse_repository_tag(image)
        try:
            with self.pulse.busy(ENGINE_TIMEOUT):
                for line in client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                    self.pulse.extend(ENGINE_TIMEOUT)  # a pull takes as long as it takes, a line at a time
                    self.read_control()
                    if self.stop_requested:
                        raise StopAsked()
                    if "error" in line:
                        raise docker.errors.APIError(line["error"])
        except docker.errors.DockerException as exc:
            reason = engine_reason(exc)
            raise FatalError(
                f"image {image!r} is not on this host and cannot be pulled ({reason}): "
                "load or build it first (docker load / docker import), or fix [task] image"
            ) from None

    def find(self, client: docker.DockerClient) -> Optional[Container]:
        name = container_name(self.config)
        try:
            container: Container = self.ride_out("finding the container", lambda: client.containers.get(name))
        except docker.errors.NotFound:
            return None
        except ENGINE_ERRORS as exc:
            raise FatalError(f"the Docker engine cannot tell about container {name!r}: {exc}") from None
        labels = container.labels
        if labels.get(LABEL_TASK) != self.config.task.name or labels.get(LABEL_SERVICE) != self.config.task.service:
            raise FatalError(
                f"a container named {container.name!r} exists that horizon did not create: remove or rename it"
            )
        return container

    def create(self, client: docker.DockerClient) -> Container:
        task = self.config.task
        self.ensure_image(client)
        try:
            with self.pulse.busy(2 * ENGINE_TIMEOUT):  # the SDK creates, then inspects
                container: Container = client.containers.create(
                    task.image,
                    command=list(task.command),
                    name=container_name(self.config),
                    labels={LABEL_SERVICE: task.service, LABEL_TASK: task.name},
                    network_mode=task.network,
                    environment=task.environment,
                    mem_limit=task.memory,
                    stop_signal=task.stop_signal,
                    detach=True,
                )
            return container
        except docker.errors.DockerException as exc:
            reason = engine_reason(exc)
            raise FatalError(f"cannot create the container for {task.image!r}: {reason}") from None

    def info(self, container: Container) -> Dict[str, Any]:
        task = self.config.task
        return {
            "service": task.service,
            "task": task.name,
            "image": task.image,
            "command": list(task.command),
            "tags": list(task.tags),
            "container_id": container.id,
            "host": socket.gethostname(),
            "started_at": self.machine.started_at,
        }

    def watch_exit(self, container: Container) -> None:
        """Block in the engine's wait call on a thread of its own; wake the main loop when it returns."""

        def wait() -> None:
            try:
                client = docker.from_env(timeout=ENGINE_TIMEOUT)  # it asks the engine's version: it can fail too
                try:
                    client.api.wait(container_id, timeout=None)  # None: as long as the container lives
                finally:
                    client.close()
            except Exception as exc:  # noqa: BLE001 - any failure is re-checked by the main loop
                log.warning("lost the engine's wait call (%s); checking the container again", exc)
            self._exit_seen.set()
            os.write(self._wake_w, b"x")

        container_id = str(container.id)
        self._exit_seen.clear()
        threading.Thread(target=wait, name=f"{threading.current_thread().name} wait", daemon=True).start()

    # -- the task's life ----------------------------------------------------------------------

    def run(self) -> int:
        last = self.recorded
        if last is not None and last.state.final:
            # A worker killed after recording the task's end: the end stands (say it again, in case the
            # parent never got it); the task must not run a second time.
            log.info("the task's end (%s) was recorded by the previous worker", last.state.value)
            self.output.status(last)
            if self.config.task.remove:
                self.remove_leftover()
            drain(self.outbox, self.pulse, 5.0)
            return EXIT_DONE
        try:
            self.enter_gate()
            client = self.connect()
            container = self.find(client)
            if container is None:
                self.read_control()
                if self.stop_requested:
                    return EXIT_DONE
                container = self.create(client)
                log.info("created container %s (%s)", container.name, container.short_id)
            return self.supervise(container)
        except StopAsked:
            log.info("stopped while the image was being pulled; nothing was created")
            return EXIT_DONE
        except FatalError as exc:
            self.output.emit("error", {"message": str(exc)})
            drain(self.outbox, self.pulse, 5.0)
            return EXIT_FATAL
        except Orphaned:
            log.warning("the supervisor is gone; leaving the container running for the next one to adopt")
            return EXIT_ORPHANED
        finally:
            self.leave_gate()

    def enter_gate(self) -> None:
        """Wait for a place among the tasks starting now (a host tree's: hundreds of tasks starting at once
        made the engine time out, and their threads starved the worker's main thread), keeping the
        heartbeat and watching the parent meanwhile."""
        if self.gate is None:
            return
        while not self.gate.acquire(timeout=MAX_WAIT):
            self.pulse.beat()
            self.check_parent()
        self.gate_held = True

    def leave_gate(self) -> None:
        """The task is started (or waits to restart, or ended): another may start."""
        if self.gate is not None and self.gate_held:
            self.gate_held = False
            self.gate.release()

    def remove_leftover(self) -> None:
        """Remove the ended container the previous worker may not have removed (best effort: its end is
        recorded whatever happens here)."""
        try:
            container = self.find(self.connect())
        except (FatalError, *ENGINE_ERRORS) as exc:
            log.error("cannot remove the ended container %s: %s", container_name(self.config), exc)
            return
        if container is not None:
            self.remove(container)

    def take_over(self, container: Container) -> bool:
        """Go on with the task's restart series where this supervisor's previous worker left it; True when
        the container's end is one that worker counted already.

        Without this, a worker killed (or hung, and killed) would start a fresh series: the tries toward
        ``max_restarts`` and the back-off would begin again, and a task whose worker keeps dying would be
        restarted for ever. So each status carries the series (``TaskOutput``: the tries in a row, when
        the run began, when its restart is due, on the host's monotonic clock, which is the same in every
        process), and the next worker reads it back from shared memory with the status. That status is
        about one run of the container, which the engine's start time names:

        - the same run, and the status says ``restarting``: the previous worker counted its end and was
          waiting out the delay; this worker waits for the rest of it, and counts that end no second time;
        - the same run otherwise: adopted, or its end (met while no worker watched) counted now, with the
          run's start as the series knew it, so a run up ``restart_reset`` seconds still starts afresh;
        - a run the status does not know: the previous worker started it after its last status (when that
          said ``restarting``, that was the restart, which the count goes on from), and it began just now.

        A new supervisor (no status in its shared memory) starts a fresh series, as before."""
        now = time.monotonic()
        carried = self.output.last_series() if self.recorded is not None else None
        if self.recorded is None or carried is None:
            self.restarts.started(now)
            return False
        self.restarts.resume(carried)
        restarting = self.recorded.state is TaskState.RESTARTING
        if engine_time(container.attrs["State"].get("StartedAt")) != self.recorded.started_at:
            if restarting:
                self.machine.restarts += 1
            self.restarts.started(now)
            return False
        return restarting and container.status not in LIVE

    def supervise(self, container: Container) -> int:
        self.read_control()  # a stop may have come while the container was found or created
        counted = self.take_over(container)
        if counted and container.status == "created":
            # A start the engine refused, whose restart the previous worker was waiting out (still published
            # as restarting): the rest of the delay, then that restart, as back_off would have gone on.
            if not self.wait_for_restart():
                return self.finish(container, ended_run(container.attrs, stopped=True))
            self.machine.restarts += 1
            counted = False
        if container.status == "created":
            self.output.emit("info", self.info(container))
            self.output.status(self.machine.status())  # starting: a new container, about to start
            if self.stop_requested:  # never start it
                return self.finish(container, ended_run(container.attrs, stopped=True))
            started = self.start(container)
        elif container.status in LIVE:
            log.info("adopting %s container %s (%s)", container.status, container.name, container.short_id)
            self.mark_started(container)
            started = True
        else:
            log.info("container %s ended while no worker watched it", container.name)
            self.mark_started(container)
            if self.stop_requested:  # a worker killed while stopping it: this is the stop's end
                return self.finish(container, ended_run(container.attrs, stopped=True))
            started = False  # its end meets the restart policy like any other
        while True:
            ended = self.watch_until_end(container) if started else self.ended(container)
            if ended.state is TaskState.STOPPED or not self.wants_restart(ended):
                return self.finish(container, ended)
            if not counted and self.restarts.died(time.monotonic()) is RestartState.FATAL:
                reason = f"gave up after {self.machine.restarts} restarts: {ended.reason}"
                return self.finish(container, replace(ended, state=TaskState.FAILED, reason=reason))
            counted = False
            if not self.back_off(ended):
                return self.finish(container, ended_run(container.attrs, stopped=True))
            self.machine.restarts += 1
            started = self.start(container)

    def mark_started(self, container: Container) -> None:
        """Publish a (re)started or adopted container: info with its start time, and its live state
        (unless a stop is already asked for: the loop moves it to stopping at once)."""
        self.machine.started_at = engine_time(container.attrs["State"].get("StartedAt"))
        self.output.emit("info", self.info(container))
        if container.status in LIVE and not self.stop_requested:
            self.move(TaskState.PAUSED if container.status == "paused" else TaskState.RUNNING)

    def start(self, container: Container) -> bool:
        """Start the container; False when the engine refuses (command not found, ...) or stays away."""
        self.restarts.started(time.monotonic())  # a refused start counts as a start, or it never gives up
        try:
            self.ride_out("starting the container", container.start)
            self.start_error = None
        except ENGINE_ERRORS as exc:
            self.start_error = engine_reason(exc)
        try:
            self.ride_out("inspecting the container", container.reload)
        except ENGINE_ERRORS as exc:
            self.start_error = self.start_error or f"cannot inspect the started container: {exc}"
            self.engine_lost = True
        if self.start_error:
            return False
        self.outage_seen = False
        self.mark_started(container)
        return container.status in LIVE

    def ended(self, container: Container) -> Ended:
        ended = ended_run(container.attrs, stopped=False)
        if self.start_error:
            return replace(ended, state=TaskState.FAILED, reason=f"cannot start: {self.start_error}")
        if self.outage_seen and ended.state is not TaskState.EXITED:
            return replace(ended, reason=f"{ended.reason} while the Docker engine was unreachable (restarted?)")
        return ended

    def wants_restart(self, ended: Ended) -> bool:
        policy = self.config.task.restart
        return policy == "always" or (policy == "on-failure" and ended.state is TaskState.FAILED)

    def back_off(self, ended: Ended) -> bool:
        """Publish ``restarting`` and wait out the delay; False when a stop came meanwhile."""
        delay = max(0.0, (self.restarts.restart_at or time.monotonic()) - time.monotonic())
        log.info("task %s (%s); restart %d in %.1f s", ended.state.value, ended.reason, self.restarts.tries, delay)
        self.move(TaskState.RESTARTING, ended, restart_in_s=round(delay, 3))
        return self.wait_for_restart()

    def wait_for_restart(self) -> bool:
        """Wait out the restart's delay, leaving the start gate to others; False when a stop came meanwhile."""
        self.leave_gate()
        self.idle_until(self.restarts.restart_at or time.monotonic(), until_stop=True)
        return not self.stop_requested

    def watch_until_end(self, container: Container) -> Ended:
        """Sample on schedule until the container ends or a stop is asked for (then stop it); act on
        pause and resume meanwhile. Rides out engine outages; raises Orphaned when the parent is gone."""
        self.leave_gate()
        interval = self.config.metrics.interval
        sampler = self._sampler(container)
        self.watch_exit(container)
        next_tick = time.monotonic()
        outage_since: Optional[float] = None
        scheduled: Optional[Sampler] = None
        if sampler is not None and self.schedule is not None:
            self.schedule.add(self.output.key, partial(self.sample, sampler), interval)
            scheduled, sampler, next_tick = sampler, None, float("inf")  # the schedule samples; this loop waits
        try:
            while True:
                self.check_parent()
                if self.stop_requested:
                    problem = self.stop(container)
                    return self.vanished(problem) if problem else ended_run(container.attrs, stopped=True)
                if self.pause_requested is not None:
                    request, self.pause_requested = self.pause_requested, None
                    self.pause_or_resume(container, request["action"] == "pause", str(request.get("id", "")))
                now = time.monotonic()
                if self._exit_seen.is_set() and now >= self.engine_retry_at:
                    try:
                        with self.pulse.busy(2 * ENGINE_TIMEOUT):
                            container.reload()
                            self.confirm_engine()
                    except docker.errors.NotFound:
                        return self.vanished("the container was removed behind the supervisor's back")
                    except ENGINE_ERRORS as exc:
                        if outage_since is None:
                            outage_since = now
                            self.outage_seen = True
                            log.warning("the Docker engine does not answer (%s); retrying", exc)
                        if now - outage_since > ENGINE_OUTAGE_LIMIT:
                            return self.vanished(f"the Docker engine did not answer for {ENGINE_OUTAGE_LIMIT:.0f} s")
                        self.engine_retry_at = now + 1.0
                    else:
                        if outage_since is not None:
                            log.info("the Docker engine answers again")
                            outage_since = None
                        if container.status not in LIVE:
                            return self.ended(container)
                        self.outage_seen = False  # the container outlived the outage (live-restore)
                        self.watch_exit(container)  # the wait call was lost, the container lives on
                if now >= next_tick:
                    if sampler is not None:
                        self.sample(sampler, now)
                    next_tick = next_sample(next_tick, interval, now)
                self.pulse.beat()
                self.wait_until(min(next_tick, self.engine_retry_at) if self._exit_seen.is_set() else next_tick)
        finally:
            if scheduled is not None and self.schedule is not None:
                self.schedule.remove(self.output.key)  # returns once no sample of it is being taken
                scheduled.close()
            if sampler is not None:
                sampler.close()

    def pause_or_resume(self, container: Container, pause: bool, request_id: str = "") -> None:
        """``docker pause`` (the cgroup freezer) or unpause; sampling goes on either way. A request that
        cannot be acted on is answered in the status (``refused``), so whoever asked learns it at once."""
        action = "pause" if pause else "resume"
        have, want = (TaskState.RUNNING, TaskState.PAUSED) if pause else (TaskState.PAUSED, TaskState.RUNNING)
        if self.machine.state is want:
            log.info("%s asked while the task is %s already: nothing to do", action, want.value)
            return
        if self.machine.state is not have:
            self.refuse(action, request_id, f"the task is {self.machine.state.value}")
            return
        try:
            with self.pulse.busy(2 * ENGINE_TIMEOUT):
                container.pause() if pause else container.unpause()
                container.reload()
        except ENGINE_ERRORS as exc:
            self.refuse(action, request_id, f"the Docker engine failed to {action} the container: {engine_reason(exc)}")
            return
        self.move(want)

    def refuse(self, action: str, request_id: str, reason: str) -> None:
        """Publish the current status again, answering the request it could not act on."""
        log.error("cannot %s the task: %s", action, reason)
        current = self.published or self.machine.status()
        self.published = replace(current, updated_at=utc_now(), refused={"id": request_id, "action": action, "reason": reason})
        self.output.status(self.published)

    def confirm_engine(self) -> None:
        """Raise unless a new connection reaches the engine.

        A stopping engine closes its socket first, then stops its containers, while still answering on
        connections already open (such as ours). New connections failing is the outage's true start: a
        container that ended then was ended by the engine, not by its task, and is judged once the
        engine is back; one still running is checked again once a second, not in a busy loop.
        """
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()

    def vanished(self, reason: str) -> Ended:
        log.error("%s", reason)
        self.engine_lost = True
        return Ended(state=TaskState.FAILED, exit_code=None, reason=reason, started_at=self.machine.started_at,
                     finished_at=utc_now())

    def _sampler(self, container: Container) -> Optional[Sampler]:
        pid = container.attrs["State"].get("Pid")
        try:
            return Sampler(pid, details_every=max(1, round(DETAIL_PERIOD / self.config.metrics.interval)))
        except OSError as exc:
            log.warning("cannot read the container's counters (%s); sampling is off", exc)
            return None

    def sample(self, sampler: Sampler, now: float) -> None:
        try:
            figures = sampler.sample(now)
        except OSError:
            return  # the cgroup is going away: the wait thread reports the end
        self.output.sample(figures, self.config.metrics.interval)

    def idle_until(self, deadline: float, until_stop: bool = False) -> None:
        """Wait for the deadline (or, ``until_stop``, a stop asked meanwhile), keeping the heartbeat and
        reading the parent's frames; Orphaned if the parent goes."""
        while time.monotonic() < deadline and not (until_stop and self.stop_requested):
            self.check_parent()
            self.pulse.beat()
            self.wait_until(deadline)

    def wait_until(self, deadline: float) -> None:
        """Wait for the deadline, a frame from the parent, or the wait thread; at most a pulse period (the
        heartbeat's promise)."""
        writers = [self.outbox.fd] if self.outbox.pending else []
        timeout = min(max(0.0, deadline - time.monotonic()), self.pulse.period)
        readable, writable, _ = select.select([self.inbox.fd, self._wake_r], writers, [], timeout)
        if self._wake_r in readable:
            os.read(self._wake_r, 64)
        if self.inbox.fd in readable:
            self.read_control()
        if writable:
            self.outbox.flush()
        if self.report is not None:
            self.report.maybe(lambda: {"frames_coalesced": self.outbox.coalesced})

    def stop(self, container: Container) -> Optional[str]:
        """Stop the container, riding out an engine restart; why it could not be stopped, or None."""
        task = self.config.task
        self.move(TaskState.STOPPING)
        log.info("stopping container %s: %s, then SIGKILL after %ss", container.name, task.stop_signal, task.stop_timeout)

        def stop_it() -> None:
            container.reload()  # as it is now: an engine restart may have stopped or unpaused it
            if container.status == "paused":  # a frozen task cannot handle its stop signal
                container.unpause()
            container.stop(timeout=task.stop_timeout)
            container.reload()

        try:
            self.ride_out("stopping the container", stop_it, ENDING_OUTAGE_LIMIT, task.stop_timeout + 4 * ENGINE_TIMEOUT)
        except docker.errors.NotFound:
            pass
        except ENGINE_ERRORS as exc:
            return f"the Docker engine failed to stop the container ({exc}); it is left for the next supervisor"
        return None

    def finish(self, container: Container, ended: Ended) -> int:
        self.move(ended.state, ended, last_logs=self.last_logs(container))
        self.output.seq_file.remove()
        log.info("task %s: %s (exit code %s)", ended.state.value, ended.reason, ended.exit_code)
        if self.config.task.remove and not self.engine_lost:  # lost: nothing to remove, or no engine to ask
            self.remove(container)
        drain(self.outbox, self.pulse, 5.0)
        return EXIT_DONE

    def last_logs(self, container: Container) -> List[str]:
        """The ended container's last lines, for its final record (best effort, and quick: [] when the
        engine cannot tell them within LAST_LOGS_TIMEOUT)."""
        if self.engine_lost or container.client is None:
            return []
        api = container.client.api
        timeout, api.timeout = api.timeout, LAST_LOGS_TIMEOUT  # the SDK takes no timeout per call
        try:
            with self.pulse.busy(LAST_LOGS_TIMEOUT):
                output = container.logs(stdout=True, stderr=True, tail=LAST_LOGS)
        except ENGINE_ERRORS as exc:
            log.warning("cannot read the container's last lines: %s", exc)
            return []
        finally:
            api.timeout = timeout
        return last_lines(output)

    def remove(self, container: Container) -> None:
        """Remove an ended container (``remove = true``); one already gone is fine."""
        try:
            self.ride_out("removing the container", lambda: container.remove(force=True), ENDING_OUTAGE_LIMIT)
        except docker.errors.NotFound:
            pass
        except ENGINE_ERRORS as exc:
            log.error("cannot remove container %s: %s", container.name, exc)


SAMPLER_NICE = -10  # ahead of the endpoint and the task's own load: ~0.1 ms of CPU a sample starves nobody


def raise_priority() -> None:
    """Wake up on time for each sample on a busy host (measured: p99 deviation at 0.1 s 6.3 -> 2.7 ms);
    without the privilege (not root, no CAP_SYS_NICE) the default priority stays."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, SAMPLER_NICE)
    except PermissionError:
        log.debug("cannot raise the sampler's priority (not root); sampling at the default priority")


def run(start: WorkerStart, config: Config, shm: SharedMemory) -> None:
    """Entry point of the container worker process."""
    worker = become_worker(start, period=min(config.metrics.interval, MAX_WAIT))
    raise_priority()
    key = config.key
    output = TaskOutput(key, shm.tasks[key], worker.outbox, config.metrics.publish_every, SeqFile(config))
    sys.exit(ContainerWorker(config, output, worker, SelfReport(shm.reports["container"])).run())
