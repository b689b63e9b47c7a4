"""Accuracy vs sparsity over several training seeds, so the curves carry their spread.

Training is the cost (minutes per seed and framework, skipped when fresh); pruning and a
numpy forward pass over the 10k test images take seconds, so they are always recomputed.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from pipeline.errors import fail
from pipeline.fileio import write_text

DEFAULT_SEEDS = 3  # enough to see seed-to-seed spread without hours of training
COLUMNS = ("framework", "method", "seed", "sparsity", "accuracy")
EVAL_CHUNK = 2000  # images per forward pass: bounds memory of the 1000-wide activations


def test_set(data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The 10k Fashion-MNIST test images and labels (the train split is not needed here)."""
    from pipeline.data import FILES, data_dir as resolve, load_idx_pair
    d = resolve(data_dir)
    images, labels = FILES["test"]
    return load_idx_pair(d / images, d / labels)


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (fraction) of the numpy reference forward pass."""
    hits = sum(int((model.predict(x[i:i + EVAL_CHUNK]) == y[i:i + EVAL_CHUNK]).sum())
               for i in range(0, len(x), EVAL_CHUNK))
    return hits / len(x)


def seed_rows(model, *, framework: str, seed: int, methods, levels, x, y) -> list[dict]:
    """One row per (method, level): prune, make it physical (shrunk / CSR), score on the test set."""
    from pipeline.methods import prune
    from pipeline.methods import physical
    rows = []
    for method in methods:
        for k in levels:
            stored = physical(prune(model, method, k))
            rows.append({"framework": framework, "method": method, "seed": seed,
                         "sparsity": float(k), "accuracy": accuracy(stored, x, y)})
    return rows


def trained_model(framework: str, seed: int, root: Path):
    """The trained model of this seed, training it first (via the lead's stage) when absent."""
    from pipeline import model_io
    from pipeline.stages import train_dir, train_stage
    path = train_dir(framework, seed, root) / "model.npz"
    if not path.is_file():
        path = train_stage(framework, seed=seed, root=root)
    return model_io.load(path)


def run_seeds(n_seeds: int = DEFAULT_SEEDS, frameworks=("torch", "tf"), methods=("weight", "unit"),
              levels=None, root: Path = Path("artifacts"), *, data_dir=None) -> Path:
    """Write `<root>/bench/seeds.csv` for seeds 0..n_seeds-1 and return its path."""
    from pipeline.prune import LEVELS
    from tqdm import tqdm
    if n_seeds < 1:
        raise fail("--seeds", f"must be >= 1, got {n_seeds}")
    levels = LEVELS if levels is None else levels
    root = Path(root)
    x, y = test_set(data_dir)
    rows = []
    for framework in frameworks:
        for seed in tqdm(range(n_seeds), desc=f"seeds {framework}", unit="seed", leave=False):
            model = trained_model(framework, seed, root)
            rows += seed_rows(model, framework=framework, seed=seed, methods=methods,
                              levels=levels, x=x, y=y)
    return write_seeds_csv(root / "bench" / "seeds.csv", rows)


def write_seeds_csv(path: Path, rows) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "accuracy": f'{r["accuracy"]:.6f}'})
    return write_text(path, buf.getvalue())


def read_seeds_csv(path: Path) -> list[dict]:
    """Rows with typed fields; accuracy stays a fraction as written."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = set(COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise fail(path, f"missing columns {', '.join(sorted(missing))}")
            return [{"framework": r["framework"], "method": r["method"], "seed": int(r["seed"]),
                     "sparsity": float(r["sparsity"]), "accuracy": float(r["accuracy"])}
                    for r in reader]
    except OSError as e:
        raise fail(path, f"cannot read ({e.strerror})") from None
    except (ValueError, TypeError) as e:
        raise fail(path, f"bad value ({e})") from None
