"""`python -m bundle`: a self-checking deploy bundle of one exported file (bundle/build.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from bundle.build import BUNDLE_ROOT, make_bundle
from bundle.choose import BENCH_ROOT, EXPORT_ROOT, bundle_formats, shippable_runtimes
from pipeline import cli
from pipeline.errors import fail


# LiteRT delegate setting -> the runtime row that runs with it (the older --delegate spelling)
DELEGATE_RUNTIMES = {r.delegate: r.name for r in shippable_runtimes().values() if r.delegate}


def build_parser():
    p = cli.ArgumentParser(prog="python -m bundle", description=__doc__,
                           epilog="Without --model: the fastest artifact (batch 1, 1 thread) within 1 point of "
                                  "dense accuracy in artifacts/bench/results.csv, else torch/<method>/k00.")
    p.add_argument("--model", type=Path, help="export k-dir (e.g. artifacts/export/torch/unit/k90) or model file")
    p.add_argument("--format", dest="fmt", choices=sorted(bundle_formats()), default="onnx", help="default: onnx")
    p.add_argument("--variant", help="fp32 (default), fp16, int8-dynamic, ... (picks model.<variant>.<ext>)")
    p.add_argument("--runtime", choices=sorted(shippable_runtimes()),
                   help="run it in this runtime instead of the one it was verified and shipped with")
    p.add_argument("--delegate", choices=sorted(DELEGATE_RUNTIMES),
                   help="LiteRT only, the older spelling of --runtime litert-xnnpack / litert-builtin")
    p.add_argument("--name", help="bundle name (default: <framework>-<method>-kNN-<variant>-<format>)")
    p.add_argument("--out-root", type=Path, default=BUNDLE_ROOT, help=f"default: {BUNDLE_ROOT}")
    p.add_argument("--export-root", type=Path, default=EXPORT_ROOT, help=f"default: {EXPORT_ROOT}")
    p.add_argument("--bench-root", type=Path, default=BENCH_ROOT, help=f"default: {BENCH_ROOT}")
    p.add_argument("--data", type=Path, help="an imported model's labeled set (.npz with class_names, or an IDX "
                                             "directory with class_names.txt) for its class names; default: the "
                                             "export manifest's config.data")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    runtime = args.runtime
    if args.delegate:
        if args.fmt != "tflite":
            raise fail("--delegate", f"{args.fmt} bundles have no LiteRT delegate; {args.delegate!r} does not apply")
        runtime = DELEGATE_RUNTIMES[args.delegate]
    bundle = make_bundle(args.model, fmt=args.fmt, variant=args.variant, out_root=args.out_root, name=args.name,
                         runtime=runtime, export_root=args.export_root, bench_root=args.bench_root, data=args.data)
    print(bundle)
    print(bundle.parent / f"{bundle.name}.tar.gz")
    return 0


def main(argv=None) -> int:
    return cli.main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
