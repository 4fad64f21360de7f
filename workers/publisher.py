"""The publisher worker: keeps each task's record in etcd equal to what the task is, whatever etcd does.

It is the only process that talks to etcd, so a slow or dead etcd stalls nothing else. Each task has a
``TaskRecord``, a reconciler: frames from the parent (routed by their task) update the wanted
documents; the loop writes what changed, keeps the record alive well before its TTL lapses, writes the
whole record again when it was deleted, expired or changed behind our back, and after an outage.
Metrics are coalesced: the container worker sends every ``publish_every``-th sample, and only the
newest one is ever written. Samples that could not be written during an outage are summarised (count
and time span) in the status document, not replayed. Every etcd request runs inside the pulse's
``busy`` span, bounded by the request's own bound, so a frozen etcd never gets the publisher killed as hung.

How a record is kept on each API (a directory with a TTL on v2; a lease and guarded transactions on
v3) is in supervisor/etcd; the key layout is supervisor/etcd/layout.py.
"""

from __future__ import annotations

import json
import logging
import math
import select
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

from supervisor.config import Config, password
from supervisor.hostconfig import HostConfig
from supervisor.etcd.errors import Missing, Refused, Unanswered, Unavailable
from supervisor.etcd.layout import RECORD_KEYS, STORED_PROCESSES
from supervisor.etcd.store import Backend, RequestSpan, connect
from supervisor.frames import Frame, TaskKey
from supervisor.link import EXIT_DONE, EXIT_ORPHANED, MAX_WAIT, WorkerStart
from supervisor.selfstats import SelfReport
from supervisor.shm import SharedMemory
from supervisor.state import Status
from workers.control import ControlWatch, Request
from workers.process import Worker, become_worker, drain

log = logging.getLogger("publisher")

RETRY_MIN, RETRY_MAX = 0.2, 2.0
HOLD_MAX = 1.0  # seconds a host tree's record may hold a sample for etcd, so that many go in one request


def dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def stored_metrics(document: Dict[str, Any]) -> Dict[str, Any]:
    """The metrics document as etcd keeps it: the busiest processes only, and how many there are."""
    processes = document.get("processes", [])
    if len(processes) <= STORED_PROCESSES:
        return document
    busiest = sorted(processes, key=lambda p: p.get("cpu_percent", 0.0), reverse=True)[:STORED_PROCESSES]
    return dict(document, processes=busiest)


class Gap:
    """Samples that could not be written while etcd was away.

    Counted by sequence number, not by frames received: metrics frames queued for a stalled publisher
    are coalesced on the way, and the ones dropped there were not written either."""

    def __init__(self) -> None:
        self.received = 0
        self.first_seq: Optional[int] = None
        self.last_seq: Optional[int] = None
        self.first: Optional[float] = None
        self.last: Optional[float] = None

    def add(self, seq: Optional[int], timestamp: float) -> None:
        if seq is not None and seq == self.last_seq:
            return  # the same sample, failing again
        self.received += 1
        if self.first is None:
            self.first_seq, self.first = seq, timestamp
        self.last_seq, self.last = seq, timestamp

    @property
    def count(self) -> int:
        if self.first_seq is None or self.last_seq is None:
            return self.received
        return max(self.received, self.last_seq - self.first_seq + 1)

    def summary(self) -> Dict[str, Any]:
        return {"samples": self.count, "from": self.first, "to": self.last}


class Outage:
    """etcd away for the records that share it (a host tree's, on one connection): logged when it starts,
    and "answers again" once, by the first of them that finds etcd back."""

    def __init__(self) -> None:
        self.told = True


