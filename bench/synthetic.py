"""A random-weight export tree for benchmarking kernels without training anything.

Writes `<out>/random/<method>/k<NN>/model.npz` (physical: unit -> shrunk, weight -> CSR,
k00 dense) plus the requested export formats, in the layout `bench run` discovers:

    python -m bench.synthetic --out /tmp/bench_random --levels 0,90,95,99 --formats onnx
    python -m bench run --root /tmp/bench_random --threads 1 --runtime numpy,scipy-csr,onnxruntime

Random He weights have no structure, which is the right control for "what does this kernel
gain from sparsity"; accuracy numbers of this tree are chance level by construction.
"""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.cli import ArgumentParser
from pipeline.errors import PrunedgeError, fail
from pipeline.model import Model, random_model
from pipeline.model_io import save
from pipeline.prune import LEVELS
from pipeline.methods import prune
from pipeline.shrink import shrink
from pipeline.sparse import to_csr

WIDTHS = (784, 1000, 1000, 500, 200, 10)
PHYSICAL = {"weight": to_csr, "unit": shrink}


def pruned(model: Model, method: str, level: float) -> Model:
    if level == 0:
        return model.with_layers(model.layers, method="dense", sparsity=0.0, physical="dense")
    return PHYSICAL[method](prune(model, method, level))


def write_tree(out: Path, *, levels=LEVELS, methods=("weight", "unit"), formats=("onnx",),
               seed: int = 0, widths=WIDTHS) -> list[Path]:
    """Every (method, level) k-dir with model.npz and each applicable export format."""
    from export.formats import FORMATS, ExportOptions
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise fail("--formats", f"unknown {', '.join(unknown)} (choose from {', '.join(FORMATS)})")
    base = random_model(list(widths), seed=seed)
    written = []
    for method in methods:
        for level in levels:
            kdir = Path(out) / "random" / method / f"k{int(level):02d}"
            model = pruned(base, method, level)
            written.append(save(model, kdir / "model.npz"))
            for name in formats:
                fmt = FORMATS[name]
                if fmt.applies_to(model):
                    written.append(fmt.export(model, kdir / fmt.suffix, ExportOptions()))
    return written


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m bench.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="export root to write")
    p.add_argument("--levels", default="0,90,95,99", help="sparsity percents (default: %(default)s)")
    p.add_argument("--methods", default="weight,unit", help="(default: %(default)s)")
    p.add_argument("--formats", default="onnx", help="rows of export/formats.py, or '' for npz only "
                                                      "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        try:
            levels = [float(t) for t in args.levels.split(",") if t.strip()]
        except ValueError:
            raise fail("--levels", f"expected numbers like 0,90, got {args.levels!r}") from None
        methods = [m for m in args.methods.split(",") if m.strip()]
        if any(m not in PHYSICAL for m in methods):
            raise fail("--methods", f"choose from {', '.join(PHYSICAL)}, got {args.methods!r}")
        formats = [f for f in args.formats.split(",") if f.strip()]
        files = write_tree(args.out, levels=levels, methods=methods, formats=formats, seed=args.seed)
    except PrunedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(files)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
