"""A small synthetic artifacts/ tree for the report and plot tests: known numbers, no training.

The MLP lives in `torch`/`tf`, a tiny CNN in `cnn-torch`/`cnn-tf` (results.csv and the manifest
record only the training framework, as the real bench and export do; the folder tells them apart).
Runtimes include openvino and ncnn, and a peer file `peer/tfmot.json` is written when asked.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from report.seeds import write_seeds_csv
from pipeline.fileio import write_json
from pipeline.model import random_model
from pipeline.model_io import save
from pipeline.nets import Block, CnnSpec, cnn

WIDTHS = [784, 40, 30, 20, 10]
CNN_SPEC = CnnSpec(stem=4, blocks=(Block(expand=8, out=4), Block(expand=8, out=8, stride=2)), head=8)
LEVELS = (0, 50, 90, 95, 99)
CNN_LEVELS = (0, 50, 75, 90, 95, 99)
FRAMEWORKS = ("torch", "tf")
CNN_FOLDERS = {"torch": "cnn-torch", "tf": "cnn-tf"}
RESULT_COLUMNS = ("source", "framework", "method", "sparsity", "artifact", "format", "variant", "runtime",
                  "threads", "batch", "status", "reason", "p50_us", "p90_us", "p99_us", "mean_us",
                  "per_sample_us", "reps", "ratio_vs_dense", "bytes", "gzip_bytes", "accuracy", "peak_rss_mb")
# Fraction accuracy per method and level (seed 0); other seeds shift it by 0.002 * seed.
# weight: within 1 point up to 95 (0.900 - 0.895 = 0.5 point); unit: within up to 50 only.
ACCURACY = {"weight": {0: 0.900, 50: 0.901, 90: 0.897, 95: 0.895, 99: 0.700},
            "unit": {0: 0.900, 50: 0.893, 90: 0.850, 95: 0.600, 99: 0.300}}
# The CNN: weight within 1 point up to 75 (the MLP: 95), unit up to 50 (as the MLP).
CNN_ACCURACY = {"weight": {0: 0.920, 50: 0.921, 75: 0.915, 90: 0.905, 95: 0.850, 99: 0.500},
                "unit": {0: 0.920, 50: 0.915, 75: 0.902, 90: 0.800, 95: 0.600, 99: 0.300}}
INT8_LOSS = 0.003  # full-int8 files: 0.3 point below their float32 file
DENSE_US = 1000.0
CNN_DENSE_US = 3000.0
DENSE_BYTES = 3_000_000
MLP_FORMATS = (("numpy", "npz", "fp32"), ("scipy-csr", "npz", "fp32"), ("onnxruntime", "onnx", "fp32"),
               ("onnxruntime", "onnx", "sparse"), ("litert-xnnpack", "tflite", "fp32"), ("openvino", "onnx", "fp32"),
               ("ncnn", "ncnn", "fp32"))
CNN_FORMATS = (("onnxruntime", "onnx", "fp32"), ("openvino", "onnx", "fp32"), ("ncnn", "ncnn", "fp32"),
               ("litert-xnnpack", "tflite", "fp32"), ("litert-builtin", "tflite", "fp32"),
               ("litert-xnnpack", "tflite", "sparse"), ("litert-xnnpack", "tflite", "int8-full"))
SUFFIX = {("npz", "fp32"): "model.npz", ("onnx", "fp32"): "model.onnx", ("onnx", "sparse"): "model.sparse.onnx",
          ("tflite", "fp32"): "model.tflite", ("tflite", "sparse"): "model.sparse.tflite",
          ("tflite", "int8-full"): "model.int8.tflite", ("ncnn", "fp32"): "model.ncnn.param"}
# A peer run per level: 90 and 95 at the gradual chain's budget (4.5 and 6.0 epochs), 99 at a larger one.
PEER_RUNS = ({"sparsity": 90.0, "epochs": 4, "accuracy": 0.893}, {"sparsity": 95.0, "epochs": 6, "accuracy": 0.903},
             {"sparsity": 99.0, "epochs": 16, "accuracy": 0.880})


def latency(runtime: str, method: str, k: float, batch: int, base_us: float = DENSE_US) -> float:
    """Made-up p50: unit shrinks everywhere (less under LiteRT), weight pruning only helps the sparse kernel."""
    keep = 1 - k / 100
    base = base_us * (batch / 4 if batch > 1 else 1)
    if runtime == "scipy-csr":
        return base * (3 * keep + 0.05) if method == "weight" else base * keep ** 2 + 20
    if method == "unit" and runtime.startswith("litert") and base_us == CNN_DENSE_US:
        return base * (keep + 0.05)
    return base * (keep ** 2 + 0.02) if method == "unit" else base * 1.01


def _rows_of(fw, folder, formats, accuracy, levels, base_us) -> list[dict]:
    rows = []
    for runtime, fmt, variant in formats:
        for method in ("weight", "unit"):
            for k in levels:
                if (runtime == "scipy-csr" or variant == "sparse") and method != "weight":
                    continue
                if variant == "sparse" and k == 0:
                    continue  # like the real export: sparse storage only for pruned (CSR) models
                path = f"{folder}/{method}/k{k:02d}/{SUFFIX[(fmt, variant)]}"
                keep = 1 - k / 100
                raw = int(DENSE_BYTES * (keep if method == "unit" else (1 if fmt != "npz" else keep * 1.5 + 0.01)))
                gz = int(raw * (keep + 0.05 if method == "weight" else 0.92))
                acc = accuracy[method][k] - 0.0005 - (INT8_LOSS if variant == "int8-full" else 0)
                for batch in (1, 64):
                    p50 = latency(runtime, method, k, batch, base_us) / (4 if variant == "int8-full" else 1)
                    dense = latency(runtime, method, 0, batch, base_us) if variant != "sparse" else None
                    if dense is not None and variant == "int8-full":
                        dense /= 4
                    rows.append({"source": "host", "framework": fw, "method": method, "sparsity": float(k),
                                 "artifact": path, "format": fmt, "variant": variant, "runtime": runtime,
                                 "threads": 1, "batch": batch, "status": "ok", "reason": "",
                                 "p50_us": p50, "p90_us": p50 * 1.1, "p99_us": p50 * 1.3, "mean_us": p50,
                                 "per_sample_us": p50 / batch, "reps": 100,
                                 "ratio_vs_dense": "" if dense is None else dense / p50,
                                 "bytes": raw, "gzip_bytes": gz, "accuracy": acc, "peak_rss_mb": 80.0})
    return rows


def result_rows(accuracy=ACCURACY, *, cnn_too: bool = False) -> list[dict]:
    rows = []
    for fw in FRAMEWORKS:
        rows += _rows_of(fw, fw, MLP_FORMATS, accuracy, LEVELS, DENSE_US)
    failed = {**rows[0], "status": "failed", "reason": "boom", "p50_us": "", "accuracy": "", "runtime": "torch",
              "format": "pt"}
    if cnn_too:
        for fw in FRAMEWORKS:
            rows += _rows_of(fw, CNN_FOLDERS[fw], CNN_FORMATS, CNN_ACCURACY, CNN_LEVELS, CNN_DENSE_US)
    return rows + [failed]


def write_results_csv(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in RESULT_COLUMNS})
    return path


def _entry(path, fw, method, k, acc, *, name, fmt, variant, precision, passed=True, **extra) -> dict:
    return {"path": path, "name": name, "format": fmt, "variant": variant, "precision": precision, "framework": fw,
            "method": method, "sparsity": float(k), "verify": {"status": "passed" if passed else "failed"},
            "accuracy": acc, **extra}


def cnn_manifest(fw: str) -> list[dict]:
    """npz, fp32 / sparse / int8-full TFLite and ONNX entries of the CNN folder trained in `fw`;
    the int8 file of weight 99% fails verification."""
    folder, files = CNN_FOLDERS[fw], []
    for method, accs in CNN_ACCURACY.items():
        for k, acc in accs.items():
            base = f"{folder}/{method}/k{k:02d}/"
            files += [_entry(base + "model.npz", fw, method, k, acc, name="npz", fmt="npz", variant="fp32",
                             precision="fp32"),
                      _entry(base + "model.tflite", fw, method, k, acc - 0.0005, name="tflite", fmt="tflite",
                             variant="fp32", precision="fp32"),
                      _entry(base + "model.int8.tflite", fw, method, k, acc - 0.0005 - INT8_LOSS,
                             name="tflite-int8-full", fmt="tflite", variant="int8-full", precision="int8-full",
                             passed=(method, k) != ("weight", 99)),
                      _entry(base + "model.onnx", fw, method, k, acc - 0.0005, name="onnx", fmt="onnx",
                             variant="fp32", precision="fp32"),
                      _entry(base + "model.ncnn.param", fw, method, k, acc - 0.0005, name="ncnn", fmt="ncnn",
                             variant="fp32", precision="fp32")]
            if method == "weight" and k:
                files.append(_entry(base + "model.sparse.tflite", fw, method, k, acc - 0.0005, name="tflite-sparse",
                                    fmt="tflite", variant="sparse", precision="fp32", ops=["DENSIFY"]))
    return files


def mlp_manifest() -> list[dict]:
    files = [{"path": f"{fw}/weight/k{k:02d}/model.tflite", "format": "tflite", "variant": "fp32",
              "framework": fw, "method": "weight", "sparsity": float(k), "runtime": "litert",
              "ops": ["DENSIFY", "FULLY_CONNECTED"] if k else ["FULLY_CONNECTED"], "runs_sparse": False,
              "accuracy": ACCURACY["weight"][k]} for fw in FRAMEWORKS for k in LEVELS]
    files += [{"path": f"{fw}/{method}/k{k:02d}/model.npz", "format": "npz", "variant": "fp32", "framework": fw,
               "method": method, "sparsity": float(k), "runtime": "numpy", "verify": {"status": "passed"},
               "accuracy": min(ACCURACY["weight"][0], acc + (0.2 if method == "weight-gp" else 0.0))}
              for fw in FRAMEWORKS for method in ("weight", "weight-gp") for k, acc in ACCURACY["weight"].items()]
    files += [{"path": f"{fw}/weight/k{k:02d}/model.int8.tflite", "name": "tflite-int8-full", "format": "tflite",
               "variant": "int8-full", "framework": fw, "method": "weight", "sparsity": float(k),
               "verify": {"status": "passed"}, "accuracy": ACCURACY["weight"][k] - INT8_LOSS} for fw in FRAMEWORKS
              for k in LEVELS]
    return files


def _train(root: Path, folder: str, seed: int, model) -> None:
    out = root / "train" / folder / f"s{seed}"
    save(model, out / "model.npz")
    write_json(out / "curves.json", {"epoch": [1, 2, 3], "train_loss": [0.9, 0.5, 0.4],
                                     "train_acc": [0.7, 0.85, 0.88], "val_loss": [0.6, 0.5, 0.45],
                                     "val_acc": [0.8, 0.86, 0.87]})
    write_json(out / "train.json", {"test_accuracy": 0.9, "wall_time_s": 12.3, "epochs": 3})


def _seed_rows(folder, seed, accuracy) -> list[dict]:
    return [{"framework": folder, "method": method, "seed": seed, "sparsity": float(k), "accuracy": acc + 0.002 * seed}
            for method, accs in accuracy.items() for k, acc in accs.items()]


def make_root(root: Path, *, seeds: int = 2, with_results: bool = True, nets=("mlp", "cnn"),
              peer: bool = True) -> Path:
    """artifacts/ with trained models, curves, seeds.csv, a manifest, results.csv and the peer file."""
    seed_rows, files = [], []
    for fw in FRAMEWORKS:
        for seed in range(seeds):
            if "mlp" in nets:
                _train(root, fw, seed, random_model(WIDTHS, seed=seed + (10 if fw == "tf" else 0)))
                seed_rows += _seed_rows(fw, seed, ACCURACY)
            if "cnn" in nets:
                _train(root, CNN_FOLDERS[fw], seed, cnn(seed + (10 if fw == "tf" else 0), CNN_SPEC))
                seed_rows += _seed_rows(CNN_FOLDERS[fw], seed, CNN_ACCURACY)
        files += cnn_manifest(fw) if "cnn" in nets else []
    files += mlp_manifest() if "mlp" in nets else []
    write_seeds_csv(root / "bench" / "seeds.csv", seed_rows)
    write_json(root / "export" / "manifest.json", {"config": {}, "versions": {}, "files": files})
    if with_results:
        rows = result_rows(cnn_too="cnn" in nets)
        rows = [r for r in rows if "mlp" in nets or r["artifact"].startswith("cnn-")]
        write_results_csv(root / "bench" / "results.csv", rows)
        write_json(root / "bench" / "results.json", {"machine": {"cpu": "test cpu", "arch": "x86_64", "cores": 2},
                                                     "config": {}, "rows": []})
    if peer:
        write_json(root / "peer" / "tfmot.json", {"runs": [{"framework": "tf", "dense_accuracy": 0.9,
                                                            "versions": {"tensorflow-model-optimization": "0.8.1"},
                                                            **run} for run in PEER_RUNS]})
    return root


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """(inputs, derived, config) of a report over make_root's tree, plots off."""
    from report.build import ReportConfig
    from report.inputs import derive, load_inputs
    root = make_root(tmp_path_factory.mktemp("artifacts"))
    inp = load_inputs(root)
    return inp, derive(inp), ReportConfig(root=root, plots=False)


def text_of(lines) -> str:
    return "\n".join(lines)
