"""Which (pruning, storage, precision, runtime, delegate) combinations are actually faster?

Builds each variant of one MLP (random He weights by default, or --model), checks its outputs
against the numpy reference *before* timing it, then times all variants in interleaved rounds
(median of per-round medians, so a neighbour's burst on the shared cores hits every variant
alike). A variant with wrong outputs is still timed but marked `wrong`; one that cannot be built
or run is a `failed` row with its reason. Writes artifacts/bench/kernels.csv.

    python -m bench.sparse_kernels --levels 90 95 --batches 1 64
"""
from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.cli import ArgumentParser
from pipeline.errors import PrunedgeError, fail
from pipeline.fileio import write_text
from pipeline.model import Model, random_model
from pipeline.model_io import load
from pipeline.methods import prune
from pipeline.shrink import shrink

WIDTHS = [784, 1000, 1000, 500, 200, 10]
FP32_ATOL = 1e-4  # float32 kernels only reorder sums
INT8_REL_ERR = 0.05  # dynamic-range int8 is ~1-2% off (relative L2); a broken kernel is >> 1
COLUMNS = ["runtime", "delegate", "variant", "method", "sparsity", "precision", "batch", "status", "reason",
           "rel_err", "max_abs_diff", "top1_agreement", "p50_us", "p90_us", "bytes", "runs_sparse",
           "ratio_same_precision", "ratio_vs_fp32_tflite"]


@dataclass(frozen=True, kw_only=True)
class Built:
    """One artifact: a runner factory per delegate (batch -> callable) and its size/structure."""
    runners: dict[str, Callable[[int], Callable]]
    bytes: int
    runs_sparse: bool = False
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    runtime: str  # "litert" | "onnxruntime" | "numpy"
    method: str  # pruning method at k ("dense" variants only run at k=0)
    precision: str  # "fp32" | "int8"
    build: Callable[[Model], Built]
    physical: Callable[[Model], Model] = lambda m: m  # e.g. shrink for unit pruning


# ---------------------------------------------------------------- LiteRT

def _tflite(quantize: str, sparse: bool = True, safe: bool = False):
    """safe: sparse FC ops marked so XNNPACK declines them (export.tflite_block.xnnpack_safe)."""
    def build(model: Model) -> Built:
        from export import tflite_block as tb
        buf = tb.convert(model, quantize=quantize, sparse=sparse)
        buf = tb.xnnpack_safe(buf) if safe else buf
        info = tb.describe(buf)
        runners = {d: (lambda b, d=d: tb.make_runner(buf, b, delegate=d)) for d in tb.DELEGATES}
        note = "DENSIFY inserted" if "DENSIFY" in info["ops"] else ""
        return Built(runners=runners, bytes=len(buf), runs_sparse=info["runs_sparse"], note=note)
    return build


def _tflite_full_int8(model: Model) -> Built:
    """Full-integer int8 (weights and activations) with sparsity, float in/out."""
    import tensorflow as tf
    from export import tflite_block as tb
    calibration = verify_inputs(512)[256:]  # real images, disjoint from the 256 verification rows
    weights = [tf.constant(l.dense_weight()) for l in model.layers]
    biases = [tf.constant(l.bias) for l in model.layers]

    @tf.function(input_signature=[tf.TensorSpec([None, model.input_dim], tf.float32)])
    def forward(x):
        for w, b, layer in zip(weights, biases, model.layers):
            x = tf.matmul(x, w) + b
            x = tf.nn.relu(x) if layer.activation == "relu" else x
        return x

    conv = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], tf.Module())
    conv.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    conv.representative_dataset = lambda: ([row[None]] for row in calibration)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    buf = conv.convert()
    info = tb.describe(buf)
    return Built(runners={d: (lambda b, d=d: tb.make_runner(buf, b, delegate=d)) for d in tb.DELEGATES}, bytes=len(buf),
                 runs_sparse=info["runs_sparse"], note="DENSIFY inserted" if "DENSIFY" in info["ops"] else "")


# ---------------------------------------------------------------- onnxruntime

def _onnx_bytes(model: Model) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, x = [], [], "input"
    ops = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}
    for i, layer in enumerate(model.layers):
        inits += [numpy_helper.from_array(layer.dense_weight(), f"W{i}"), numpy_helper.from_array(layer.bias, f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"mm{i}"]), helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"])]
        x = f"z{i}"
        if layer.activation in ops:
            nodes.append(helper.make_node(ops[layer.activation], [x], [f"a{i}"]))
            x = f"a{i}"
    nodes.append(helper.make_node("Identity", [x], ["output"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", model.input_dim])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", model.output_dim])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _ort_session(buf: bytes):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(buf, opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"input": x})[0]


def _onnx(quantize: bool):
    def build(model: Model) -> Built:
        buf = _onnx_bytes(model)
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic
            with tempfile.TemporaryDirectory() as d:
                (Path(d) / "f.onnx").write_bytes(buf)
                quantize_dynamic(Path(d) / "f.onnx", Path(d) / "q.onnx", weight_type=QuantType.QInt8)
                buf = (Path(d) / "q.onnx").read_bytes()
        return Built(runners={"cpu": lambda b: _ort_session(buf)}, bytes=len(buf))
    return build


