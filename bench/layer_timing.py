"""Measure each layer in each candidate format, let pipeline.autoformat choose, then time the
combined model against the uniform ones (all verified first, timed in interleaved rounds).

    python -m bench.layer_timing --runtime litert --method block16 --sparsity 95 --int8
    python -m bench.layer_timing --runtime numpy --method weight --sparsity 95 --batch 64

Writes artifacts/bench/layer_timing.csv (per layer x format) and artifacts/bench/autoformat.csv
(whole models); with --write, the chosen model (.npz for numpy, .tflite for litert).
"""
from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.autoformat import INT8_FORMATS, Timing, apply, autoformat, candidates
from pipeline.cli import ArgumentParser
from pipeline.errors import PrunedgeError, fail
from pipeline.fileio import write_text
from pipeline.model import Model, random_model
from pipeline.model_io import load, save

FP32_ATOL = 1e-4
INT8_REL_ERR = 0.05


def layer_inputs(model: Model, x: np.ndarray) -> list[np.ndarray]:
    """The activations entering each layer for input batch x (real inputs give realistic int8 ranges)."""
    acts = [x]
    for layer in model.layers[:-1]:
        acts.append(layer(acts[-1]))
    return acts


def _check(y, ref, fmt) -> tuple[str, str]:
    if fmt in INT8_FORMATS:
        rel = float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-12))
        return ("ok", "") if rel <= INT8_REL_ERR else ("wrong", f"relative error {rel:.3g} > {INT8_REL_ERR}")
    diff = float(np.abs(y - ref).max())
    return ("ok", "") if diff <= FP32_ATOL else ("wrong", f"max |diff| {diff:.3g} > {FP32_ATOL}")


def _numpy_layer(model, i, fmt, batch, delegate):
    one = apply(model.with_layers([model.layers[i]]), "numpy", [fmt])
    return one.layers[0]


def _litert_layer(model, i, fmt, batch, delegate):
    from export import tflite_block as tb
    buf = tb.xnnpack_safe(tb.layer_file(model, i, fmt))
    info = tb.describe(buf)
    if "DENSIFY" in info["ops"]:
        raise _Unavailable("not block-structured for this kernel (converter inserts DENSIFY)")
    if fmt.endswith("block") and not info["runs_sparse"]:
        raise _Unavailable("converter kept the weight dense (too few zeros)")
    return tb.make_runner(buf, batch, delegate=delegate)


class _Unavailable(Exception):
    pass


LAYER_RUNNERS = {"numpy": _numpy_layer, "litert": _litert_layer}


def measure(model: Model, runtime: str, x: np.ndarray, *, batch: int = 1, delegate: str = "xnnpack",
            allow_int8: bool = False, rounds: int = 5, slice_s: float = 0.03) -> list[Timing]:
    """One Timing per (layer, candidate format): verified on x's activations, then timed at `batch`."""
    from bench.sparse_kernels import time_rounds
    acts = layer_inputs(model, x)
    pending, timings = [], []
    for i, layer in enumerate(model.layers):
        ref = layer(acts[i])
        for fmt in candidates(runtime, allow_int8=allow_int8):
            try:
                call = LAYER_RUNNERS[runtime](model, i, fmt, batch, delegate)
                n = len(acts[i]) - len(acts[i]) % batch
                y = np.concatenate([np.array(call(acts[i][j:j + batch]), copy=True) for j in range(0, n, batch)])
                status, reason = _check(y, ref[:n], fmt)
            except _Unavailable as e:
                timings.append(Timing(layer=i, format=fmt, status="unavailable", reason=str(e)))
                continue
            except (RuntimeError, ValueError, PrunedgeError) as e:
                timings.append(Timing(layer=i, format=fmt, status="failed", reason=f"{type(e).__name__}: {e}"[:200]))
                continue
            pending.append((Timing(layer=i, format=fmt, status=status, reason=reason), call,
                            np.ascontiguousarray(acts[i][:batch])))
    for (t, _, _), (p50, _) in zip(pending, time_rounds([(c, xb) for _, c, xb in pending], rounds, slice_s)):
        timings.append(Timing(layer=t.layer, format=t.format, p50_us=p50 / 1e3, status=t.status, reason=t.reason))
    return sorted(timings, key=lambda t: (t.layer, candidates(runtime, allow_int8=True).index(t.format)))


def whole_models(model: Model, runtime: str, chosen: Model, *, allow_int8: bool) -> dict[str, Model]:
    """The auto mix plus each uniform format (on every layer where the format exists, dense elsewhere)."""
    out = {}
    for fmt in candidates(runtime, allow_int8=allow_int8):
        fmts = chosen.meta["layer_timing_available"]
        uniform = [fmt if fmt in fmts[i] else "dense" for i in range(len(model.layers))]
        out[f"all-{fmt}"] = apply(model, runtime, uniform)
    out["auto"] = chosen
    return out


