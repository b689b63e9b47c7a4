"""Inspect or convert a foreign MLP before running the pipeline on it.

    python -m pipeline.importers MODEL [--arch 784-300-100-10:relu] [--data DATA] [--out model.npz]

Prints the detected format, layer widths, activations and provenance; with --data, the
accuracy on that labeled set (IDX directory or .npz); with --out, writes the description.
"""
from __future__ import annotations

import sys
from pipeline.cli import ArgumentParser


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m pipeline.importers", description=__doc__.splitlines()[0])
    p.add_argument("model", help="ONNX, .keras/.h5, .pt/.pth (state_dict or TorchScript), .tflite or SavedModel dir")
    p.add_argument("--arch", default=None, help="widths:hidden-activation, e.g. 784-300-100-10:relu "
                                                "(required for a PyTorch state_dict, a check otherwise)")
    p.add_argument("--data", default=None, help="labeled data to score on (IDX directory or .npz with x, y)")
    p.add_argument("--out", default=None, help="write the imported description as a prunedge model .npz")
    args = p.parse_args(argv)
    from pipeline.errors import PrunedgeError
    try:
        from pipeline.importers import import_model
        model = import_model(args.model, arch=args.arch)
        print(f"format: {model.meta['source_format']}  widths: {'-'.join(map(str, model.widths))}  "
              f"activations: {', '.join(l.activation for l in model.layers)}  "
              f"output_transform: {model.meta.get('output_transform')}")
        print(f"source: {model.meta['source']}  sha256: {model.meta['source_sha256']}")
        if args.data:
            from pipeline.labeled import load_labeled
            x, y = load_labeled(args.data, input_dim=model.input_dim, n_classes=model.output_dim)
            print(f"accuracy: {float((model.predict(x) == y).mean()):.4f} on {len(y)} examples of {args.data}")
        if args.out:
            from pipeline.model_io import save
            print(f"wrote {save(model, args.out)}")
    except PrunedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
