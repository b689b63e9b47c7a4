"""`python -m pipeline train|prune|info`: train both frameworks, prune them, inspect a model."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli import ArgumentParser
from pipeline.errors import PrunedgeError, fail

FRAMEWORKS = ("torch", "tf")


def _frameworks(value: str) -> list[str]:
    names = FRAMEWORKS if value == "all" else tuple(v.strip() for v in value.split(","))
    for name in names:
        if name not in FRAMEWORKS:
            raise fail("--framework", f"unknown framework {name!r} (choose from {', '.join(FRAMEWORKS)}, all)")
    return list(names)


def _levels(value: str | None):
    from pipeline.prune import LEVELS, check_sparsity
    if not value:
        return LEVELS
    return tuple(check_sparsity(v, "--levels") for v in value.split(","))


def _seeds(args) -> list[int]:
    if args.seeds < 1:
        raise fail("--seeds", f"must be >= 1, got {args.seeds}")
    return [args.seed + i for i in range(args.seeds)]


def _train_config(args):
    from dataclasses import replace
    from pipeline.train import TrainConfig
    config = TrainConfig()
    if args.epochs is not None:
        if args.epochs < 1:
            raise fail("--epochs", f"must be >= 1, got {args.epochs}")
        config = replace(config, epochs=args.epochs)
    return config


def cmd_train(args) -> int:
    from pipeline.stages import train_stage
    for framework in _frameworks(args.framework):
        for seed in _seeds(args):
            path = train_stage(framework, seed=seed, data_dir=args.data_dir,
                               config=_train_config(args), root=args.root)
            print(f"{framework} seed {seed}: {path}")
    return 0


def cmd_prune(args) -> int:
    from pipeline.stages import prune_stage, split_method, train_dir
    methods = [m.strip() for m in args.methods.split(",")]
    for m in methods:
        split_method(m, "--methods")
    from pipeline.data import load_fashion_mnist
    levels = _levels(args.levels)
    for framework in _frameworks(args.framework):
        for seed in _seeds(args):
            trained = train_dir(framework, seed, args.root) / "model.npz"
            if not trained.is_file():
                raise fail(trained, "trained model not found (run `make train` first)")
            out_root = args.root / "export" if seed == 0 else args.root / "seeds" / f"s{seed}"
            paths = prune_stage(trained, framework=framework, methods=methods, levels=levels,
                                out_root=out_root, include_output=args.include_output,
                                dataset=lambda: load_fashion_mnist(args.data_dir))
            print(f"{framework} seed {seed}: {len(paths)} pruned models under {out_root / framework}")
    return 0


def cmd_info(args) -> int:
    import json
    from pipeline.model import load
    model = load(args.model)
    print(f"{args.model}: widths {model.widths}, {model.n_nonzero}/{model.n_params} nonzero parameters")
    for i, layer in enumerate(model.layers):
        kind = "csr" if layer.is_sparse else "dense"
        print(f"  layer {i}: {layer.shape[0]}x{layer.shape[1]} {kind} nnz={layer.nnz} act={layer.activation}")
    print(json.dumps(model.meta, indent=2, sort_keys=True, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--framework", default="all", help="torch, tf, or all (default)")
        p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
        p.add_argument("--seeds", type=int, default=1, help="number of seeds, seed..seed+N-1 (default 1)")
        p.add_argument("--root", type=Path, default=Path("artifacts"), help="artifacts directory")

    p = sub.add_parser("train", help="train the MLP in PyTorch and/or TensorFlow")
    common(p)
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX directory (default $PRUNEDGE_DATA "
                                                    "or /usr/share/datasets/fashion-mnist)")
    p.add_argument("--epochs", type=int, default=None, help="override the default epoch count")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prune", help="prune trained models at every level; shrink (unit) or CSR (weight)")
    common(p)
    p.add_argument("--methods", default="weight,unit", help="comma-separated methods (default weight,unit); also block, block16, "
                   "lowrank, nm, balanced, and any of them + '-ft' (pruned once, then fine-tuned with the mask "
                   "fixed) or + '-gp' (gradual: each level prunes the previous level's fine-tuned model)")
    p.add_argument("--levels", default=None, help="comma-separated sparsity percents in [0, 100) "
                                                  "(default 0,25,50,60,70,80,90,95,97,99)")
    p.add_argument("--include-output", action="store_true", help="weight-prune the output layer too")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST directory (for -ft methods)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("info", help="print a model description's layers and provenance")
    p.add_argument("model", type=Path)
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.cli import run
    return run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
