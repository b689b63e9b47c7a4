"""`auto`: one LiteRT file whose every layer has the format measured fastest for it here (issue 5).

Which weight format wins depends on the layer, not only on the model's sparsity: at batch 1 a
90%-sparse 1000x1000 layer runs faster block-sparse while the dense 200x10 output layer does not,
and int8 beats float32 on some layers by more than sparsity does. So each distinct layer (shape,
share of weights kept, block size) is timed once in every candidate format by
`bench.layer_timing.measure`, each candidate first checked against the numpy layer, and the rows
are kept in `<export root>/layer_timings.json`. Re-runs reuse them, so the choice and the file
bytes repeat; `export run --remeasure` times again.

Per-layer timings miss what happens between layers: a file with any int8 sparse weight has all
its FULLY_CONNECTED ops kept off XNNPACK (see tflite_block._mark_sparse_versions), and leaving and
re-entering an XNNPACK partition costs time. Measured here, a per-layer int8 mix at block 95% ran
30 us against 27 us for plain dense int8. So the per-layer choice (`pipeline.autoformat.choose`,
fastest correct, dense on ties) is one candidate: it and the uniform files are built, checked and
timed as whole files once per distinct model, and the fastest correct whole file is shipped.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from export import tflite_block as tb
from pipeline.autoformat import STATUSES, Timing, candidates, choose
from pipeline.errors import PrunedgeError, fail
from pipeline.fileio import write_bytes, write_json
from pipeline.model import Dense, Model

TIMINGS_FILE = "layer_timings.json"
SCHEMA = 1
MIN_SPARSITY = 80.0  # a cost cut: the 1x4 kernel was only 1.3x faster than dense at 80% (whole model)
DELEGATE = "xnnpack"  # timed as users run a file by default (sparse layers are marked to skip it)
ROUNDS, SLICE_S = 5, 0.03  # 5 interleaved rounds of 30 ms per candidate: ~3 s per layer set
BLOCKS = (16, 4)  # LiteRT's int8 and float32 sparse kernel block widths; 1 = unstructured


def block_size(weight: np.ndarray) -> int:
    """The widest kernel block (1x16, 1x4) the layer's zero pattern is made of, else 1."""
    for size in BLOCKS:
        if tb.is_block_layer(weight, size):
            return size
    return 1


def layer_key(layer: Dense) -> str:
    """What a layer's timings depend on: shape, share of weights kept, block size."""
    w = layer.dense_weight()
    return f"{w.shape[0]}x{w.shape[1]}/kept{np.count_nonzero(w) / w.size:.3f}/b{block_size(w)}"


def applies(model: Model) -> bool:
    return float(model.meta.get("sparsity", 0)) >= MIN_SPARSITY and tb.is_block_structured(model, 4)


def model_key(model: Model) -> str:
    return " | ".join(layer_key(layer) for layer in model.layers)


def empty_table() -> dict:
    return {"schema": SCHEMA, "delegate": DELEGATE, "batch": 1, "threads": 1, "layers": {}, "models": {}}


