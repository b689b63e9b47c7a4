"""What every command-line entry point shares: one error path and the options they have in common.

`main(build_parser, argv)` parses and runs a command; a PrunedgeError becomes one `error: ...`
line and status 2, an interrupt status 130. The `add_*` helpers give every CLI the same option
names (`--frameworks`, `--methods`, `--levels`, `--root`, `--data-dir`, `--seed`), each with
its singular spelling as an alias, and parse their values in one place.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from pipeline.errors import PrunedgeError, fail

FRAMEWORKS = ("torch", "tf")


def run(command: Callable[..., int], *args) -> int:
    """Call `command`; a PrunedgeError becomes `error: <message>` on stderr and status 2."""
    try:
        return command(*args) or 0
    except PrunedgeError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no (full disk, permissions, a file where a dir should be)
        where = e.filename if e.filename is not None else type(e).__name__
        print(f"error: {where}: {' '.join((e.strerror or str(e)).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def main(build_parser: Callable[[], argparse.ArgumentParser], argv=None) -> int:
    """Parse `argv` with the parser and run the sub-command's `func(args)` through `run`; --help and
    usage mistakes return argparse's status (0 / 2) instead of raising SystemExit."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    return run(args.func, args)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error: ...` line (status 2) like every other bad input;
    sub-command parsers inherit it."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see --help)\n")


def csv_list(value: str) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


# ---------------------------------------------------------------- shared options

def add_root(p, default: str = "artifacts", what: str = "artifacts directory") -> None:
    p.add_argument("--root", type=Path, default=Path(default), help=f"{what} (default {default})")


def add_data_dir(p) -> None:
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX directory (default $PRUNEDGE_DATA "
                                                    "or /usr/share/datasets/fashion-mnist)")


def add_seed(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")


def add_frameworks(p, default: str | None = "all") -> None:
    p.add_argument("--frameworks", "--framework", dest="frameworks", default=default,
                   help="torch, tf, or all" + (" (default)" if default == "all" else " (default: all found)"))


def add_methods(p, default: str | None, extra: str = "") -> None:
    from pipeline.methods import TUNINGS
    tunings = "; ".join(f"'<method>{s}' = {d}" for s, d in TUNINGS.items() if s)
    p.add_argument("--methods", "--method", dest="methods", default=default,
                   help=f"comma-separated pruning methods (default {default or 'all found'}); {tunings}{extra}")


def add_levels(p, default_text: str = "0,25,50,60,70,80,90,95,97,99") -> None:
    p.add_argument("--levels", default=None, help=f"comma-separated sparsity percents in [0, 100) "
                                                  f"(default {default_text})")


def parse_frameworks(value: str | None, option: str = "--frameworks") -> list[str] | None:
    if value is None:
        return None
    names = list(FRAMEWORKS) if value == "all" else csv_list(value)
    for name in names:
        if name not in FRAMEWORKS:
            raise fail(option, f"unknown framework {name!r} (choose from {', '.join(FRAMEWORKS)}, all)")
    if not names:
        raise fail(option, "no framework given")
    return names


def parse_methods(value: str | None, option: str = "--methods") -> list[str] | None:
    if value is None:
        return None
    from pipeline.methods import resolve
    names = csv_list(value)
    for name in names:
        resolve(name, option)
    if not names:
        raise fail(option, "no method given")
    return list(dict.fromkeys(names))


def parse_levels(value: str | None, option: str = "--levels") -> list[float]:
    """Sparsity percents; the default ladder when empty. Levels that name one k-dir twice are refused."""
    from pipeline.prune import LEVELS, check_sparsity
    if not value:
        return [float(k) for k in LEVELS]
    levels = [check_sparsity(v, option) for v in csv_list(value)]
    if not levels:
        raise fail(option, "no level given")
    from pipeline.stages import level_name
    seen: dict[str, float] = {}
    for k in levels:
        if level_name(k) in seen and seen[level_name(k)] != k:
            raise fail(option, f"{seen[level_name(k)]:g} and {k:g} both name k-dir {level_name(k)}")
        seen[level_name(k)] = k
    return sorted(set(levels))


def output_dir(option: str, path) -> Path:
    """The directory a command writes into, created now and proven writable with a probe file, so a
    file in the way, a read-only place or an over-long name is one error line before any work."""
    import tempfile
    path = Path(path)
    if any(len(part.encode()) > 255 for part in path.parts):
        raise fail(option, f"{str(path)[:80]}...: a path component is longer than 255 bytes")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise fail(option, f"{path}: cannot write there ({e.strerror or e})") from None
    return path


def positive_int(option: str, value, *, maximum: int | None = None) -> int:
    if not isinstance(value, int) or value < 1 or (maximum is not None and value > maximum):
        raise fail(option, f"must be an integer in [1, {maximum}]" if maximum else f"must be >= 1, got {value!r}")
    return value
