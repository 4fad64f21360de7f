"""Usage mistakes on every command line horizon has (the supervisor's and the ``horizon`` command's):
one line on stderr, exit 2, never a traceback, and never a flag's value echoed (it may be a secret)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, NoReturn

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """Exit 2 with one line, and no abbreviated flags: '--etcd-name' must not quietly mean --etcd-namespace."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def who(self) -> str:
        """The name an error line starts with."""
        return self.prog

    def error(self, message: str) -> NoReturn:
        unknown = message.partition("unrecognized arguments: ")[2].split()
        if unknown:  # name the flags, not their values: a mistyped --etcd-password=... must not be echoed
            flags = [arg.split("=")[0] for arg in unknown if arg.startswith("-")]
            message = f"unrecognized arguments: {' '.join(flags or unknown)}{self.suggestion(flags)}"
        self.exit(EXIT_USAGE, f"{self.who()}: error: {message} (see --help)\n")

    def flags(self) -> Dict[str, str]:
        """Every flag this parser knows, by its name without dashes."""
        return {name.lstrip("-"): name for action in self._actions for name in action.option_strings}

    def suggestion(self, flags: List[str]) -> str:
        """The flag nearest to the first unknown one, as an unknown config key gets the nearest key."""
        import difflib  # for a mistake only: every command line pays for what is imported at the top

        known = self.flags()
        close = difflib.get_close_matches(flags[0].lstrip("-"), known, n=1) if flags else []
        return f"; did you mean {known[close[0]]}?" if close else ""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    print(f"horizon: error: {message}", file=sys.stderr)
    sys.exit(code)
