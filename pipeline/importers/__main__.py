"""Inspect or convert a foreign network (MLP or CNN) before running the pipeline on it.

    python -m pipeline.importers MODEL [--arch 784-300-100-10:relu | 28x28x1] [--data DATA] [--out model.npz]

Prints the detected format, layer widths (or layer kinds), activations and provenance; with --data, the
accuracy on that labeled set (IDX directory or .npz); with --out, writes the description.
"""
from __future__ import annotations

import sys

from pipeline import cli


def build_parser():
    p = cli.ArgumentParser(prog="python -m pipeline.importers", description=__doc__.splitlines()[0])
    p.add_argument("model", help="ONNX, .keras/.h5, .pt/.pth (state_dict or TorchScript), .tflite or SavedModel dir")
    p.add_argument("--arch", default=None, help="widths:hidden-activation, e.g. 784-300-100-10:relu (required for "
                                                "a PyTorch state_dict), or a CNN's input HxWxC, e.g. 28x28x1 "
                                                "(required for TorchScript CNNs); a check otherwise")
    p.add_argument("--data", default=None, help="labeled data to score on (IDX directory or .npz with x, y)")
    p.add_argument("--out", default=None, help="write the imported description as a prunedge model .npz")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from pipeline.importers import import_model
    model = import_model(args.model, arch=args.arch)
    if model.is_mlp:
        shape = (f"widths: {'-'.join(map(str, model.widths))}  "
                 f"activations: {', '.join(l.activation for l in model.layers)}")
    else:
        shape = (f"input: {list(model.input_shape)}  layers: "
                 + ", ".join(f"{l.kind}:{getattr(l, 'activation', '-')}" for l in model.layers))
    print(f"format: {model.meta['source_format']}  {shape}  output_transform: {model.meta.get('output_transform')}")
    print(f"source: {model.meta['source']}  sha256: {model.meta['source_sha256']}")
    if args.data:
        from pipeline.labeled import load_labeled
        layout = ({"image_shape": model.input_shape, "layout": model.meta.get("source_input_layout", "nhwc")}
                  if len(model.input_shape) == 3 else {})
        x, y = load_labeled(args.data, input_dim=model.input_dim, n_classes=model.output_dim, **layout)
        print(f"accuracy: {float((model.predict(x) == y).mean()):.4f} on {len(y)} examples of {args.data}")
    if args.out:
        from pipeline.model_io import save
        print(f"wrote {save(model, args.out)}")
    return 0


def main(argv=None) -> int:
    return cli.main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
