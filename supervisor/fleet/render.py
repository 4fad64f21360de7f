"""A task as the commands print it: a row of ``ls`` (text or JSON), the ``show`` page, units and durations.

Text is for people (sizes in K/M/G, durations as 3d4h, ``-`` for what is unknown); JSON keeps numbers as
numbers and what is unknown as null, for scripts.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence

from supervisor.fleet.records import FINAL, Task

COLUMNS = ("SERVICE", "TASK", "HOST", "STATE", "CPU%", "MEM", "UPTIME", "RESTARTS", "ENDPOINT", "TAGS")


def parse_time(text: Any) -> Optional[float]:
    """An ISO 8601 time as horizon writes it (``...Z``), as a Unix time; None if it is not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def size(value: Optional[float]) -> str:
    """Bytes as 512B, 3.1K, 12M, 1.5G (powers of 1024, as docker stats and ps do)."""
    if value is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" or abs(value) >= 100 else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: Optional[float]) -> str:
    """Seconds as 45s, 3m07s, 2h05m, 4d03h."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def state_text(task: Task) -> str:
    """The state; a finished record's with its exit code: ``stopped (0)``, ``failed (137)``."""
    return state_cell(task.state, task.status.get("exit_code"))


def state_cell(state: Optional[str], exit_code: Any) -> str:
    return f"{state} ({exit_code})" if state in FINAL and exit_code is not None else state or "unknown"


def row(task: Task, now: float) -> Dict[str, Any]:
    """The task as ``ls --json`` gives it (and each ``watch --json`` line carries). Each document is
    looked up once: ls makes a thousand of these."""
    status, container = task.status, task.container
    state = task.state
    started = parse_time(status.get("started_at") or task.info.get("started_at"))
    alive = started is not None and state is not None and state not in FINAL
    return {
        "service": task.service,
        "task": task.task,
        "host": task.host or None,
        "state": state,
        "exit_code": status.get("exit_code"),
        "reason": status.get("reason"),
        "cpu_percent": number(container.get("cpu_percent")),
        "memory_bytes": number(container.get("memory_bytes")),
        "uptime_s": round(max(0.0, now - started), 1) if alive and started is not None else None,
        "restarts": status.get("restarts"),
        "endpoint": task.url or None,
        "tags": task.tags,
        "started_at": status.get("started_at"),
        "finished_at": status.get("finished_at"),
    }


def cells(task: Task, now: float) -> List[str]:
    """The task's row of the text table, in COLUMNS' order (a finished task has no CPU, memory or uptime)."""
    values = row(task, now)
    cpu, restarts, final = values["cpu_percent"], values["restarts"], values["state"] in FINAL
    return [
        task.service, task.task, values["host"] or "-", state_cell(values["state"], values["exit_code"]),
        f"{cpu:.1f}" if cpu is not None and not final else "-",
        size(values["memory_bytes"]) if not final else "-",
        duration(values["uptime_s"]), str(restarts if restarts is not None else "-"),
        values["endpoint"] or "-", ",".join(values["tags"]) or "-",
    ]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their widest cell, two spaces apart; the last one not padded. One format for
    every line (ls prints a thousand)."""
    widths = [max(map(len, column)) for column in zip(header, *rows)]
    line = "  ".join(f"{{:<{width}}}" for width in widths)
    return "\n".join(line.format(*r).rstrip() for r in [header, *rows])


def ls_table(tasks: Sequence[Task], now: float) -> str:
    return table(COLUMNS, [cells(task, now) for task in tasks])


def when(text: Any, now: float) -> str:
    """A time as written, with how long ago it was: ``2026-01-05T10:00:00.000Z (3m07s ago)``."""
    moment = parse_time(text)
    return "-" if moment is None else f"{text} ({duration(now - moment)} ago)"


def show(task: Task, now: float) -> str:
    """The ``show`` page: what the task is, its status, its endpoint, the latest metrics and processes."""
    info, status, metrics = task.info, task.status, task.metrics
    gap = status.get("last_gap")
    lines = [
        task.name,
        *pairs([
            ("state", state_text(task)),
            ("reason", status.get("reason") or "-"),
            ("restarts", f"{status.get('restarts', 0)}"
             + (f" (next in {status['restart_in_s']} s)" if status.get("restart_in_s") is not None else "")),
            ("started", when(status.get("started_at"), now)),
            ("finished", when(status.get("finished_at"), now)),
            ("updated", when(status.get("updated_at"), now)),
            ("last gap", f"{gap.get('samples')} samples not written to etcd, from {gap.get('from')} to {gap.get('to')}"
             if isinstance(gap, dict) else "-"),
            ("host", task.host or "-"),
            ("endpoint", task.url or "-"),
            ("image", str(info.get("image") or "-")),
            ("command", command_line(info.get("command"))),
            ("tags", ",".join(task.tags) or "-"),
            ("container", str(info.get("container_id") or "-")[:12]),
        ]),
    ]
    if metrics:
        lines += ["", f"metrics (sample {metrics.get('seq', '-')}, {when(sample_time(metrics), now)})"]
        lines += pairs(container_lines(metrics))
        processes = [p for p in metrics.get("processes") or [] if isinstance(p, dict)]
        count = metrics.get("process_count", len(processes))
        lines += ["", f"processes ({len(processes)} of {count}, busiest first)" if processes else "processes: none"]
        if processes:
            lines.append(indent(table(("PID", "CPU%", "RSS", "THREADS", "NAME", "COMMAND"), [
                [str(p.get("pid", "-")), f"{number(p.get('cpu_percent')) or 0.0:.1f}", size(number(p.get("rss_bytes"))),
                 str(p.get("threads", "-")), str(p.get("name", "-")), command_line(p.get("cmdline"))]
                for p in sorted(processes, key=lambda p: -(number(p.get("cpu_percent")) or 0.0))
            ])))
    return "\n".join(lines)


def command_line(value: Any) -> str:
    """A command line as the sampler gives it: a string, or its arguments."""
    if isinstance(value, list):
        return " ".join(map(str, value)) or "-"
    return str(value or "-")


def sample_time(metrics: Dict[str, Any]) -> Optional[str]:
    stamp = number(metrics.get("timestamp"))
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def container_of(metrics: Dict[str, Any]) -> Dict[str, Any]:
    container = metrics.get("container")
    return container if isinstance(container, dict) else {}


def container_lines(metrics: Dict[str, Any]) -> List[tuple[str, str]]:
    container = container_of(metrics)

    def pair(a: str, b: str) -> str:
        first, second = number(container.get(a)), number(container.get(b))
        return "-" if first is None and second is None else f"{size(first)} / {size(second)}"

    cpu = number(container.get("cpu_percent"))
    return [
        ("cpu", f"{cpu:.1f}% of one core" if cpu is not None else "-"),
        ("memory", f"{size(number(container.get('memory_bytes')))} (limit "
                   f"{size(number(container.get('memory_limit_bytes'))) if container.get('memory_limit_bytes') else 'none'})"),
        ("pids", str(container.get("pids", "-"))),
        ("net rx / tx", pair("net_rx_bytes", "net_tx_bytes")),
        ("disk r / w", pair("blkio_read_bytes", "blkio_write_bytes")),
    ]


def pairs(items: Sequence[tuple[str, str]]) -> List[str]:
    width = max(len(name) for name, _ in items)
    return [f"  {name.ljust(width)}  {value}" for name, value in items]


def indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())
