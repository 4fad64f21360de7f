"""The container worker of a host tree: every task's container, each on a thread of its own.

Each task is a task tree's ``ContainerWorker`` (workers/container.py) on a thread named after the task:
engine calls block (a stop waits the task's ``stop_timeout``), and one task's wait must never hold
another's back. The samples are not taken there: every task's sampler is on one ``SampleSchedule``, a
heap of next ticks that the main thread works through (each task at its own interval), so a sample costs
a file read or two and no thread wakes up for it (a thread per task waking every second cost ~9x more
CPU at 30 tasks, measured). A task's thread wakes only for its frames, its container's end, or its
heartbeat's period. The main thread also routes the parent's frames to the task they name (``task``
starts a thread, ``control`` reaches that thread, ``drop`` forgets the task), tells the parent when a
task's thread is done (``ended``), and keeps the worker's heartbeat. At most ``STARTING_AT_ONCE`` tasks
start their containers at a time: 200 at once made the engine time out (and their threads starved the
main thread of the interpreter until the parent killed it as hung).

The heartbeat is the main thread's, and it beats only while every task's thread keeps its own promise
(``TaskPulse``: beats on each turn of its loop, a bound around each engine call, as the single worker's
pulse). A thread stuck past its promise stops the heartbeat, so the parent kills and restarts the whole
worker, which adopts every container again, exactly as after a crash: a hang is never left to one task.
A thread that fails with a bug does the same (exit 1). Frames from every thread go out through one
outbox, under a lock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import select
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from supervisor.channel import Handover, Inbox, Outbox
from supervisor.config import Config
from supervisor.frames import Frame, TaskKey
from supervisor.link import EXIT_ORPHANED, MAX_WAIT, WorkerStart
from supervisor.selfstats import SelfReport
from supervisor.shm import Heartbeat, SharedMemory
from workers.container import ContainerWorker, TaskOutput, next_sample, raise_priority
from workers.process import ParentWatch, Pulse, become_worker, raise_fd_limit
from workers.seqfile import SeqFile

log = logging.getLogger("container")

EXIT_BUG = 1  # a task's thread failed with a bug: the parent restarts the worker, which adopts every task
TASK_GRACE = 2.0  # seconds a task's thread may be past its promise before the worker stops its heartbeat
TASK_PERIOD = 5.0  # seconds between two turns of an idle task thread's loop (it samples nothing itself)
STARTING_AT_ONCE = 8  # tasks connecting, finding, creating and starting their containers at the same time
BURST = 25  # tasks sampled in one burst: each next 25 tasks taken on go to the next phase of the interval
BURSTS = 10  # phases of each interval the bursts are spread over
HEAVY_SAMPLE = 0.005  # CPU seconds: a sample that uses more holds the other tasks' samples back
HEAVY_SAMPLES = 3  # heavy samples within HEAVY_WINDOW that move a task to the heavy schedule
HEAVY_WINDOW = 10.0  # seconds (or HEAVY_SAMPLES + 1 intervals): the process table is read about once a second


class SampleSchedule:
    """Every task's samples, each at its own interval. Ticks are on a grid (the multiples of the interval,
    shifted by one of ``BURSTS`` phases for each ``BURST`` tasks), so the tasks of one interval are sampled
    in bursts of up to ``BURST``: a sample taken after a sleep costs ~4x one taken right after another
    (cold caches; measured at 30 tasks: 0.9 ms against 0.23 ms), while one burst of every task made the
    last ones late by the length of the burst, and by its jitter (200 tasks: one burst of 75-360 ms). After a stall ticks are skipped, never
    burst, as a task tree's loop does. ``remove`` returns once no sample of that task is being taken, so
    its thread may close the sampler then.

    A task whose samples are heavy (thousands of processes to read) would hold its neighbours' samples
    back: after ``HEAVY_SAMPLES`` samples over ``HEAVY_SAMPLE`` within ``HEAVY_WINDOW`` it moves to the ``heavy``
    schedule, run by a thread of its own (``run_forever``), where the interpreter switches away from it every few
    milliseconds instead of after its whole sample."""

    def __init__(self, heavy: Optional["SampleSchedule"] = None) -> None:
        self.heavy = heavy
        self._lock = threading.Lock()
        self._heap: List[Tuple[float, int, TaskKey]] = []
        self._entries: Dict[TaskKey, Tuple[int, Callable[[float], None], float]] = {}  # key -> (id, sample, interval)
        # when each task's recent heavy samples started: not "in a row", as the light samples between two
        # process tables (at 0.2 s, four of every five) would start the count again every time
        self._slow: Dict[TaskKey, List[float]] = {}
        self._ids = itertools.count()
        self.changed = Handover[None]()  # a task added: its first tick may be sooner than the loop's wait

    def add(self, key: TaskKey, sample: Callable[[float], None], interval: float) -> None:
        with self._lock:
            entry = next(self._ids)
            self._entries[key] = (entry, sample, interval)
            phase = ((entry // BURST) % BURSTS) * interval / BURSTS
            first = math.ceil((time.monotonic() - phase) / interval) * interval + phase
            heapq.heappush(self._heap, (first, entry, key))
        self.changed.poke()

    def remove(self, key: TaskKey) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._slow.pop(key, None)
            if self.heavy is not None:
                self.heavy.remove(key)

    def due(self) -> Optional[float]:
        """When the next sample is due (None: no task is sampled)."""
        with self._lock:
            while self._heap and self._entries.get(self._heap[0][2], (None,))[0] != self._heap[0][1]:
                heapq.heappop(self._heap)  # removed (or added again since)
            return self._heap[0][0] if self._heap else None

    def run_due(self, now: float) -> None:
        """Take every sample due by ``now``."""
        while True:
            with self._lock:
                if not self._heap or self._heap[0][0] > now:
                    return
                tick, entry, key = heapq.heappop(self._heap)
                current = self._entries.get(key)
                if current is None or current[0] != entry:
                    continue
                _, sample, interval = current
                started, cpu = time.monotonic(), time.thread_time()
                sample(started)
                # its own CPU, not the time it took: a light sample kept waiting for the interpreter by a
                # heavy one on the other thread is not heavy (counted so, every task followed it there)
                if self.heavy is not None and time.thread_time() - cpu > HEAVY_SAMPLE:
                    window = max(HEAVY_WINDOW, (HEAVY_SAMPLES + 1) * interval)  # a slow interval's too
                    recent = [at for at in self._slow.get(key, []) if at > started - window] + [started]
                    self._slow[key] = recent
                    if len(recent) >= HEAVY_SAMPLES:
                        log.info("task %s: its samples take over %.0f ms: sampled on a thread of their own",
                                 key.path, HEAVY_SAMPLE * 1000)
                        del self._entries[key], self._slow[key]
                        self.heavy.add(key, sample, interval)
                        continue
                heapq.heappush(self._heap, (next_sample(tick, interval, now), entry, key))

    def run_forever(self) -> None:
        """The heavy schedule's thread."""
        while True:
            self.run_due(time.monotonic())
            due = self.due()
            select.select([self.changed.fd], [], [], None if due is None else max(0.0, due - time.monotonic()))
            self.changed.take()


