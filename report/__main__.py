"""`python -m report`: plots and <root>/report/REPORT.md, every number computed from the export
manifest (or seeds.csv), the bench results and the trained weights."""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline import cli
from pipeline.errors import fail
from report.analysis import TOLERANCE
from report.build import ReportConfig, build


def build_parser():
    p = cli.ArgumentParser(prog="python -m report", description=__doc__)
    cli.add_root(p)
    p.add_argument("--out", type=Path, default=None, help="output directory (default: <root>/report)")
    p.add_argument("--device-results", type=Path, action="append", default=[], metavar="PATH",
                   help="results .csv/.json from a device bundle run (repeatable); gets its own table")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help="accuracy points below dense still counted as no loss (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="first compute accuracy vs sparsity over seeds 0..N-1 of each network in the tree "
                        "(MLP and/or CNN, both frameworks; trains missing seeds)")
    p.add_argument("--batch", type=int, default=1,
                   help="batch size of the latency plots, speed table and recommendations (default: 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="thread count of the latency plots, speed table and recommendations (default: 1)")
    p.add_argument("--no-plots", action="store_true", help="text and tables only, no PNGs")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    if not 0 <= args.tolerance < 100:
        raise fail("--tolerance", f"must be in [0, 100) points, got {args.tolerance}")
    cli.positive_int("--batch", args.batch)
    cli.positive_int("--threads", args.threads)
    if args.seeds is not None:
        cli.positive_int("--seeds", args.seeds)
    for path in args.device_results:
        if not path.is_file():
            raise fail(path, "device results file not found")
    cli.output_dir("--out", args.out or args.root / "report")
    path = build(ReportConfig(root=args.root, out_dir=args.out, device_results=tuple(args.device_results),
                              tolerance=args.tolerance, seeds=args.seeds, plots=not args.no_plots,
                              batch=args.batch, threads=args.threads))
    print(path)
    return 0


def main(argv=None) -> int:
    return cli.main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
