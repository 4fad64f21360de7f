"""``horizon``: the fleet's tasks across every host, from etcd, and control of them.

Exit status: 0 done; 1 not done (etcd does not answer or refuses, no such task, nothing to do, no effect
within the timeout, no log lines to be had); 2 a usage mistake. Every failure is one line on stderr,
``horizon: error: ...``, never a traceback.

The commands' own modules (changes, control, logs, prune) are imported by the command that needs them:
every command pays for what ls imports, so that stays small (bench/cli_ls.py measures ls).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

from supervisor import config as cfg
from supervisor.etcd import layout
from supervisor.etcd.errors import CREDENTIALS_FIX, Refused, Unavailable
from supervisor.etcd.store import Backend
from supervisor.fleet import connection, render
from supervisor.fleet.records import ACTIONS, Fleet, Selection, Task
from supervisor.state import TaskState
from supervisor.usage import EXIT_USAGE, Parser, fail

EXIT_FAILED = 1
CONTROL_TIMEOUT = "30"
REFRESH = 1.0  # seconds between redraws of watch's table when nothing changes (uptimes move on)
QUIET = 10.0  # seconds one wait of watch's JSON lines may stay open without news

EXAMPLES = """\
examples:
  horizon ls                                   every task on every host (etcd at $HORIZON_ETCD or 127.0.0.1:2379)
  horizon ls --service web --tag canary --json
  horizon --etcd 10.0.0.5:2379,10.0.0.6:2379 --api v2 ls --state failed
  horizon --config /etc/horizon/web.ini show web/task-1f2e3d4c5b6a
  horizon watch --service web                  a live table on a terminal; JSON lines when piped
  horizon pause web/task-1 web/task-2          then wait until both are paused (--timeout, default 30 s)
  horizon stop --service web --tag canary --yes
  horizon logs web/task-1 --tail 200 --follow
  horizon prune --dry-run --older-than 3600
  horizon sd --listen 127.0.0.1:9273           Prometheus http_sd (or --file PATH for file_sd)
"""


class HorizonParser(Parser):
    def who(self) -> str:
        return "horizon"

    def flags(self) -> Dict[str, str]:
        """The commands' flags too: an unknown flag after a command is reported by the main parser."""
        known = super().flags()
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    known.update(sub.flags() if isinstance(sub, Parser) else {})
        return known