# ---------------------------------------------------------------- numpy / scipy

def _numpy(csr: bool):
    def build(model: Model) -> Built:
        from pipeline.sparse import to_csr
        m = to_csr(model) if csr else model.densified()
        with tempfile.TemporaryDirectory() as d:
            from pipeline.model_io import save
            size = save(m, Path(d) / "m.npz").stat().st_size
        return Built(runners={"none": lambda b: m.forward}, bytes=size, runs_sparse=csr)
    return build


VARIANTS = [
    Variant(name="tflite-fp32", runtime="litert", method="dense", precision="fp32", build=_tflite("none", False)),
    Variant(name="tflite-int8dr", runtime="litert", method="dense", precision="int8", build=_tflite("dynamic", False)),
    Variant(name="tflite-int8full", runtime="litert", method="dense", precision="int8", build=_tflite_full_int8),
    Variant(name="tflite-block-fp32", runtime="litert", method="block", precision="fp32", build=_tflite("none")),
    Variant(name="tflite-block16-int8dr", runtime="litert", method="block16", precision="int8", build=_tflite("dynamic")),
    Variant(name="tflite-block16-int8dr-safe", runtime="litert", method="block16", precision="int8", build=_tflite("dynamic", safe=True)),
    Variant(name="tflite-block4-int8dr", runtime="litert", method="block", precision="int8", build=_tflite("dynamic")),
    Variant(name="tflite-block16-int8full", runtime="litert", method="block16", precision="int8", build=_tflite_full_int8),
    Variant(name="tflite-nm-fp32", runtime="litert", method="nm", precision="fp32", build=_tflite("none")),
    Variant(name="tflite-unit-fp32", runtime="litert", method="unit", precision="fp32", build=_tflite("none", False), physical=shrink),
    Variant(name="tflite-unit-int8dr", runtime="litert", method="unit", precision="int8", build=_tflite("dynamic", False), physical=shrink),
    Variant(name="tflite-lowrank-fp32", runtime="litert", method="lowrank", precision="fp32", build=_tflite("none", False)),
    Variant(name="tflite-lowrank-int8dr", runtime="litert", method="lowrank", precision="int8", build=_tflite("dynamic", False)),
    Variant(name="onnx-fp32", runtime="onnxruntime", method="dense", precision="fp32", build=_onnx(False)),
    Variant(name="onnx-int8", runtime="onnxruntime", method="dense", precision="int8", build=_onnx(True)),
    Variant(name="onnx-unit-fp32", runtime="onnxruntime", method="unit", precision="fp32", build=_onnx(False), physical=shrink),
    Variant(name="onnx-unit-int8", runtime="onnxruntime", method="unit", precision="int8", build=_onnx(True), physical=shrink),
    Variant(name="numpy-dense", runtime="numpy", method="dense", precision="fp32", build=_numpy(False)),
    Variant(name="numpy-csr-weight", runtime="numpy", method="weight", precision="fp32", build=_numpy(True)),
    Variant(name="numpy-csr-block", runtime="numpy", method="block", precision="fp32", build=_numpy(True)),
    Variant(name="numpy-csr-nm", runtime="numpy", method="nm", precision="fp32", build=_numpy(True)),
    Variant(name="numpy-csr-balanced", runtime="numpy", method="balanced", precision="fp32", build=_numpy(True)),
    Variant(name="numpy-unit", runtime="numpy", method="unit", precision="fp32", build=_numpy(False), physical=shrink),
]
BY_NAME = {v.name: v for v in VARIANTS}


# ---------------------------------------------------------------- checking and timing

def check(y: np.ndarray, ref: np.ndarray, precision: str) -> dict:
    diff = float(np.abs(y - ref).max())
    rel = float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-12))
    top1 = float((y.argmax(1) == ref.argmax(1)).mean())
    ok = diff <= FP32_ATOL if precision == "fp32" else rel <= INT8_REL_ERR
    reason = "" if ok else (f"max |diff| {diff:.3g} > {FP32_ATOL}" if precision == "fp32"
                            else f"relative error {rel:.3g} > {INT8_REL_ERR}")
    return {"status": "ok" if ok else "wrong", "reason": reason, "rel_err": rel, "max_abs_diff": diff, "top1_agreement": top1}


def outputs(call, x: np.ndarray, batch: int) -> np.ndarray:
    n = len(x) - len(x) % batch
    return np.concatenate([np.array(call(x[i:i + batch]), copy=True) for i in range(0, n, batch)])


