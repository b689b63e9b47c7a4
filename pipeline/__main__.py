"""`python -m pipeline train|prune|info`: train both frameworks, prune them, inspect a model."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import cli
from pipeline.errors import fail


def _seeds(args) -> list[int]:
    cli.positive_int("--seeds", args.seeds)
    return [args.seed + i for i in range(args.seeds)]


def _train_config(args):
    from dataclasses import replace
    from pipeline.train import default_config
    config = default_config(args.net)
    if args.epochs is not None:
        config = replace(config, epochs=cli.positive_int("--epochs", args.epochs))
    return config


def cmd_train(args) -> int:
    from pipeline.stages import train_stage
    frameworks, seeds, config = cli.parse_frameworks(args.frameworks), list(_seeds(args)), _train_config(args)
    cli.output_dir("--root", args.root)  # after every option is checked: a refused command leaves nothing
    for framework in frameworks:
        for seed in seeds:
            path = train_stage(framework, seed=seed, data_dir=args.data_dir, config=config, root=args.root)
            print(f"{framework} seed {seed}: {path}")
    return 0


def cmd_prune(args) -> int:
    from pipeline.data import load_fashion_mnist
    from pipeline.prune_stage import prune_stage
    from pipeline.stages import model_name, train_dir
    methods = cli.parse_methods(args.methods)
    levels = cli.parse_levels(args.levels)
    frameworks, seeds = cli.parse_frameworks(args.frameworks), list(_seeds(args))
    cli.output_dir("--root", args.root)
    for framework in frameworks:
        for seed in seeds:
            trained = train_dir(framework, seed, args.root, args.net) / "model.npz"
            if not trained.is_file():
                raise fail(trained, "trained model not found (run `make train` first)")
            out_root = args.root / "export" if seed == 0 else args.root / "seeds" / f"s{seed}"
            paths = prune_stage(trained, framework=model_name(framework, args.net), methods=methods, levels=levels,
                                out_root=out_root, include_output=args.include_output,
                                dataset=lambda: load_fashion_mnist(args.data_dir))
            print(f"{framework} seed {seed}: {len(paths)} pruned models under {out_root / model_name(framework, args.net)}")
    return 0


def cmd_info(args) -> int:
    import json
    from pipeline.model_io import load
    model = load(args.model)
    print(f"{args.model}: input {list(model.input_shape)}, {model.n_nonzero}/{model.n_params} nonzero parameters")
    shapes = model.shapes()
    for i, layer in enumerate(model.layers):
        weights = f" weight {list(layer.shape)} {'csr' if layer.is_sparse else 'dense'} nnz={layer.nnz}" \
            if hasattr(layer, "nnz") else ""
        act = f" act={layer.activation}" if hasattr(layer, "activation") else ""
        print(f"  layer {i}: {layer.kind} -> {list(shapes[i])}{weights}{act}"
              + (f" inputs={list(layer.inputs)}" if layer.inputs else ""))
    print(json.dumps(model.meta, indent=2, sort_keys=True, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        cli.add_frameworks(p)
        cli.add_seed(p)
        p.add_argument("--seeds", type=int, default=1, help="number of seeds, seed..seed+N-1 (default 1)")
        cli.add_root(p)
        cli.add_data_dir(p)
        p.add_argument("--net", default="mlp", choices=("mlp", "cnn"),
                       help="the built-in network: the challenge MLP (default) or the CNN")

    p = sub.add_parser("train", help="train the network in PyTorch and/or TensorFlow")
    common(p)
    p.add_argument("--epochs", type=int, default=None, help="override the default epoch count")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prune", help="prune trained models at every level; shrink (unit) or CSR (weight)")
    common(p)
    cli.add_methods(p, "weight,unit")
    cli.add_levels(p)
    p.add_argument("--include-output", action="store_true", help="weight-prune the output layer too")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("info", help="print a model description's layers and provenance")
    p.add_argument("model", type=Path)
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None) -> int:
    return cli.main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
