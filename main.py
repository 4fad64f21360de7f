"""The original entry point: ``python main.py IMAGE "COMMAND" [--etcd HOST:PORT,...] [--service NAME] [--port N]``."""

from supervisor import hold_signals

if __name__ == "__main__":
    hold_signals()
    from supervisor.cli import legacy_main  # after hold_signals: this import takes a while

    legacy_main()