def time_rounds(calls: list, rounds: int, slice_s: float) -> list[np.ndarray]:
    """Per call: the per-round medians (ns). Rounds interleave all calls; order rotates each round."""
    per_round = [[] for _ in calls]
    samples = [[] for _ in calls]
    for r in range(rounds):
        order = list(range(len(calls)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            fn, x = calls[i]
            fn(x)  # warm
            t_end, ts = time.perf_counter() + slice_s, []
            while time.perf_counter() < t_end or len(ts) < 5:
                t0 = time.perf_counter_ns()
                fn(x)
                ts.append(time.perf_counter_ns() - t0)
            per_round[i].append(np.median(ts))
            samples[i].extend(ts)
    return [(np.median(pr), np.percentile(s, 90)) for pr, s in zip(per_round, samples)]


def verify_inputs(n: int = 256) -> np.ndarray:
    from pipeline.data import DEFAULT_DATA_DIR, FILES, load_idx_pair
    images, labels = FILES["test"]
    if (DEFAULT_DATA_DIR / images).is_file():
        return load_idx_pair(DEFAULT_DATA_DIR / images, DEFAULT_DATA_DIR / labels)[0][:n]
    return np.random.default_rng(0).random((n, 784), dtype=np.float32)


def run(base: Model, *, variants, levels, batches, rounds, slice_s, log=print) -> list[dict]:
    x_all = verify_inputs(256)
    rows, calls = [], []
    for v in variants:
        for k in ([0] if v.method == "dense" else levels):
            model = v.physical(prune(base, v.method, k)) if k else base
            head = {"runtime": v.runtime, "variant": v.name, "method": v.method, "sparsity": k, "precision": v.precision}
            t0 = time.perf_counter()
            try:
                built = v.build(model)
            except Exception as e:  # a failed build is a row, not a crash of the sweep
                rows.append({**head, "delegate": "", "batch": "", "status": "failed", "reason": _one_line(e)})
                continue
            ref = model.forward(x_all)
            for delegate, factory in built.runners.items():
                for b in batches:
                    row = {**head, "delegate": delegate, "batch": b, "bytes": built.bytes, "runs_sparse": built.runs_sparse}
                    try:
                        call = factory(b)
                        row.update(check(outputs(call, x_all, b), ref[: len(x_all) - len(x_all) % b], v.precision))
                        calls.append((len(rows), call, np.ascontiguousarray(x_all[:b])))
                    except Exception as e:
                        row.update(status="failed", reason=_one_line(e))
                    if built.note:
                        row["reason"] = "; ".join(filter(None, [built.note, row.get("reason", "")]))
                    rows.append(row)
            log(f"built {v.name} k{k} ({built.bytes} B, {time.perf_counter() - t0:.1f}s) "
                + " ".join(f"{r['delegate']}/b{r['batch']}:{r['status']}" for r in rows if r["variant"] == v.name and r["sparsity"] == k))
    log(f"timing {len(calls)} configurations x {rounds} rounds")
    for (i, _, _), (p50, p90) in zip(calls, time_rounds([(c, x) for _, c, x in calls], rounds, slice_s)):
        rows[i].update(p50_us=p50 / 1e3, p90_us=p90 / 1e3)
    return add_ratios(rows)


def add_ratios(rows: list[dict]) -> list[dict]:
    """ratio_same_precision: fastest correct dense file of the same runtime and precision (any
    delegate) / this; ratio_vs_fp32_tflite: fastest correct dense fp32 TFLite / this. Same batch."""
    def best(pred):
        t = [r["p50_us"] for r in rows if r.get("status") == "ok" and "p50_us" in r and pred(r)]
        return min(t) if t else None
    for r in rows:
        if r.get("status") != "ok" or "p50_us" not in r:
            continue
        same = best(lambda d: d["method"] == "dense" and d["runtime"] == r["runtime"]
                    and d["precision"] == r["precision"] and d["batch"] == r["batch"])
        fp32 = best(lambda d: d["variant"] == "tflite-fp32" and d["batch"] == r["batch"])
        r["ratio_same_precision"] = same / r["p50_us"] if same else ""
        r["ratio_vs_fp32_tflite"] = fp32 / r["p50_us"] if fp32 else ""
    return rows


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m bench.sparse_kernels", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="model .npz (default: random He-initialised 784-1000-1000-500-200-10)")
    ap.add_argument("--levels", type=float, nargs="+", default=[90, 95], help="sparsity levels in percent")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--variants", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median of round medians)")
    ap.add_argument("--slice", type=float, default=0.04, help="seconds per configuration per round")
    ap.add_argument("--out", type=Path, default=Path("artifacts/bench/kernels.csv"))
    args = ap.parse_args(argv)
    try:
        if args.rounds < 1 or args.slice <= 0 or min(args.batches) < 1:
            raise fail("--rounds/--slice/--batches", "must be positive")
        base = load(args.model) if args.model else random_model(WIDTHS, seed=0)
        t0 = time.perf_counter()
        rows = run(base, variants=[BY_NAME[n] for n in args.variants], levels=args.levels, batches=args.batches,
                   rounds=args.rounds, slice_s=args.slice, log=lambda s: print(s, file=sys.stderr, flush=True))
        write_text(args.out, to_csv(rows))
        print(f"wrote {args.out} ({len(rows)} rows, {time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    except PrunedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # only effective for BLAS loaded later; threadpoolctl below
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1)
    sys.exit(main())
