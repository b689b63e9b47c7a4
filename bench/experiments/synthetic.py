"""A random-weight export tree for benchmarking kernels without training anything.

Writes `<out>/random/<method>/k<NN>/model.npz` (physical: unit -> shrunk, weight -> CSR,
k00 dense) plus the requested export formats, in the layout `bench run` discovers:

    python -m bench.experiments.synthetic --out /tmp/bench_random --levels 0,90,95,99 --formats onnx
    python -m bench run --root /tmp/bench_random --threads 1 --runtime numpy,scipy-csr,onnxruntime

Random He weights have no structure, which is the right control for "what does this kernel
gain from sparsity"; accuracy numbers of this tree are chance level by construction.
"""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline import cli
from pipeline.errors import fail
from pipeline.model import Model, random_model
from pipeline.model_io import save
from pipeline.methods import physical, prune
from pipeline.prune import LEVELS
from pipeline.stages import level_dir

WIDTHS = (784, 1000, 1000, 500, 200, 10)


def pruned(model: Model, method: str, level: float) -> Model:
    if level == 0:
        return model.with_layers(model.layers, method="dense", sparsity=0.0, physical="dense")
    return physical(prune(model, method, level))


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
            kdir = level_dir(Path(out), "random", method, level)
            model = pruned(base, method, level)
            written.append(save(model, kdir / "model.npz"))
            for name in formats:
                fmt = FORMATS[name]
                if fmt.applies_to(model):
                    written.append(fmt.export(model, kdir / fmt.suffix, ExportOptions()))
    return written


def build_parser():
    p = cli.ArgumentParser(prog="python -m bench.experiments.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="export root to write")
    cli.add_levels(p, "0,90,95,99")
    cli.add_methods(p, "weight,unit")
    p.add_argument("--formats", default="onnx", help="export table rows to write (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    files = write_tree(args.out, levels=cli.parse_levels(args.levels or "0,90,95,99"),
                       methods=cli.parse_methods(args.methods), formats=cli.csv_list(args.formats), seed=args.seed)
    print(f"{len(files)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.main(build_parser))