def time_whole(models: dict[str, Model], runtime: str, x: np.ndarray, *, batch: int, delegate: str,
               rounds: int, slice_s: float) -> list[dict]:
    """Build, verify and time each whole model; rows with p50 and the speed-up over all-dense."""
    from bench.sparse_kernels import time_rounds
    rows, calls = [], []
    for name, m in models.items():
        fmts = m.meta["layer_formats"]
        row = {"model": name, "layer_formats": " ".join(fmts), "runtime": runtime, "delegate": delegate, "batch": batch}
        if runtime == "litert":
            from export import tflite_block as tb
            buf = tb.mixed(m, list(fmts))
            call = tb.make_runner(buf, batch, delegate=delegate)
            row["bytes"] = len(buf)
        else:
            call = m.forward
        n = len(x) - len(x) % batch
        y = np.concatenate([np.array(call(x[j:j + batch]), copy=True) for j in range(0, n, batch)])
        row["status"], row["reason"] = _check(y, m.forward(x[:n]), "int8" if set(fmts) & INT8_FORMATS else "dense")
        rows.append(row)
        calls.append((call, np.ascontiguousarray(x[:batch])))
    for row, (p50, p90) in zip(rows, time_rounds(calls, rounds, slice_s)):
        row["p50_us"], row["p90_us"] = p50 / 1e3, p90 / 1e3
    dense = next(r["p50_us"] for r in rows if r["model"] == "all-dense")
    for r in rows:
        r["speedup_vs_dense"] = dense / r["p50_us"]
    return rows


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m bench.layer_timing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="model .npz (default: random 784-1000-1000-500-200-10, pruned below)")
    ap.add_argument("--method", default="block", help="pruning method applied to the default random model")
    ap.add_argument("--sparsity", type=float, default=95.0)
    ap.add_argument("--runtime", choices=["numpy", "litert"], default="litert")
    ap.add_argument("--delegate", choices=["xnnpack", "none"], default="xnnpack", help="LiteRT delegate")
    ap.add_argument("--int8", action="store_true", help="allow int8 layer formats (LiteRT)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slice", type=float, default=0.03, help="seconds per candidate per round")
    ap.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    ap.add_argument("--write", type=Path, help="write the chosen model here (.npz for numpy, .tflite for litert)")
    args = ap.parse_args(argv)
    try:
        from bench.sparse_kernels import WIDTHS, verify_inputs
        from pipeline.methods import prune
        if args.batch < 1 or args.rounds < 1 or args.slice <= 0:
            raise fail("--batch/--rounds/--slice", "must be positive")
        model = load(args.model) if args.model else prune(random_model(WIDTHS, seed=0), args.method, args.sparsity)
        x = verify_inputs(256)
        timings = measure(model, args.runtime, x, batch=args.batch, delegate=args.delegate,
                          allow_int8=args.int8, rounds=args.rounds, slice_s=args.slice)
        write_text(args.out / "layer_timing.csv", _csv([asdict(t) for t in timings]))
        chosen = autoformat(model, args.runtime, timings, allow_int8=args.int8,
                            delegate=args.delegate if args.runtime == "litert" else None)
        available = [[t.format for t in timings if t.layer == i and t.status == "ok"] for i in range(len(model.layers))]
        chosen = chosen.with_layers(chosen.layers, layer_timing_available=available)
        for t in timings:
            print(f"layer {t.layer} {t.format:10s} {t.status:11s} {t.p50_us:9.2f} us {t.reason}", file=sys.stderr)
        models = whole_models(model, args.runtime, chosen, allow_int8=args.int8)
        rows = time_whole(models, args.runtime, x, batch=args.batch, delegate=args.delegate,
                          rounds=args.rounds, slice_s=args.slice * 2)
        # Per-layer timings miss costs between layers (e.g. leaving and re-entering the XNNPACK
        # partition), so the shipped choice is the fastest *whole* model, auto mix or uniform.
        winner = min((r for r in rows if r["status"] == "ok"), key=lambda r: r["p50_us"])
        for r in rows:
            r["chosen"] = r is winner
        write_text(args.out / "autoformat.csv", _csv(rows))
        for r in rows:
            print(f"{'*' if r['chosen'] else ' '} {r['model']:16s} {r['status']:6s} p50 {r['p50_us']:9.2f} us  "
                  f"x{r['speedup_vs_dense']:.2f} vs all-dense  {r.get('bytes', '')}  [{r['layer_formats']}]")
        chosen = models[winner["model"]]
        chosen = chosen.with_layers(chosen.layers, layer_p50_us_source="per-layer candidates", delegate=args.delegate,
                                    autoformat_pick=winner["model"])
        if args.write:
            if args.runtime == "numpy":
                save(chosen, args.write)
            else:
                from export import tflite_block as tb
                tb.export_mixed(chosen, args.write, tb.SparseTfliteOptions(quantize="dynamic" if args.int8 else "none"))
            print(f"wrote {args.write}", file=sys.stderr)
    except PrunedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1)
    sys.exit(main())
