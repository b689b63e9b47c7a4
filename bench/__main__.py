"""`python -m bench run|report`: measure every exported artifact, or report on the results."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

from pipeline.cli import ArgumentParser
from pipeline.errors import PrunedgeError, fail

USAGE = """usage: python -m bench {run,report} [options]

  run     latency, size, accuracy and memory of every exported artifact in every runtime
          -> artifacts/bench/results.csv, results.json
  report  plots and REPORT.md from the results

`python -m bench <command> --help` lists a command's options."""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(option: str, text: str, allowed: dict | None = None) -> tuple[int, ...]:
    out = []
    for t in _csv(text):
        if allowed and t in allowed:
            out.append(allowed[t])
            continue
        try:
            n = int(t)
        except ValueError:
            raise fail(option, f"expected integers{' or ' + '/'.join(allowed) if allowed else ''}, "
                               f"got {t!r}") from None
        if n < 1:
            raise fail(option, f"must be >= 1, got {n}")
        out.append(n)
    if not out:
        raise fail(option, "empty list")
    return tuple(sorted(set(out)))


def _names(option: str, text: str | None, allowed=None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(_csv(text))
    unknown = [n for n in names if allowed is not None and n not in allowed]
    if unknown or not names:
        raise fail(option, f"unknown {', '.join(unknown) or '(empty)'} (choose from {', '.join(allowed)})"
                   if allowed else "empty list")
    return names


def _levels(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        levels = tuple(float(t) for t in _csv(text))
    except ValueError:
        raise fail("--levels", f"expected percentages like 0,90,99, got {text!r}") from None
    if not levels or any(not 0 <= k < 100 for k in levels):
        raise fail("--levels", f"each level must be in [0, 100), got {text!r}")
    return levels


def run_parser() -> argparse.ArgumentParser:
    from export.runtimes import RUNTIMES
    p = ArgumentParser(
        prog="python -m bench run",
        description="Measure latency (p50/p90/p99), file and gzip size, full test-set accuracy and "
                    "peak memory of every exported artifact in every runtime that can run it. "
                    "Each artifact x runtime runs in a fresh child process.")
    p.add_argument("--root", type=Path, default=Path("artifacts/export"),
                   help="export directory with manifest.json (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("artifacts/bench"),
                   help="where results.csv and results.json go (default: %(default)s)")
    p.add_argument("--data-dir", default=None,
                   help="Fashion-MNIST IDX directory (default: $PRUNEDGE_DATA or the Debian package's)")
    p.add_argument("--runtime", help=f"comma list of runtimes (default: all of {', '.join(RUNTIMES)})")
    p.add_argument("--framework", help="comma list, e.g. torch,tf (default: all found)")
    p.add_argument("--method", help="comma list, e.g. weight,unit (default: all found)")
    p.add_argument("--levels", help="comma list of sparsity percentages, e.g. 0,90,99 (default: all)")
    p.add_argument("--threads", default="1,all", help="comma list; 'all' = usable cores (default: %(default)s)")
    p.add_argument("--batch", default="1,64", help="comma list of batch sizes (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="few repetitions and only levels 0 and 90 (unless --levels): a smoke test")
    p.add_argument("--min-seconds", type=float, default=None,
                   help="time each measurement at least this long (default 0.1; --quick 0.01)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop timing after this long once enough reps are in (default 0.3; --quick 0.05)")
    p.add_argument("--strict", action="store_true", help="stop at the first failed measurement")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per child process (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--append", action="store_true",
                   help="keep rows of an earlier results.json in --out for artifacts not measured now "
                        "(a sweep in parts)")
    return p


def config_from_args(args) -> "SweepConfig":
    from bench.latency import QUICK, LatencyConfig
    from bench.machine import usable_cores
    from export.runtimes import RUNTIMES
    from bench.sweep import SweepConfig
    if args.timeout <= 0:
        raise fail("--timeout", f"must be > 0, got {args.timeout}")
    timing = QUICK if args.quick else LatencyConfig()
    lo = timing.min_seconds if args.min_seconds is None else args.min_seconds
    hi = max(timing.max_seconds, lo) if args.max_seconds is None else args.max_seconds
    if not 0 <= lo <= hi:
        raise fail("--min-seconds", f"need 0 <= --min-seconds ({lo}) <= --max-seconds ({hi})")
    timing = replace(timing, min_seconds=lo, max_seconds=hi)
    return SweepConfig(
        root=args.root, out=args.out, data_dir=args.data_dir,
        runtimes=_names("--runtime", args.runtime, RUNTIMES) or tuple(RUNTIMES),
        frameworks=_names("--framework", args.framework), methods=_names("--method", args.method),
        levels=_levels(args.levels),
        threads=_ints("--threads", args.threads, {"all": usable_cores()}),
        batches=_ints("--batch", args.batch),
        latency=timing,
        quick=args.quick, strict=args.strict, timeout_s=args.timeout)


def check_inputs(config) -> None:
    """Fail early, in one line, on what would otherwise fail every child."""
    from pipeline.data import FILES, data_dir
    if not Path(config.root).is_dir():
        raise fail(config.root, "export directory not found (run `make export` first, or pass --root)")
    d = data_dir(config.data_dir)
    for name in FILES["test"]:
        if not (d / name).is_file():
            raise fail(d / name, "Fashion-MNIST test file not found (pass --data-dir or set PRUNEDGE_DATA)")


def run_main(argv: list[str]) -> int:
    from bench.sweep import BenchFailure, merge_earlier, sweep, write_results
    args = run_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        check_inputs(config)
        results = sweep(config, progress=not args.no_progress)
        if args.append:
            results = merge_earlier(results, config.out)
        csv_path, json_path = write_results(results, config.out)
    except PrunedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BenchFailure as e:
        print(f"error: --strict: {e}", file=sys.stderr)
        return 1
    rows = results["rows"]
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows)} rows ({failed} failed) in {results['elapsed_s']:.0f} s -> {csv_path}, {json_path}")
    return 0


def report_main(argv: list[str]) -> int:
    from bench.report import main  # written by the report engineer
    return main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {"run": run_main, "report": report_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
