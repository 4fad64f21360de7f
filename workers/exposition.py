"""The /metrics document in Prometheus' text format (0.0.4) and in OpenMetrics 1.0, and which one a
request's ``Accept`` asks for (JSON stays the default: curl sends ``*/*``).

Names follow cAdvisor's where the meaning is the same (``container_cpu_usage_seconds_total``,
``container_memory_working_set_bytes``, ...), labelled service, task, host and image. Processes are
grouped by name, as process-exporter does, never by pid (a pid label would make a new series for every
short-lived process, without bound): the 20 names with the most CPU keep their own series and the rest
fold into ``name="other"``. A group's counters add up the deltas of its processes from one sample to the
next, so they never go back when one of its processes exits.

Rendering happens once per sample (``render``), never per request: the endpoint serves the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TOP_NAMES = 20
OTHER = "other"

# (family, type, help, field of the document's "container" part)
CONTAINER_FAMILIES = (
    ("container_cpu_usage_seconds", "counter", "Cumulative CPU time consumed by the container in seconds.", "cpu_seconds"),
    ("container_memory_working_set_bytes", "gauge", "Current working set of the container in bytes.", "memory_bytes"),
    ("container_spec_memory_limit_bytes", "gauge", "Memory limit of the container in bytes (the host's memory without one).", "memory_limit_bytes"),
    ("container_network_receive_bytes", "counter", "Cumulative count of bytes received.", "net_rx_bytes"),
    ("container_network_transmit_bytes", "counter", "Cumulative count of bytes transmitted.", "net_tx_bytes"),
    ("container_fs_reads_bytes", "counter", "Cumulative count of bytes read from block devices.", "blkio_read_bytes"),
    ("container_fs_writes_bytes", "counter", "Cumulative count of bytes written to block devices.", "blkio_write_bytes"),
    ("container_pids", "gauge", "Number of processes and threads in the container's cgroup.", "pids"),
)


def wanted_format(accept: Optional[str]) -> Optional[str]:
    """TEXT, OPENMETRICS, or None (JSON) for an Accept header: the highest q among the two Prometheus
    formats, OpenMetrics on a tie; a bare ``text/plain`` or ``*/*`` is not a request for Prometheus."""
    best: Tuple[float, Optional[str]] = (0.0, None)
    for item in (accept or "").split(","):
        kind, *params = [part.strip() for part in item.split(";")]
        options = dict(param.partition("=")[::2] for param in params)
        try:
            q = float(options.get("q", "1"))
        except ValueError:
            continue
        if kind == "application/openmetrics-text":
            chosen = OPENMETRICS
        elif kind == "text/plain" and options.get("version") == "0.0.4":
            chosen = TEXT
        else:
            continue
        if q > best[0] or (q == best[0] > 0 and chosen == OPENMETRICS):
            best = (q, chosen)
    return best[1]


Family = Tuple[str, List[str]]  # its "# HELP" and "# TYPE" lines, and its samples' lines


def join(tasks: Iterable[List[Family]], openmetrics: bool) -> bytes:
    """One exposition of many tasks' families: each family declared once, with every task's samples under
    it (Prometheus and promtool refuse a family declared twice)."""
    merged: Dict[str, List[str]] = {}
    for families in tasks:
        for header, lines in families:
            merged.setdefault(header, []).extend(lines)
    text = [line for header, lines in merged.items() for line in (header, *lines)]
    if openmetrics:
        text.append("# EOF")
    return ("\n".join(text) + "\n").encode()


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


@dataclass
class Group:
    """One process name's series: counters accumulated from deltas, gauges as last seen."""

    cpu_seconds: float = 0.0
    voluntary: int = 0
    involuntary: int = 0
    rss_bytes: int = 0
    threads: int = 0
    count: int = 0


@dataclass
class ProcessGroups:
    """Process-exporter's grouping: per-name counters that survive their processes."""

    groups: Dict[str, Group] = field(default_factory=dict)
    seen: Dict[int, Tuple[str, float, int, int]] = field(default_factory=dict)  # pid -> name, cpu, vol, invol

    def update(self, processes: Iterable[Mapping[str, Any]]) -> None:
        for group in self.groups.values():
            group.rss_bytes = group.threads = group.count = 0
        seen: Dict[int, Tuple[str, float, int, int]] = {}
        for proc in processes:
            name = str(proc.get("name") or "?")
            cpu, vol, invol = (float(proc.get("cpu_seconds") or 0.0), int(proc.get("ctx_switches_voluntary") or 0),
                               int(proc.get("ctx_switches_involuntary") or 0))
            before = self.seen.get(proc["pid"])
            if before is None or before[0] != name:  # new (or a pid reused): all it used so far is new
                before = (name, 0.0, 0, 0)
            group = self.groups.setdefault(name, Group())
            group.cpu_seconds += max(0.0, cpu - before[1])
            group.voluntary += max(0, vol - before[2])
            group.involuntary += max(0, invol - before[3])
            group.rss_bytes += int(proc.get("rss_bytes") or 0)
            group.threads += int(proc.get("threads") or 0)
            group.count += 1
            seen[proc["pid"]] = (name, cpu, vol, invol)
        self.seen = seen

    def folded(self) -> List[Tuple[str, Group]]:
        """The TOP_NAMES busiest names by CPU so far, then the rest added up as OTHER."""
        ranked = sorted(self.groups.items(), key=lambda item: item[1].cpu_seconds, reverse=True)
        kept, rest = ranked[:TOP_NAMES], ranked[TOP_NAMES:]
        if not rest:
            return kept
        other = Group()
        for _, group in rest:
            for attribute in vars(other):
                setattr(other, attribute, getattr(other, attribute) + getattr(group, attribute))
        return [*kept, (OTHER, other)]


PROCESS_FAMILIES = (
    ("horizon_process_cpu_seconds", "counter", "CPU time used by the task's processes of this name, in seconds.", "cpu_seconds"),
    ("horizon_process_resident_memory_bytes", "gauge", "Resident memory of the task's processes of this name.", "rss_bytes"),
    ("horizon_process_threads", "gauge", "Threads of the task's processes of this name.", "threads"),
    ("horizon_process_num_procs", "gauge", "Number of the task's processes of this name.", "count"),
)


class Exposition:
    """Renders one task's samples for Prometheus; keeps the process groups between samples."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.labels = ""
        self.relabel(labels)
        self.groups = ProcessGroups()

    def relabel(self, labels: Mapping[str, str]) -> None:
        """The task's labels (they are known in full once the task's info is)."""
        self.labels = ",".join(f'{name}="{escape(value)}"' for name, value in labels.items())

    def update(self, document: Mapping[str, Any]) -> None:
        """Take a new sample's process table (call once per sample, before rendering it)."""
        self.groups.update(document.get("processes", []))

    def render(self, document: Mapping[str, Any], openmetrics: bool) -> bytes:
        return join([self.families(document, openmetrics)], openmetrics)

    def families(self, document: Mapping[str, Any], openmetrics: bool) -> List[Family]:
        """The sample's families, each its header lines and its sample lines (``join`` makes the text)."""
        found: List[Family] = []

        def family(name: str, kind: str, text: str, samples: List[Tuple[str, Any]]) -> None:
            if not samples:
                return
            counter = kind == "counter"
            declared = name if (openmetrics or not counter) else f"{name}_total"
            lines = []
            for extra, value in samples:
                labels = f"{self.labels},{extra}" if extra else self.labels
                lines.append(f"{name}{'_total' if counter else ''}{{{labels}}} {number(value)}")
            found.append((f"# HELP {declared} {text}\n# TYPE {declared} {kind}", lines))

        container = document.get("container", {})
        for name, kind, text, key in CONTAINER_FAMILIES:
            value = container.get(key)
            family(name, kind, text, [("", value)] if value is not None else [])
        folded = self.groups.folded()
        for name, kind, text, attribute in PROCESS_FAMILIES:
            family(name, kind, text, [(f'name="{escape(group)}"', getattr(values, attribute)) for group, values in folded])
        family("horizon_process_context_switches", "counter", "Context switches of the task's processes of this name.",
               [(f'name="{escape(group)}",ctxswitch_type="{kind}"', getattr(values, kind))
                for group, values in folded for kind in ("voluntary", "involuntary")])
        family("horizon_sample_seq", "gauge", "Number of the latest sample.", [("", document.get("seq", 0))])
        self.render_self(document.get("supervisor"), family)
        return found

    @staticmethod
    def render_self(section: Optional[Mapping[str, Any]], family: Callable[[str, str, str, List[Tuple[str, Any]]], None]
                    ) -> None:
        """horizon's own series, from the /metrics document's "supervisor" section (when it has one)."""
        if not section:
            return
        processes = section.get("processes", {})
        for name, kind, text, key in (
            ("horizon_self_cpu_seconds", "counter", "CPU time used by a horizon process, in seconds.", "cpu_seconds"),
            ("horizon_self_resident_memory_bytes", "gauge", "Resident memory of a horizon process.", "rss_bytes"),
        ):
            family(name, kind, text, [(f'process="{escape(process)}"', figures[key])
                                      for process, figures in sorted(processes.items()) if figures.get(key) is not None])
        frames, etcd = section.get("frames", {}), section.get("etcd", {})
        for name, kind, text, value in (
            ("horizon_frames_relayed", "counter", "Frames the parent passed on between workers.", frames.get("relayed")),
            ("horizon_frames_coalesced", "counter", "Metrics frames replaced by a newer one before they were sent.", frames.get("coalesced")),
            ("horizon_frames_dropped", "counter", "Malformed frames discarded by the parent.", frames.get("dropped")),
            ("horizon_etcd_requests", "counter", "Requests made to etcd.", etcd.get("requests")),
            ("horizon_etcd_request_errors", "counter", "Requests to etcd that failed.", etcd.get("errors")),
            ("horizon_etcd_request_seconds", "counter", "Time spent in requests to etcd, in seconds.", etcd.get("seconds")),
            ("horizon_etcd_last_publish_age_seconds", "gauge", "Seconds since etcd last took a write of the record.", etcd.get("last_publish_age_s")),
            ("horizon_etcd_record_ttl_seconds", "gauge", "Seconds the record lives in etcd unless kept alive.", etcd.get("ttl_left_s")),
        ):
            family(name, kind, text, [("", value)] if value is not None else [])
        family("horizon_worker_restarts", "counter", "Restarts of a worker of the supervisor.",
               [(f'role="{escape(role)}"', count) for role, count in sorted(section.get("restarts", {}).items())])