class TaskInbox(Inbox):
    """One task's frames, routed to its thread by the main thread; ``fd`` is readable while some wait."""

    def __init__(self) -> None:
        self.frames: Handover[Frame] = Handover()
        super().__init__(self.frames.fd)

    def put(self, frame: Frame) -> None:
        self.frames.put(frame)

    def end(self) -> None:
        """No more frames: the parent is gone, or dropped the task (its thread leaves as an orphan)."""
        self.eof = True
        self.frames.poke()

    def read(self) -> List[Frame]:
        return self.frames.take()

    def close(self) -> None:
        self.frames.close()


class SharedOutbox(Outbox):
    """The worker's one outbox to the parent, written by every task's thread and the main thread."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self._lock = threading.RLock()

    def send_encoded(self, kind: str, task: TaskKey, data: bytes) -> None:
        with self._lock:
            super().send_encoded(kind, task, data)

    def flush(self) -> bool:
        with self._lock:
            return super().flush()


class TaskPulse(Pulse):
    """A task thread's pulse: its promise is kept in this process only, and the main thread reads it."""

    def __init__(self, period: float) -> None:
        super().__init__(Heartbeat(memoryview(bytearray(8))), period)
        self.beat()  # its thread is about to start: a promise from now, not from 1970

    @contextmanager
    def busy(self, seconds: float) -> Iterator[None]:
        """A bounded wait: the promise holds until its bound (no thread needed: the main thread reads it)."""
        self.extend(seconds)
        self.beat()
        try:
            yield
        finally:
            self._busy_until = 0.0
            self.beat()

    def overdue(self, now: float) -> bool:
        return now > max(self.heartbeat.due, self._busy_until) + TASK_GRACE


@dataclass
class TaskLink:
    """A task thread's share of the worker (workers.process.Link)."""

    inbox: TaskInbox
    outbox: Outbox
    watch: ParentWatch
    pulse: TaskPulse


