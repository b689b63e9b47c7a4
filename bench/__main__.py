"""`python -m bench run`: latency, size, accuracy and memory of every exported artifact in every
runtime that can run it -> artifacts/bench/results.csv, results.json. (`python -m bench report`
is `python -m report`.)"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from pipeline import cli
from pipeline.errors import fail


def _ints(option: str, text: str, allowed: dict | None = None) -> tuple[int, ...]:
    out = []
    for t in cli.csv_list(text):
        if allowed and t in allowed:
            out.append(allowed[t])
            continue
        try:
            n = int(t)
        except ValueError:
            raise fail(option, f"expected integers{' or ' + '/'.join(allowed) if allowed else ''}, "
                               f"got {t!r}") from None
        out.append(cli.positive_int(option, n))
    if not out:
        raise fail(option, "empty list")
    return tuple(sorted(set(out)))


def _names(option: str, text: str | None, allowed) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(cli.csv_list(text))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise fail(option, f"unknown {', '.join(unknown) or '(empty)'} (choose from {', '.join(allowed)})")
    return names


def build_parser() -> argparse.ArgumentParser:
    from export.runtimes import RUNTIMES
    parser = cli.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="measure every exported artifact in every runtime",
                       description="Measure latency (p50/p90/p99), file and gzip size, full test-set accuracy and "
                                   "peak memory of every exported artifact in every runtime that can run it. "
                                   "Each runtime's measurements run in a fresh child process, each file in a fork "
                                   "of it; measurements of unchanged files are reused (--remeasure: not).")
    cli.add_root(p, "artifacts/export", "export directory with manifest.json")
    p.add_argument("--out", type=Path, default=Path("artifacts/bench"),
                   help="where results.csv and results.json go (default: %(default)s)")
    cli.add_data_dir(p)
    p.add_argument("--runtimes", "--runtime", dest="runtimes",
                   help=f"comma list of runtimes (default: all of {', '.join(RUNTIMES)})")
    cli.add_frameworks(p, default=None)
    cli.add_methods(p, default=None)
    cli.add_levels(p, "all found")
    p.add_argument("--threads", default="1,all", help="comma list; 'all' = usable cores (default: %(default)s)")
    p.add_argument("--batch", default="1,64", help="comma list of batch sizes (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="few repetitions and only levels 0 and 90 (unless --levels): a smoke test")
    p.add_argument("--min-seconds", type=float, default=None,
                   help="time each measurement at least this long (default 0.03; --quick 0.01)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop timing after this long once enough reps are in (default 0.2; --quick 0.05)")
    p.add_argument("--strict", action="store_true", help="stop at the first failed measurement")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds a child may go without a result (one file's step) before it is stopped "
                        "(default: %(default)s)")
    p.add_argument("--remeasure", action="store_true",
                   help="measure everything again instead of reusing measurements of unchanged files "
                        "(kept in --out/.bench-cache.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--append", action="store_true",
                   help="keep rows of an earlier results.json in --out for artifacts not measured now "
                        "(a sweep in parts)")
    p.set_defaults(func=run)
    p = sub.add_parser("report", add_help=False, help="plots and REPORT.md: the same as `python -m report`")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=report)
    return parser


def config_from_args(args):
    from bench.latency import QUICK, LatencyConfig
    from bench.machine import usable_cores
    from bench.sweep import SweepConfig
    from export.runtimes import RUNTIMES
    if args.timeout <= 0:
        raise fail("--timeout", f"must be > 0, got {args.timeout}")
    timing = QUICK if args.quick else LatencyConfig()
    lo = timing.min_seconds if args.min_seconds is None else args.min_seconds
    hi = max(timing.max_seconds, lo) if args.max_seconds is None else args.max_seconds
    if not 0 <= lo <= hi:
        raise fail("--min-seconds", f"need 0 <= --min-seconds ({lo}) <= --max-seconds ({hi})")
    return SweepConfig(
        root=args.root, out=args.out, data_dir=args.data_dir,
        runtimes=_names("--runtimes", args.runtimes, RUNTIMES) or tuple(RUNTIMES),
        frameworks=tuple(cli.parse_frameworks(args.frameworks) or ()) or None,
        methods=tuple(cli.csv_list(args.methods)) if args.methods else None,
        levels=tuple(cli.parse_levels(args.levels)) if args.levels else None,
        threads=_ints("--threads", args.threads, {"all": usable_cores()}),
        batches=_ints("--batch", args.batch),
        latency=replace(timing, min_seconds=lo, max_seconds=hi),
        quick=args.quick, strict=args.strict, timeout_s=args.timeout, reuse=not args.remeasure)


def check_inputs(config) -> None:
    """Fail early, in one line, on what would otherwise fail every child."""
    from pipeline.data import FILES, data_dir
    if not Path(config.root).is_dir():
        raise fail(config.root, "export directory not found (run `make export` first, or pass --root)")
    d = data_dir(config.data_dir)
    for name in FILES["test"]:
        if not (d / name).is_file():
            raise fail(d / name, "Fashion-MNIST test file not found (pass --data-dir or set PRUNEDGE_DATA)")


def run(args) -> int:
    from bench.sweep import BenchFailure, merge_earlier, sweep, write_results
    config = config_from_args(args)
    check_inputs(config)
    try:
        results = sweep(config, progress=not args.no_progress)
    except BenchFailure as e:
        print(f"error: --strict: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    from pipeline.fileio import locked
    with locked(Path(config.out) / "results.json"):  # another `--append` may be merging its rows right now
        if args.append:
            results = merge_earlier(results, config.out)
        csv_path, json_path = write_results(results, config.out)
    rows = results["rows"]
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows)} rows ({failed} failed) in {results['elapsed_s']:.0f} s -> {csv_path}, {json_path}")
    return 0


def report(args) -> int:
    """The report is a later stage than the bench: hand over to its process instead of importing it."""
    os.execv(sys.executable, [sys.executable, "-m", "report", *args.rest])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["report"]:  # argparse.REMAINDER cannot pass a leading "--help" through
        return report(argparse.Namespace(rest=argv[1:]))
    return cli.main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