def argument(convert: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """A config converter as an argparse type: its message, not argparse's 'invalid convert value'."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name
    return parse


def listen_address(text: str) -> Tuple[str, int]:
    """HOST:PORT to serve on, the port given (no default would be the one a reader expects)."""
    if not text.rpartition(":")[2].isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT: give the port too, e.g. 127.0.0.1:9273")
    return cfg.host_port(text)


def task_name(text: str) -> Tuple[str, str]:
    """SERVICE/TASK, each part checked as the supervisor checks service and task names."""
    service, slash, task = text.partition("/")
    if not slash:
        raise ValueError(f"{text!r} is not SERVICE/TASK (horizon ls lists them)")
    return cfg.service_name(service), cfg.task_name(task)


# -- the command line -------------------------------------------------------------------------------

def parser() -> HorizonParser:
    main = HorizonParser(
        prog="horizon", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="The fleet of horizon tasks across every host, as etcd holds it: list, show and watch "
        "them, stop, pause and resume them, read their output, and tidy finished records. The etcd options "
        "go before or after the command.",
    )
    connection.add_options(main, defaults=True)
    commands = main.add_subparsers(dest="command", metavar="COMMAND", parser_class=HorizonParser)
    commands.required = True
    etcd = HorizonParser(add_help=False)  # the options once, given to each command as a parent: cheaper
    connection.add_options(etcd, defaults=False)  # than adding them nine times (every command line builds all)

    def command(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary, epilog=f"example:\n  {example}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter, parents=[etcd])

    def filters(sub: argparse.ArgumentParser, states: bool = True) -> None:
        sub.add_argument("--service", type=argument(cfg.service_name, "service"), help="tasks of this service")
        sub.add_argument("--tag", dest="tags", action="append", default=[], metavar="TAG",
                         help="tasks carrying this tag (repeat: every one)")
        if states:
            sub.add_argument("--state", choices=[s.value for s in TaskState], help="tasks in this state")
            sub.add_argument("--host", help="tasks on this host (its name, or the endpoint's address)")

    def json_flag(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument("--json", action="store_true", help=what)

    name = argument(task_name, "SERVICE/TASK")
    sub = command("ls", "one row per task, from one read of etcd: service, task, host, state (a finished "
                  "record's with its exit code), CPU%%, memory, uptime, restarts, endpoint, tags",
                  "horizon ls --service web --state running")
    filters(sub)
    json_flag(sub, "one JSON array of the rows")
    sub = command("show", "a task's info, status (reason, restarts, last gap), endpoint and latest metrics "
                  "with its processes", "horizon show web/task-1 --json")
    sub.add_argument("task", type=name, metavar="SERVICE/TASK")
    json_flag(sub, "the record as JSON")
    sub = command("watch", "the fleet live, from etcd's watch (v3) or wait (v2): a table refreshed in place "
                  "on a terminal, else JSON lines of changes (appeared, changed, gone); until interrupted",
                  "horizon watch --service web --json | jq .")
    filters(sub)
    json_flag(sub, "JSON lines even on a terminal")
    for action, (_, effect) in ACTIONS.items():
        sub = command(action, f"{action} tasks through etcd and wait until they are {effect} (exit 1 if not "
                      "within --timeout); a selection by --service/--tag is confirmed on a terminal",
                      f"horizon {action} web/task-1 web/task-2")
        sub.add_argument("tasks", type=name, nargs="*", metavar="SERVICE/TASK")
        filters(sub, states=False)
        sub.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    sub = command("logs", "a task's output from its endpoint; once it has ended (or when the endpoint does "
                  "not answer), the last lines its record keeps", "horizon logs web/task-1 --tail 100 --follow")
    sub.add_argument("task", type=name, metavar="SERVICE/TASK")
    sub.add_argument("--tail", type=argument(cfg.integer(0, 1_000_000), "tail"), default=50, metavar="N",
                     help="the last N lines (default 50)")
    sub.add_argument("--follow", "-f", action="store_true", help="then each new line, until the task ends")
    sub = command("prune", "remove finished records that would never expire (no TTL or lease) or finished "
                  "longer than --older-than ago, and (v2) empty service directories; never a live record",
                  "horizon prune --dry-run")
    sub.add_argument("--dry-run", "-n", action="store_true", help="say what would be removed, remove nothing")
    sub.add_argument("--older-than", type=argument(cfg.number(0.0), "seconds"), default=600.0, metavar="SECONDS",
                     help="finished records older than this (default 600, the default keep_finished)")
    sub = command("sd", "Prometheus service discovery: every live task's endpoint as a target (labels service, "
                  "task, tags), kept current from etcd's watch (v3) or wait (v2); http_sd with --listen, "
                  "file_sd with --file (written atomically)", "horizon sd --listen 127.0.0.1:9273")
    sub.add_argument("--listen", type=argument(listen_address, "HOST:PORT"), metavar="HOST:PORT",
                     help="serve the target list as http_sd JSON here")
    sub.add_argument("--file", metavar="PATH", help="write the target list here (file_sd), on every change")
    sub.add_argument("--once", action="store_true", help="with --file: write it once and exit")
    sub.add_argument("--targets", choices=("task", "host"), default="task",
                     help="one target per task (default), or per endpoint: a host tree's /metrics has every task's series")
    return main


# -- what every command needs -------------------------------------------------------------------------

class Session:
    """The command's etcd, opened once."""

    def __init__(self, args: argparse.Namespace, request_timeout: bool = True,
                 bound: Optional[float] = None) -> None:
        try:
            self.etcd = connection.within(connection.etcd_section(args, request_timeout=request_timeout), bound)
        except cfg.ConfigError as exc:
            fail(str(exc))
        self.namespace = self.etcd.namespace
        self.backend: Backend = connection.open_backend(self.etcd)

    @property
    def hosts(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.etcd.hosts)

    def fleet(self) -> Tuple[Fleet, int]:
        """Every record, from one read of the services prefix, and the revision it is current as of."""
        entries, revision = self.backend.read_prefix(layout.services_prefix(self.namespace) + "/")
        return Fleet.read(self.namespace, entries), revision

    def task(self, name: Tuple[str, str]) -> Task:
        """The task's record, from one read of its prefix; one line and exit 1 when there is none."""
        service, task = name
        entries, _ = self.backend.read_prefix(layout.task_prefix(self.namespace, service, task) + "/")
        found = Fleet.read(self.namespace, entries).get(service, task)
        if found is None:
            fail(f"{service}/{task}: no such task under {self.namespace} (horizon ls lists them)", EXIT_FAILED)
        return found


def selection(args: argparse.Namespace) -> Selection:
    return Selection(args.service, tuple(args.tags), getattr(args, "state", None), getattr(args, "host", None))


def print_json(document: Any, indent: Optional[int] = None) -> None:
    print(json.dumps(document, indent=indent, sort_keys=indent is not None))


def note(message: str) -> None:
    print(f"horizon: {message}", file=sys.stderr, flush=True)


# -- the commands ----------------------------------------------------------------------------------

@contextmanager
def uncollected() -> Iterator[None]:
    """The cyclic garbage collector paused: ls makes some 20,000 containers for 1,000 records, which
    reference counting frees, and which the collector would walk time and again for nothing. As a
    decorator, it resumes once the command's frame is gone with them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@uncollected()
def ls(args: argparse.Namespace) -> int:
    session = Session(args)
    fleet, _ = session.fleet()
    tasks, now = selection(args).pick(fleet), time.time()
    if args.json:
        print_json([render.row(task, now) for task in tasks])
    elif tasks:
        print(render.ls_table(tasks, now))
    else:
        note(f"no tasks{'' if selection(args).empty else ' selected'} under {session.namespace} "
             f"(etcd {session.etcd.api} at {session.hosts})")
    return 0


def show(args: argparse.Namespace) -> int:
    task = Session(args).task(args.task)
    if args.json:
        print_json({"service": task.service, "task": task.task, **task.keys}, indent=2)
    else:
        print(render.show(task, time.time()))
    return 0


def watch(args: argparse.Namespace) -> int:
    from supervisor.fleet import changes

    session = Session(args)
    follower = changes.Follower(session.backend, session.namespace)
    follower.read()
    chosen = selection(args)
    table = sys.stdout.isatty() and not args.json
    before: changes.Look = {}
    drawn = 0.0
    trouble = ""
    if table:
        sys.stdout.write("\x1b[2J")
    while True:
        current = changes.selected(follower.fleet, chosen)
        if table:
            if time.monotonic() - drawn >= REFRESH or changes.states(current) != before:
                draw(session, list(current.values()), trouble)
                drawn = time.monotonic()
        else:
            for event in changes.differences(before, current, time.time()):
                print(json.dumps(event), flush=True)
        before = changes.states(current)
        try:
            follower.step(REFRESH if table else QUIET)
            trouble = ""
        except Refused:
            raise
        except Unavailable as exc:
            if not trouble and not table:
                note(f"etcd does not answer ({one_line(exc)}); trying again")
            trouble = f"etcd does not answer ({one_line(exc)}); trying again"
            time.sleep(REFRESH)


def draw(session: Session, tasks: List[Task], trouble: str) -> None:
    """The table, over the previous one: from the top left, each line cleared to its end, then the rest."""
    now = time.time()
    title = (f"horizon watch: {len(tasks)} task{'s' * (len(tasks) != 1)} under {session.namespace}, etcd "
             f"{session.etcd.api} at {session.hosts}, {time.strftime('%H:%M:%S')}")
    lines = [title, trouble, render.ls_table(sorted(tasks, key=lambda t: t.name), now)]
    sys.stdout.write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in "\n".join(lines).split("\n")) + "\x1b[J")
    sys.stdout.flush()


def act(args: argparse.Namespace) -> int:
    from supervisor.fleet import control

    action = args.command
    if bool(args.tasks) == bool(args.service or args.tags):
        fail("name the tasks (SERVICE/TASK ...) or select them with --service/--tag, not both and not neither")
    try:
        timeout = cfg.number(0.1)(args.timeout or CONTROL_TIMEOUT)
    except ValueError as exc:
        fail(f"--timeout: {exc}")
    session = Session(args, request_timeout=False, bound=timeout)
    fleet, revision = session.fleet()
    if args.tasks:
        refusals = [why for why in (control.refusal(f"{s}/{t}", fleet.get(s, t), action) for s, t in args.tasks) if why]
        if refusals:
            for why in refusals[:-1]:
                note(why)
            fail(refusals[-1] + ("; nothing was asked of any task" if len(args.tasks) > 1 else ""), EXIT_FAILED)
        targets = [task for task in (fleet.get(s, t) for s, t in dict.fromkeys(args.tasks)) if task is not None]
    else:
        chosen = [task for task in selection(args).pick(fleet) if not task.final]
        targets = [task for task in chosen if control.refusal(task.name, task, action) is None]
        for task in chosen:
            if task not in targets:
                note(f"skipped: {control.refusal(task.name, task, action)}")
        if not targets:
            fail(f"no task to {action}: none selected {'is' if chosen else 'lives'} "
                 f"{'in a state to ' + action if chosen else 'under ' + session.namespace}", EXIT_FAILED)
        if not args.yes and sys.stdin.isatty() and not confirm(action, targets):
            fail("nothing was asked", EXIT_FAILED)
    requests = [control.request(session.namespace, task, action) for task in targets]
    try:
        control.send(session.backend, requests, timeout)
    except Refused as exc:
        fail(f"etcd at {session.hosts} refused the {action} request ({one_line(exc)}): only a user who may write "
             f"{layout.control_prefix(session.namespace)}/ can control tasks; check --username and --password-file",
             EXIT_FAILED)
    failed = 0
    for result in control.await_effect(session.backend, session.namespace, fleet, revision, requests, timeout):
        name = result.request.task.name
        if result.problem is None:
            print(f"{name} {ACTIONS[action][1]} ({result.seconds:.2f} s)", flush=True)
        else:
            failed += 1
            note(f"error: {name}: {result.problem}")
    return EXIT_FAILED if failed else 0


def confirm(action: str, targets: Sequence[Task]) -> bool:
    names = ", ".join(task.name for task in targets[:10]) + (f" and {len(targets) - 10} more" if len(targets) > 10 else "")
    print(f"{action} {len(targets)} task{'s' * (len(targets) != 1)}: {names}? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def read_logs(args: argparse.Namespace) -> int:
    from supervisor.fleet import logs

    session = Session(args)
    task = session.task(args.task)
    why = f"{task.name} has ended ({render.state_text(task)})" if task.final else ""
    if not task.final:
        try:
            logs.stream(task.url, args.tail, args.follow, sys.stdout.buffer, max(session.etcd.timeout, 5.0))
            return 0
        except logs.BrokenOff as exc:
            fail(str(exc), EXIT_FAILED)
        except logs.Unreachable as exc:
            why = str(exc)
    kept = logs.kept_lines(task)
    if not kept:
        if task.final:  # an answer, not a failure: there are none to show
            note(f"{why}; its record keeps no log lines{' (written by an older horizon)' if kept is None else ''}")
            return 0
        fail(f"{why}; and a live task's record keeps no log lines", EXIT_FAILED)
    shown = kept[-args.tail:] if args.tail else []
    note(f"{why}; the last {len(shown)} line{'s' * (len(shown) != 1)} its record keeps:")
    for line in shown:
        print(line)
    return 0


def prune_records(args: argparse.Namespace) -> int:
    from supervisor.fleet import prune

    session = Session(args)
    fleet, _ = session.fleet()
    verb = "would remove" if args.dry_run else "removed"
    removed = 0
    for removal in prune.plan(fleet, time.time(), args.older_than):
        if args.dry_run or prune.remove(session.backend, session.namespace, removal):
            print(f"{verb} {removal.task.name}: {removal.why}")
            removed += 1
        else:
            note(f"kept {removal.task.name}: it changed since it was read")
    directories = session.backend.tidy(session.namespace, dry_run=args.dry_run)
    for path in directories:
        print(f"{verb} the empty directory {path}")
    note(f"{verb} {removed} record{'s' * (removed != 1)} and {len(directories)} empty "
         f"director{'ies' if len(directories) != 1 else 'y'} under {session.namespace}")
    return 0


def discover(args: argparse.Namespace) -> int:
    from supervisor.fleet import changes, sd

    if not (args.listen or args.file):
        fail("say where the targets go: --listen HOST:PORT (http_sd), --file PATH (file_sd), or both")
    if args.once and (args.listen or not args.file):
        fail("--once writes --file once; it goes without --listen")
    if args.file and not os.path.isdir(os.path.dirname(os.path.abspath(args.file))):
        fail(f"--file {args.file}: its directory does not exist; create it or give another path")
    session = Session(args)
    trouble: List[Optional[str]] = [None]

    def report(exc: Optional[BaseException]) -> None:
        if exc is not None and trouble[0] is None:
            note(f"etcd does not answer ({one_line(exc)}); the targets stay as they were, trying again")
        elif exc is None and trouble[0] is not None:
            note("etcd answers again")
        trouble[0] = one_line(exc) if exc is not None else None

    try:
        return sd.run(changes.Follower(session.backend, session.namespace), args.listen, args.file, args.once, report,
                      args.targets)
    except OSError as exc:
        fail(f"cannot serve or write the targets: {exc.strerror or exc}", EXIT_FAILED)


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "ls": ls, "show": show, "watch": watch, "stop": act, "pause": act, "resume": act, "logs": read_logs,
    "prune": prune_records, "sd": discover,
}


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def cli_fix(fix: str) -> str:
    """A refusal's fix in the words of this command's flags, not of a task file's keys."""
    if fix == CREDENTIALS_FIX:
        return "check --username and --password-file (or $HORIZON_ETCD_PASSWORD), or --ca-cert, --cert and --key"
    return fix.replace("set [etcd] api = ", "use --api ")


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail again on the closed pipe."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def main(argv: Optional[List[str]] = None) -> NoReturn:
    if argv is None:  # the horizon command itself (a caller with its own argv, a test, lives on after it)
        # Everything loaded by now lives until exit: frozen, the cyclic collector never walks it again,
        # nor takes it apart at exit (about 30 ms of ls: most of the interpreter's teardown).
        gc.freeze()
    args = parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
    except cfg.ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except Refused as exc:
        fail(f"etcd refused horizon: {one_line(exc)}; {cli_fix(exc.fix)}", EXIT_FAILED)
    except Unavailable as exc:
        fail(f"etcd does not answer: {one_line(exc)}", EXIT_FAILED)
    except KeyboardInterrupt:
        code = 0 if args.command in ("watch", "sd") else 130
    except BrokenPipeError:  # a reader that stopped reading (| head): not an error
        quiet_stdout()
        code = 0
    sys.exit(code)