class TaskRecord:
    """One task's record in etcd, reconciled with the documents its frames bring."""

    def __init__(self, config: Config, backend: Backend, endpoint: Dict[str, Any],
                 clock: Callable[[], float] = time.monotonic, holds: bool = False) -> None:
        """``holds``: a sample (and nothing else) may wait up to half a publish period, at most ``HOLD_MAX``,
        for the other records' (a host tree's: ``PublisherWorker.write_together``)."""
        self.config = config
        self.backend = backend
        self.store = backend.record(config.task_prefix)
        self.clock = clock
        self.prefix = config.task_prefix
        self.documents: Dict[str, Any] = {"endpoint": endpoint}
        self.status: Optional[Status] = None
        self.dirty: Set[str] = set()
        self.dirty_since = 0.0  # when the first of the dirty keys changed (monotonic)
        self.hold = min(HOLD_MAX, config.metrics.interval * config.metrics.publish_every / 2) if holds else 0.0
        self.synced = False  # the whole record is known to be in etcd
        self.synced_ttl = 0  # the TTL it was written with
        self.written: Set[str] = set()  # keys the last full sync created: only these may be updated
        self.tidied = False  # expired records' leftovers removed (once, after the first write)
        self.published_at: Optional[float] = None  # wall time of the last publish that etcd took
        self.alive_until = 0.0  # monotonic: when the record expires unless kept alive again
        self.rewriting = False  # the last publish found the record not as we left it
        self.connected: Optional[bool] = None
        self.refused: Optional[Refused] = None  # why etcd said no, when it answered but refused us
        self.outage: Optional[Outage] = None  # while etcd is away for this record: the outage it is in
        self.unanswered = False  # its last request found no member answering (etcd away for every record)
        self.finishing = False
        self.finish_by = float("inf")
        self.reported: Dict[str, Any] = {}
        self.gap = Gap()
        self.last_gap: Optional[Dict[str, Any]] = None
        self.next_refresh = 0.0
        self.retry_at = 0.0
        self.retry_delay = RETRY_MIN
        # Retry at least once a publish period, so that etcd's metrics are current again within two
        # publish periods once etcd answers again.
        self.retry_max = max(RETRY_MIN, min(RETRY_MAX, config.metrics.interval * config.metrics.publish_every))

    # -- wanted state ---------------------------------------------------------------------------

    @property
    def final(self) -> bool:
        return self.status is not None and self.status.state.final

    def take(self, kind: str, body: Dict[str, Any]) -> None:
        if self.connected:
            self.retry_at = min(self.retry_at, self.clock())  # news to write: no need to wait for a look
        if not self.dirty:
            self.dirty_since = self.clock()
        if kind == "metrics":
            self.documents["metrics"] = body
            self.dirty.add("metrics")
            if not self.synced and self.connected is False:
                self.gap.add(body.get("seq"), body.get("timestamp", time.time()))
        elif kind == "status":
            self.status = Status.from_dict(body)
            self.documents["status"] = self.status.to_dict()
            self.dirty.update(("status", "running"))
            if self.final and "metrics" in self.documents:
                self.dirty.add("metrics")  # the last sample goes with the final state
        elif kind == "info":
            self.documents["info"] = body
            self.dirty.add("info")
        elif kind == "finish":
            self.finishing = True
            # Give etcd a bounded chance: every member, twice, then the record's TTL takes over.
            self.finish_by = self.clock() + 2 * self.config.etcd.timeout * len(self.config.etcd.hosts) + 1

    def render(self, name: str) -> str:
        if name == "running":
            return dumps(self.status is not None and self.status.running)
        if name == "status" and self.last_gap:
            return dumps(dict(self.documents["status"], last_gap=self.last_gap))
        if name == "metrics":
            return dumps(stored_metrics(self.documents[name]))
        return dumps(self.documents[name])

    # -- etcd -------------------------------------------------------------------------------------

    def ttl(self) -> int:
        return self.config.etcd.keep_finished if self.final else self.config.etcd.ttl

    def needs_sync(self) -> bool:
        """A full sync is due: the first time, after an outage or a vanished record, for a new key, or
        for a new TTL (the final record's)."""
        return not self.synced or not self.dirty <= self.written or self.synced_ttl != self.ttl()

    def sync_all(self) -> None:
        """Write the whole record with its TTL (see supervisor/etcd for how each API makes that safe)."""
        if self.gap.count:
            self.last_gap = self.gap.summary()
        names = [name for name in RECORD_KEYS if name in self.documents or name == "running"]
        self.store.write_all({name: self.render(name) for name in names}, self.ttl())
        self.written = set(names)
        self.synced_ttl = self.ttl()
        self.dirty.clear()
        self.synced = True
        self.gap = Gap()

    def changes(self) -> Dict[str, str]:
        return {name: self.render(name) for name in self.dirty}

    def write_dirty(self) -> None:
        """Write what changed; Missing means the record is not as we left it (see supervisor/etcd)."""
        self.store.write(self.changes())
        self.dirty.clear()

    def holding(self, now: float) -> bool:
        """A sample alone, younger than the hold: it waits for others to go with."""
        return self.dirty == {"metrics"} and now < self.dirty_since + self.hold

    def writes_together(self, now: float) -> bool:
        """Due for nothing but a guarded write of keys already in etcd (most turns: a sample), etcd
        answering: a write that may go in one request with other records' (``Backend.write_together``)."""
        return (bool(self.dirty) and bool(self.connected) and now >= self.retry_at and "info" in self.documents
                and not self.needs_sync())

    def publish(self, now: float) -> None:
        self.unanswered = False  # until this publish's request finds no member answering
        try:
            if "info" not in self.documents:
                self.backend.ping(self.config.etcd.namespace)  # nothing is written before the container exists
                self.retry_at = now + self.retry_max  # till then, a look now and then says whether etcd answers
            elif self.needs_sync():
                announce = not self.synced
                self.sync_all()
                self.next_refresh = now + self.ttl() / 3
                self.alive_until = now + self.ttl()
                if announce:
                    log.info("task record written to etcd (%s) at %s%s",
                             self.config.etcd.api, self.backend.describe(), self.prefix)
                if not self.tidied:
                    self.backend.tidy(self.config.etcd.namespace)
                    self.tidied = True
            elif self.dirty and not self.holding(now):
                self.write_dirty()
            if self.synced and now >= self.next_refresh and not self.final:
                self.store.keep_alive()
                self.next_refresh = now + self.ttl() / 3
                self.alive_until = now + self.ttl()
            self.set_connected(True)
            self.retry_delay = RETRY_MIN
            self.rewriting = False
            self.published_at = time.time()
        except Missing as exc:
            # At once the first time; a record that keeps changing under us (another writer) backs off.
            if not self.rewriting:
                log.warning("the task's record in etcd is not as horizon left it (%s); writing it again whole", exc)
            self.retry_at = now + (self.retry_delay if self.rewriting else 0.0)
            if self.rewriting:
                self.retry_delay = min(self.retry_delay * 2, self.retry_max)
            self.rewriting = True
            self.synced = False
        except Unavailable as exc:
            fatal = self.connected is None and self.config.etcd.required  # the parent gives up and says why
            refused = exc if isinstance(exc, Refused) else None
            if (self.connected is not False or str(refused or "") != str(self.refused or "")) and not fatal:
                if refused:
                    log.warning("etcd refuses horizon (%s): %s; will keep trying", exc, refused.fix)
                else:
                    log.warning("etcd does not answer (%s); will keep trying", exc)
            self.set_connected(False, refused)
            self.unanswered = isinstance(exc, Unanswered)
            self.lose_sync()
            self.retry_at = now + self.retry_delay
            self.retry_delay = min(self.retry_delay * 2, self.retry_max)

    def lose_sync(self) -> None:
        """etcd is away: the record is written whole when it answers, and its gap counts from here."""
        metrics = self.documents.get("metrics")
        if metrics is not None and "metrics" in self.dirty:  # a sample that came before etcd was found away
            self.gap.add(metrics.get("seq"), metrics.get("timestamp", time.time()))
        self.synced = False

    def share_outage(self, other: TaskRecord) -> None:
        """etcd did not answer ``other``, a record on the same connection: it is away for this one too.
        This one waits for the same retry instead of timing out in turn (a host tree's hundred records
        would each take the whole timeout), and counts its gap from now."""
        self.set_connected(False, self.refused, other.outage)  # a refusal of its own stays
        self.lose_sync()
        self.retry_at, self.retry_delay = other.retry_at, other.retry_delay

    def set_connected(self, connected: bool, refused: Optional[Refused] = None, outage: Optional[Outage] = None) -> None:
        """``outage``: the one this record now shares (None: its own, which its publish logged)."""
        if connected and self.outage is not None:
            if self.outage.told:
                log.info("etcd answers again at %s", self.backend.describe())
                self.outage.told = False  # said once, by the first record back
            self.outage = None
        if not connected and self.connected is not False:
            self.outage = outage or Outage()
        self.connected = connected
        self.refused = refused

    def figures(self, now: float) -> Dict[str, Any]:
        """For the publisher's report: how long ago etcd last took a write, and how long the record lives."""
        return {
            "last_publish_age_s": round(time.time() - self.published_at, 3) if self.published_at else None,
            "ttl_left_s": round(max(0.0, self.alive_until - now), 3) if self.synced else None,
        }

    def published_state(self) -> Optional[str]:
        """The task state etcd holds now, as far as we know (None: not in etcd, or not yet current)."""
        if not self.synced or "status" in self.dirty or self.status is None:
            return None
        return self.status.state.value

    def changed_report(self) -> Optional[Dict[str, Any]]:
        """The body of an ``etcd`` frame for the parent, when it differs from the last one sent."""
        body = {"connected": bool(self.connected), "state": self.published_state(),
                "refused": str(self.refused) if self.refused else None,
                "fix": self.refused.fix if self.refused else None}
        if body == self.reported:
            return None
        self.reported = body
        return body

    @property
    def done(self) -> bool:
        return self.finishing and self.synced and not self.dirty

    def due(self, now: float, idle: float) -> float:
        """When the record next wants etcd (a retry, a refresh, a dirty key, a whole record to write again,
        its finish's deadline); ``idle`` when nothing is due before it."""
        if self.retry_at > now:
            due = self.retry_at
        elif not self.synced and "info" in self.documents:
            due = now  # e.g. found changed (Missing) with nothing dirty: written again without waiting for a frame
        else:
            # a final record is never refreshed: its next_refresh stays in the past
            due = idle if self.final else self.next_refresh
        if self.dirty and self.retry_at <= now:
            due = min(due, self.dirty_since + self.hold) if self.holding(now) else now
        return min(due, self.finish_by)

    def given_up(self, now: float) -> bool:
        """Finishing, and there is nothing to write (no container ever existed) or no more time to write it."""
        return self.finishing and ("info" not in self.documents or now >= self.finish_by)


