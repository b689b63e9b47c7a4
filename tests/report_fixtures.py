"""A small synthetic artifacts/ tree for the report and plot tests: known numbers, no training."""
from __future__ import annotations

import csv
from pathlib import Path

from report.seeds import write_seeds_csv
from pipeline.fileio import write_json
from pipeline.model import random_model
from pipeline.model_io import save

WIDTHS = [784, 40, 30, 20, 10]
LEVELS = (0, 50, 90, 95, 99)
FRAMEWORKS = ("torch", "tf")
RESULT_COLUMNS = ("source", "framework", "method", "sparsity", "artifact", "format", "variant", "runtime",
                  "threads", "batch", "status", "reason", "p50_us", "p90_us", "p99_us", "mean_us",
                  "per_sample_us", "reps", "ratio_vs_dense", "bytes", "gzip_bytes", "accuracy", "peak_rss_mb")
# Fraction accuracy per method and level (seed 0); other seeds shift it by 0.002 * seed.
# weight: within 1 point up to 95 (0.900 - 0.895 = 0.5 point); unit: within up to 50 only.
ACCURACY = {"weight": {0: 0.900, 50: 0.901, 90: 0.897, 95: 0.895, 99: 0.700},
            "unit": {0: 0.900, 50: 0.893, 90: 0.850, 95: 0.600, 99: 0.300}}
DENSE_US = 1000.0
DENSE_BYTES = 3_000_000


def latency(runtime: str, method: str, k: float, batch: int) -> float:
    """Made-up p50: unit shrinks everywhere, weight pruning only helps the sparse kernel."""
    keep = 1 - k / 100
    base = DENSE_US * (batch / 4 if batch > 1 else 1)
    if runtime == "scipy-csr":
        return base * (3 * keep + 0.05) if method == "weight" else base * keep ** 2 + 20
    return base * (keep ** 2 + 0.02) if method == "unit" else base * 1.01


def result_rows(accuracy=ACCURACY) -> list[dict]:
    rows = []
    formats = (("numpy", "npz", "fp32"), ("scipy-csr", "npz", "fp32"), ("onnxruntime", "onnx", "fp32"),
               ("onnxruntime", "onnx", "sparse"), ("litert-xnnpack", "tflite", "fp32"))
    for fw in FRAMEWORKS:
        for runtime, fmt, variant in formats:
            for method in ("weight", "unit"):
                for k in LEVELS:
                    if (runtime == "scipy-csr" or variant == "sparse") and method != "weight":
                        continue
                    if variant == "sparse" and k == 0:
                        continue  # like the real export: sparse storage only for pruned (CSR) models
                    path = f"{fw}/{method}/k{k:02d}/model{'.sparse' if variant == 'sparse' else ''}.{fmt}"
                    keep = 1 - k / 100
                    raw = int(DENSE_BYTES * (keep if method == "unit" else (1 if fmt != "npz" else keep * 1.5 + 0.01)))
                    gz = int(raw * (keep + 0.05 if method == "weight" else 0.92))
                    for batch in (1, 64):
                        p50 = latency(runtime, method, k, batch)
                        dense = latency(runtime, method, 0, batch) if variant != "sparse" else None
                        rows.append({"source": "host", "framework": fw, "method": method, "sparsity": float(k),
                                     "artifact": path, "format": fmt, "variant": variant, "runtime": runtime,
                                     "threads": 1, "batch": batch, "status": "ok", "reason": "",
                                     "p50_us": p50, "p90_us": p50 * 1.1, "p99_us": p50 * 1.3, "mean_us": p50,
                                     "per_sample_us": p50 / batch, "reps": 100,
                                     "ratio_vs_dense": "" if dense is None else dense / p50,
                                     "bytes": raw, "gzip_bytes": gz, "accuracy": accuracy[method][k] - 0.0005,
                                     "peak_rss_mb": 80.0})
    rows.append({**rows[0], "status": "failed", "reason": "boom", "p50_us": "", "accuracy": "",
                 "runtime": "torch", "format": "pt"})
    return rows


def write_results_csv(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in RESULT_COLUMNS})
    return path


def make_root(root: Path, *, seeds: int = 2, with_results: bool = True) -> Path:
    """artifacts/ with trained models, curves, seeds.csv, a manifest and results.csv."""
    seed_rows = []
    for fw in FRAMEWORKS:
        for seed in range(seeds):
            out = root / "train" / fw / f"s{seed}"
            save(random_model(WIDTHS, seed=seed + (10 if fw == "tf" else 0)), out / "model.npz")
            write_json(out / "curves.json", {"epoch": [1, 2, 3], "train_loss": [0.9, 0.5, 0.4],
                                             "train_acc": [0.7, 0.85, 0.88], "val_loss": [0.6, 0.5, 0.45],
                                             "val_acc": [0.8, 0.86, 0.87]})
            write_json(out / "train.json", {"test_accuracy": 0.9, "wall_time_s": 12.3, "epochs": 3})
            for method, accs in ACCURACY.items():
                for k, acc in accs.items():
                    seed_rows.append({"framework": fw, "method": method, "seed": seed,
                                      "sparsity": float(k), "accuracy": acc + 0.002 * seed})
    write_seeds_csv(root / "bench" / "seeds.csv", seed_rows)
    files = [{"path": f"{fw}/weight/k{k:02d}/model.tflite", "format": "tflite", "variant": "fp32",
              "framework": fw, "method": "weight", "sparsity": float(k), "runtime": "litert",
              "ops": ["DENSIFY", "FULLY_CONNECTED"] if k else ["FULLY_CONNECTED"], "runs_sparse": False,
              "accuracy": ACCURACY["weight"][k]} for fw in FRAMEWORKS for k in LEVELS]
    files += [{"path": f"{fw}/{method}/k{k:02d}/model.npz", "format": "npz", "variant": "fp32", "framework": fw,
               "method": method, "sparsity": float(k), "runtime": "numpy", "verify": {"status": "passed"},
               "accuracy": min(ACCURACY["weight"][0], acc + (0.2 if method == "weight-gp" else 0.0))}
              for fw in FRAMEWORKS for method in ("weight", "weight-gp") for k, acc in ACCURACY["weight"].items()]
    write_json(root / "export" / "manifest.json", {"config": {}, "versions": {}, "files": files})
    if with_results:
        write_results_csv(root / "bench" / "results.csv", result_rows())
        write_json(root / "bench" / "results.json", {"machine": {"cpu": "test cpu", "cores": 2}, "config": {},
                                                     "rows": []})
    return root