def load_table(path: Path) -> dict:
    """The saved timings, or an empty table when there are none yet; a damaged file is an error."""
    path = Path(path)
    if not path.is_file():
        return empty_table()
    try:
        table = json.loads(path.read_text())
        ok = (isinstance(table, dict) and table.get("schema") == SCHEMA and isinstance(table.get("layers"), dict)
              and isinstance(table.setdefault("models", {}), dict)
              and all(isinstance(rows, list) and all(_row_ok(r) for r in rows)
                      for rows in (*table["layers"].values(), *table["models"].values())))
    except (OSError, ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise fail(path, "damaged layer timings (delete it, or run with --remeasure)")
    return table


def _row_ok(row) -> bool:
    """A layer row names one "format"; a whole-model row lists "formats", one per layer."""
    named = isinstance(row, dict) and (isinstance(row.get("format"), str) or (
        isinstance(row.get("formats"), list) and all(isinstance(f, str) for f in row["formats"])))
    return (named and row.get("status") in STATUSES
            and (row.get("p50_us") is None or isinstance(row.get("p50_us"), (int, float))))


def measure_missing(models: list[Model], table: dict, x: np.ndarray, *, progress: bool = True) -> dict:
    """`table` plus rows for every layer and every model of `models` it lacks: one model per
    missing layer set is timed (all its layers, interleaved, so the rounds compare like with
    like), then its whole-file candidates."""
    from tqdm import tqdm
    from export.layer_timing import measure

    layers, wholes = table["layers"], table.setdefault("models", {})
    todo = {}
    for model in models:
        todo.setdefault(model_key(model), model)
    todo = [m for key, m in todo.items() if key not in wholes]
    for model in tqdm(todo, desc="time layers", unit="model", disable=not progress or not todo):
        keys = [layer_key(layer) for layer in model.layers]
        new = {k for k in keys if k not in layers}
        if new:
            for t in measure(model, "litert", x, batch=1, delegate=DELEGATE, allow_int8=True,
                             rounds=ROUNDS, slice_s=SLICE_S):
                key = keys[t.layer]
                if key in new and t.format not in {r["format"] for r in layers.get(key, [])}:
                    layers.setdefault(key, []).append(
                        {"format": t.format, "p50_us": round(t.p50_us, 3) if np.isfinite(t.p50_us) else None,
                         "status": t.status, "reason": t.reason})
        wholes[model_key(model)] = time_whole_files(model, table, x)
    return table


def whole_candidates(model: Model, table: dict) -> list[list[str]]:
    """The per-layer choices (float32 only, and with int8) and each uniform file, every layer in
    the format where it was measured correct, else the nearest that was (int8 -> dense)."""
    rows = table["layers"]
    ok = [{r["format"] for r in rows[layer_key(layer)] if r["status"] == "ok"} for layer in model.layers]
    out = [per_layer_choice(model, table, allow_int8=False), per_layer_choice(model, table, allow_int8=True)]
    for fmt in candidates("litert", allow_int8=True):
        out.append([fmt if fmt in have else ("int8" if fmt.startswith("int8") and "int8" in have else "dense")
                    for have in ok])
    return [list(f) for f in dict.fromkeys(tuple(f) for f in out)]


def time_whole_files(model: Model, table: dict, x: np.ndarray) -> list[dict]:
    """Build, check (as export would) and time each candidate file, interleaved."""
    from export.layer_timing import time_rounds
    options = tb.SparseTfliteOptions()
    ref = model.forward(x)
    rows, calls = [], []
    for formats in whole_candidates(model, table):
        quantize = "dynamic" if any(f.startswith("int8") for f in formats) else "none"
        try:
            buf = tb.mixed(model, formats)
            call = tb.make_runner(buf, 1, delegate=DELEGATE)
            y = np.concatenate([np.array(call(x[i:i + 1]), copy=True) for i in range(len(x))])
            check = tb.check_outputs(y, ref, quantize=quantize, options=options)
        except (RuntimeError, ValueError, PrunedgeError) as e:
            rows.append({"formats": formats, "p50_us": None, "status": "failed", "reason": str(e)[:200]})
            continue
        rows.append({"formats": formats, "p50_us": None, "status": "ok" if check["status"] == "passed" else "wrong",
                     "reason": check["reason"]})
        calls.append((len(rows) - 1, call))
    timed = time_rounds([(call, np.ascontiguousarray(x[:1])) for _, call in calls], ROUNDS, 2 * SLICE_S)
    for (i, _), (p50, _) in zip(calls, timed):
        rows[i]["p50_us"] = round(float(p50) / 1e3, 3)
    return rows


def save_table(path: Path, table: dict) -> Path:
    return write_json(path, table)


def timings_for(model: Model, table: dict | None) -> dict:
    """The table rows a model's choice reads (part of its export stamp)."""
    table = table or {}
    rows = table.get("layers", {})
    return {"layers": {k: rows.get(k) for k in sorted({layer_key(layer) for layer in model.layers})},
            "model": table.get("models", {}).get(model_key(model))}


def per_layer_choice(model: Model, table: dict | None, *, allow_int8: bool) -> list[str]:
    rows = (table or {}).get("layers", {})
    timings = []
    for i, layer in enumerate(model.layers):
        key = layer_key(layer)
        if key not in rows:
            raise fail("layer timings", f"layer {i} ({key}) was never timed (run `python -m export run`)")
        timings += [Timing(layer=i, format=r["format"], status=r["status"],
                           p50_us=float("nan") if r["p50_us"] is None else r["p50_us"]) for r in rows[key]]
    return choose(timings, len(model.layers), candidates("litert", allow_int8=allow_int8))


def choose_formats(model: Model, table: dict | None, *, allow_int8: bool) -> list[str]:
    """The fastest correct whole file timed for this model (float32 layers only unless
    `allow_int8`); the per-layer choice when no whole file was timed for it."""
    fallback = per_layer_choice(model, table, allow_int8=allow_int8)
    allowed = set(candidates("litert", allow_int8=allow_int8))
    timed = [r for r in (table or {}).get("models", {}).get(model_key(model)) or []
             if r["status"] == "ok" and r["p50_us"] is not None and set(r["formats"]) <= allowed]
    if not timed:
        return fallback
    return list(min(timed, key=lambda r: (r["p50_us"], r["formats"] != fallback))["formats"])


def export(model: Model, out_path: Path, options, *, allow_int8: bool) -> Path:
    """Write the measured-fastest per-layer mix; refuse it unless it verifies under a delegate."""
    formats = choose_formats(model, getattr(options, "layer_timings", None), allow_int8=allow_int8)
    buf = tb.mixed(model, formats)
    quantize = "dynamic" if any(f.startswith("int8") for f in formats) else "none"
    calibration = getattr(options, "calibration", None)  # real images: random ones give near-tied logits
    x = calibration[:256] if calibration is not None else tb.verify_inputs(model, tb.SparseTfliteOptions())
    checks = tb.verify(buf, model, x, quantize=quantize)
    if not any(c["status"] == "passed" for c in checks.values()):
        raise fail(out_path, "per-layer mix " + " ".join(formats) + " fails verification under every delegate: "
                   + "; ".join(f"{d}: {c['reason']}" for d, c in checks.items()))
    return write_bytes(out_path, buf)


def layer_formats(path: Path) -> dict:
    """Manifest detail: each FULLY_CONNECTED's weight format as stored in the file itself."""
    from tensorflow.lite.python import schema_py_generated as schema
    buf = Path(path).read_bytes()
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))
    tensors = m.subgraphs[0].tensors
    out = []
    for op in tb._fc_ops(m):
        w = tensors[op.inputs[1]]
        name = "int8" if w.type == schema.TensorType.INT8 else "dense"
        out.append({"dense": "block", "int8": "int8-block"}[name] if w.sparsity is not None else name)
    return {"layer_formats": out}