class RequestStats:
    """Every etcd request's count, failures and time: the ``request_span`` the backends call, around the
    heartbeat's own span."""

    def __init__(self, span: RequestSpan) -> None:
        self.span = span
        self.requests = 0
        self.errors = 0
        self.seconds = 0.0

    @contextmanager
    def __call__(self, bound: float) -> Iterator[None]:
        started = time.monotonic()
        self.requests += 1
        try:
            with self.span(bound):
                yield
        except BaseException:
            self.errors += 1
            raise
        finally:
            self.seconds += time.monotonic() - started

    def figures(self) -> Dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "seconds": round(self.seconds, 6)}


class PublisherWorker:
    """The publisher's loop: frames in, a publish of every record that is due, reports out."""

    def __init__(self, records: Dict[TaskKey, TaskRecord], worker: Worker, backend: Backend,
                 control: Optional[ControlWatch] = None, report: Optional[SelfReport] = None,
                 stats: Optional[RequestStats] = None, host_tree: bool = False) -> None:
        """``host_tree``: tasks come (``task``) and go (``drop``), and the worker outlives each final record."""
        self.records = records
        self.host_tree = host_tree
        self.finished: Set[TaskKey] = set()  # tasks whose ``finished`` was sent (a host tree's)
        # A turn of the loop looks at the records its frames touched and at those due by now, never at every
        # record: with hundreds of records, each held sample coming due made a look at all of them, and those
        # looks were most of the CPU the publisher used.
        self.touched: Set[TaskKey] = set()
        self.due_at: Dict[TaskKey, float] = dict.fromkeys(records, 0.0)  # when each record next wants etcd
        self.backend = backend
        self.control = control
        self.report = report
        self.stats = stats
        self.acted: Dict[TaskKey, str] = {}  # the id of the last request passed on, per task
        self.pending: Dict[TaskKey, Request] = {}  # passed on, and kept in etcd until the status settles it
        self.inbox = worker.inbox
        self.outbox = worker.outbox
        self.watch = worker.watch
        self.pulse = worker.pulse

    def receive(self, frame: Frame) -> None:
        if frame.kind in ("task", "drop"):
            self.take_on(frame) if frame.kind == "task" else self.drop(frame.task)
            return
        record = self.records.get(frame.task)
        if record is None:
            log.error("bug: a %s frame for %s, a task this publisher does not keep", frame.kind, frame.task.path)
            return
        record.take(frame.kind, frame.body)
        self.touched.add(frame.task)
        if frame.kind == "status":
            self.settle(frame.task)

    def figures(self) -> Dict[str, Any]:
        """The publisher's own report (supervisor/selfstats.py): its etcd requests and each record's state."""
        now = time.monotonic()
        return {
            "frames_coalesced": self.outbox.coalesced,
            "etcd": self.stats.figures() if self.stats is not None else {},
            "records": {key.path: record.figures(now) for key, record in self.records.items()},
        }

    def run(self) -> int:
        while True:
            self.pulse.beat()
            if self.report is not None:
                self.report.maybe(self.figures)
            if self.watch.gone():
                return EXIT_ORPHANED
            for frame in self.inbox.read():
                self.receive(frame)
            if self.inbox.eof:
                return EXIT_ORPHANED
            if self.control is not None:
                for request in self.control.take():
                    self.pass_on(request)
            keys = self.turn(time.monotonic())
            for key in keys:
                record = self.records[key]
                now = record.clock()
                if now >= record.retry_at:
                    record.publish(now)
                    if record.unanswered:
                        self.share_outage(record)
                report = record.changed_report()
                if report is not None:
                    self.send("etcd", key, report)
                self.note_due(key, record)
            if self.host_tree:
                for key in keys:
                    record = self.records[key]
                    if key not in self.finished and (record.done or record.given_up(record.clock())):
                        self.finished.add(key)
                        self.send("finished", key, {"published": record.done})
                        self.due_at[key] = math.inf  # nothing more to do till the parent drops it (a frame may still come)
            elif all(record.done or record.given_up(record.clock()) for record in self.records.values()):
                for key, record in self.records.items():
                    self.send("finished", key, {"published": record.done})
                drain(self.outbox, self.pulse, 2.0)
                return EXIT_DONE
            self.wait()

    def turn(self, now: float) -> List[TaskKey]:
        """The records this turn looks at: those frames touched and those due (a single task's, always).
        When one of them is a write that may go with others', every record ready to go goes with it."""
        touched = self.touched
        keys = [key for key, at in self.due_at.items() if at <= now or key in touched or not self.host_tree]
        touched.clear()
        if self.host_tree and any(self.records[key].writes_together(now) and not self.records[key].holding(now)
                                  for key in keys):
            self.write_together(list(self.records.values()), now)
        return keys

    def share_outage(self, record: TaskRecord) -> None:
        """etcd did not answer ``record``: every other record on the connection waits for the same retry."""
        for key, other in self.records.items():
            if other is not record:
                other.share_outage(record)
                self.note_due(key, other)

    def note_due(self, key: TaskKey, record: TaskRecord) -> None:
        """When the record next wants etcd, as it stands now (a final one with nothing due: in MAX_WAIT)."""
        now = record.clock()
        self.due_at[key] = record.due(now, now + MAX_WAIT)

    def write_together(self, records: List[TaskRecord], now: float) -> None:
        """The records whose turn is only a write of changed keys go to etcd in as few requests as the API
        allows (v3: one transaction for many); each one's ``publish`` then finds nothing left to write. One
        that did not land (changed behind our back, its lease gone) writes on its own and finds out why."""
        if not self.backend.together:
            return
        ready = {record.store: record for record in records if record.writes_together(now)}
        if len(ready) < 2 or all(record.holding(now) for record in ready.values()):
            return
        try:
            landed = self.backend.write_together([(store, record.changes()) for store, record in ready.items()])
        except Unavailable:
            return  # each record's own write finds etcd away, and the first one tells the others
        for store in landed:
            ready[store].dirty.clear()

    def take_on(self, frame: Frame) -> None:
        """A host tree's new task: its record, and its control key watched."""
        if frame.task not in self.records:
            config = Config.from_document(frame.body["config"])
            self.records[frame.task] = TaskRecord(config, self.backend, frame.body["endpoint"],
                                                   holds=self.backend.together)
            self.due_at[frame.task] = 0.0
            self.watch_control()

    def drop(self, key: TaskKey) -> None:
        """A host tree's task whose end is recorded: forget it."""
        self.records.pop(key, None)
        self.due_at.pop(key, None)
        self.finished.discard(key)
        self.acted.pop(key, None)
        self.pending.pop(key, None)
        self.watch_control()

    def watch_control(self) -> None:
        if self.control is not None:
            self.control.watch(list(self.records))

    def pass_on(self, request: Request) -> None:
        """A control request to the parent, once (by id). Its key stays in etcd until the task's status
        settles it, so a supervisor killed before acting leaves it to the next one."""
        if request.id and self.acted.get(request.task) == request.id:
            return
        self.acted[request.task] = request.id
        self.pending[request.task] = request
        log.info("control request from %s: %s %s", request.by, request.action, request.task.path)
        self.send("control", request.task, {"action": request.action, "id": request.id, "by": request.by})
        self.settle(request.task)

    def settle(self, key: TaskKey) -> None:
        """Delete the task's pending request from etcd (guarded by its revision) once its status shows the
        effect, the refusal or the task's end."""
        request = self.pending.get(key)
        status = self.records[key].status
        if request is None or status is None or not status.settles(request.action, request.id):
            return
        del self.pending[key]
        try:
            self.backend.delete(request.key, request.revision)
        except Unavailable as exc:
            log.debug("could not delete the control request %s now (%s); it expires by itself", request.key, exc)

    def send(self, kind: str, key: TaskKey, body: Dict[str, Any]) -> None:
        try:
            self.outbox.send(kind, key, body)
        except BrokenPipeError:
            pass  # the parent is gone: the next look at it says so

    def wait(self) -> None:
        """Sleep until the earliest record wants etcd (a retry, a refresh, a dirty key), a frame, or MAX_WAIT."""
        now = time.monotonic()
        wake_at = min([now + MAX_WAIT, *self.due_at.values()])
        writers = [self.outbox.fd] if self.outbox.pending else []
        readers = [self.inbox.fd] + ([self.control.fd] if self.control is not None else [])
        _, writable, _ = select.select(readers, writers, [], max(0.0, wake_at - now))
        if writable:
            self.outbox.flush()


