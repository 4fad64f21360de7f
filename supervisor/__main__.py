from supervisor import hold_signals

hold_signals()

from supervisor.cli import main  # noqa: E402 - after hold_signals: this import takes a while

main()
