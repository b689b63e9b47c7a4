"""What every command-line entry point shares: user errors as one line, exit status 2."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from pipeline.errors import PrunedgeError


def run(command: Callable[..., int], *args) -> int:
    """Call `command`; a PrunedgeError becomes `error: <message>` on stderr and status 2."""
    try:
        return command(*args)
    except PrunedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error: ...` line (status 2) like every other bad input;
    sub-command parsers inherit it."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")