def run(start: WorkerStart, config: Config, endpoint: Dict[str, Any], shm: SharedMemory) -> None:
    """Entry point of the publisher worker process."""
    worker = become_worker(start, period=MAX_WAIT)
    stats = RequestStats(worker.pulse.busy)
    backend = connect(config.etcd, password(config.etcd), stats)
    # The watch has a backend of its own: it waits on etcd in its thread, never in the loop's requests.
    control = ControlWatch(connect(config.etcd, password(config.etcd)), config.etcd.namespace, [config.key])
    try:
        record = TaskRecord(config, backend, endpoint)
        report = SelfReport(shm.reports["publisher"])
        code = PublisherWorker({config.key: record}, worker, backend, control.start(), report, stats).run()
    finally:
        backend.close()
    sys.exit(code)


def run_host(start: WorkerStart, host: HostConfig, shm: SharedMemory) -> None:
    """Entry point of a host tree's publisher: one etcd connection for every task it is handed."""
    worker = become_worker(start, period=MAX_WAIT)
    stats = RequestStats(worker.pulse.busy)
    backend = connect(host.etcd, password(host.etcd), stats, shared_lease=True)
    control = ControlWatch(connect(host.etcd, password(host.etcd)), host.etcd.namespace, [])
    try:
        report = SelfReport(shm.reports["publisher"])
        code = PublisherWorker({}, worker, backend, control.start(), report, stats, host_tree=True).run()
    finally:
        backend.close()
    sys.exit(code)
