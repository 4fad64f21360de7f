"""The original entry point: ``python main.py IMAGE "COMMAND" [--etcd HOST:PORT,...] [--service NAME] [--port N]``."""

from supervisor.cli import legacy_main

if __name__ == "__main__":
    legacy_main()