class TaskContext(logging.Filter):
    """Every line a task's threads log names the task (the threads are named ``task SERVICE/TASK``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = threading.current_thread().name
        if name.startswith("task "):
            record.msg = f"{name.split()[1]}: {record.msg}"
        return True


class ContainersWorker:
    def __init__(self, shm: SharedMemory, start: WorkerStart) -> None:
        worker = become_worker(start, period=MAX_WAIT)
        self.shm = shm
        self.inbox = worker.inbox
        self.outbox = SharedOutbox(worker.outbox.fd)
        self.watch = worker.watch
        self.pulse = worker.pulse
        self.report = SelfReport(shm.reports["container"])
        self.links: Dict[TaskKey, TaskLink] = {}
        self.done: Handover[Tuple[TaskKey, TaskLink, Optional[int]]] = Handover()  # threads whose task is done
        heavy = SampleSchedule()
        threading.Thread(target=heavy.run_forever, name="heavy samples", daemon=True).start()
        self.schedule = SampleSchedule(heavy)
        self.gate = threading.Semaphore(STARTING_AT_ONCE)
        self.stuck: Optional[TaskKey] = None

    def run(self) -> int:
        while True:
            now = time.monotonic()
            stuck = next((key for key, link in self.links.items() if link.pulse.overdue(now)), None)
            if stuck is None:
                self.pulse.beat()
            elif stuck != self.stuck:
                log.error("task %s: its thread made no progress past its promise: the worker stops its heartbeat "
                          "(the supervisor restarts it, and every container is adopted)", stuck.path)
            self.stuck = stuck
            self.report.maybe(lambda: {"frames_coalesced": self.outbox.coalesced, "tasks": len(self.links)})
            if self.watch.gone():
                return self.orphaned()
            for frame in self.inbox.read():
                self.route(frame)
            if self.inbox.eof:
                return self.orphaned()
            code = self.reap()
            if code is not None:
                return code
            self.schedule.run_due(time.monotonic())
            due = self.schedule.due()
            timeout = MAX_WAIT if due is None else min(MAX_WAIT, max(0.0, due - time.monotonic()))
            writers = [self.outbox.fd] if self.outbox.pending else []
            readable, writable, _ = select.select([self.inbox.fd, self.done.fd, self.schedule.changed.fd], writers, [], timeout)
            if self.schedule.changed.fd in readable:
                self.schedule.changed.take()
            if writable:
                self.outbox.flush()

    def orphaned(self) -> int:
        for link in self.links.values():
            link.inbox.end()
        return EXIT_ORPHANED

    def route(self, frame: Frame) -> None:
        if frame.kind == "task":
            self.take_on(frame)
        elif frame.kind == "control":
            link = self.links.get(frame.task)
            if link is not None:
                link.inbox.put(frame)
        elif frame.kind == "drop":
            link = self.links.pop(frame.task, None)
            if link is not None:
                link.inbox.end()  # a thread still running (its stop was given up on) leaves its container
            self.schedule.remove(frame.task)  # no sample of it lands in its block once freed
            self.shm.detach(frame.task)
        else:
            log.error("bug: a %s frame for the container worker", frame.kind)

    def take_on(self, frame: Frame) -> None:
        key = frame.task
        if key in self.links:
            return
        config = Config.from_document(frame.body["config"])
        slots = self.shm.attach(key, int(frame.body["slot"]))
        link = TaskLink(TaskInbox(), self.outbox, self.watch, TaskPulse(TASK_PERIOD))
        output = TaskOutput(key, slots, self.outbox, config.metrics.publish_every, SeqFile(config))
        self.links[key] = link
        worker = ContainerWorker(config, output, link, schedule=self.schedule, gate=self.gate)
        threading.Thread(target=self.run_task, args=(key, worker, link), name=f"task {key.path}", daemon=True).start()

    def run_task(self, key: TaskKey, worker: ContainerWorker, link: TaskLink) -> None:
        code: Optional[int] = None
        try:
            code = worker.run()
        except Exception:  # noqa: BLE001 - a bug: reported, and the worker restarts (see the module doc)
            log.exception("bug: the thread of task %s failed", key.path)
        finally:
            self.done.put((key, link, code))

    def reap(self) -> Optional[int]:
        """Tell the parent about each task whose thread is done; the worker's exit code on a bug."""
        for key, link, code in self.done.take():
            link.inbox.close()  # here, not in its thread: the main thread may still route a frame to it
            if code is None:
                return EXIT_BUG
            if self.links.get(key) is link:  # not dropped meanwhile (and perhaps taken on again)
                del self.links[key]
                if code != EXIT_ORPHANED:
                    self.outbox.send("ended", key, {"code": code})
        return None


def run(start: WorkerStart, shm: SharedMemory) -> None:
    """Entry point of a host tree's container worker process."""
    worker = ContainersWorker(shm, start)
    for handler in logging.getLogger().handlers:
        handler.addFilter(TaskContext())
    raise_priority()  # before the threads: they inherit it
    raise_fd_limit()
    sys.exit(worker.run())
