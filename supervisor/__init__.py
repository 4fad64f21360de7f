"""The supervisor package. Importing it is cheap: the entry points call ``hold_signals`` before the heavy imports."""

import signal

HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def hold_signals() -> None:
    """Block the stop signals and SIGHUP until the arbiter handles them (it unblocks them then).

    Importing Docker, Tornado and etcd clients takes a fraction of a second; a stop signal in that time
    would kill the supervisor by its default action. Blocked, it waits and becomes one clean stop.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)


def main() -> None:
    """``python -m supervisor`` and the ``horizon-supervisor`` command: signals held before the slow imports."""
    hold_signals()
    from supervisor.cli import main as cli_main

    cli_main()
