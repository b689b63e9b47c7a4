"""Accuracy vs sparsity over several training seeds, so the curves carry their spread.

For every built-in network found under the artifacts root (the MLP in `torch`/`tf`, the CNN in
`cnn-torch`/`cnn-tf`; `pipeline.stages.model_name`), seeds 0..N-1 of each framework: `--seeds N`
counts per network. A tree with only one of them scores only that one; an empty tree trains the MLP.
Training is the cost (minutes per seed, skipped when fresh); pruning and a forward pass over the 10k
test images are recomputed: numpy for the MLP (seconds), torch for the CNN (numpy's convolutions are
~100x slower; export verification holds torch to the numpy reference within pipeline.checks.FP32).
The `framework` column holds the model folder.
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
    """Top-1 accuracy (fraction): the numpy reference for an MLP, its torch module for other networks."""
    predict = model.predict if model.is_mlp else _torch_predict(model)
    hits = sum(int((predict(x[i:i + EVAL_CHUNK]) == y[i:i + EVAL_CHUNK]).sum())
               for i in range(0, len(x), EVAL_CHUNK))
    return hits / len(x)


def _torch_predict(model):
    import torch

    from pipeline.model import check_input
    from pipeline.torch_net import to_torch
    net = to_torch(model.densified())

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(check_input(x, model.input_shape))).numpy().argmax(axis=1)
    return predict


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


def trained_model(framework: str, seed: int, root: Path, net: str = "mlp"):
    """The trained model of this seed, training it first (via the lead's stage, the network's
    default recipe) when absent."""
    from pipeline import model_io
    from pipeline.stages import train_dir, train_stage
    from pipeline.train import default_config
    path = train_dir(framework, seed, root, net) / "model.npz"
    if not path.is_file():
        path = train_stage(framework, seed=seed, root=root, config=default_config(net))
    return model_io.load(path)


def models_in(root: Path, frameworks, nets=None) -> list[tuple[str, str, str]]:
    """(model folder, framework, network) to score: every network given, else the built-in networks
    with a train/ or export/ folder under root, else the MLP."""
    from pipeline.stages import model_name
    from pipeline.train import NETS
    every = [(model_name(fw, net), fw, net) for net in (nets or NETS) for fw in frameworks]
    if nets:
        return every
    found = [m for m in every if (root / "train" / m[0]).is_dir() or (root / "export" / m[0]).is_dir()]
    return found or [m for m in every if m[2] == NETS[0]]


def run_seeds(n_seeds: int = DEFAULT_SEEDS, frameworks=None, methods=("weight", "unit"),
              levels=None, root: Path = Path("artifacts"), *, data_dir=None, nets=None) -> Path:
    """Write `<root>/bench/seeds.csv` for seeds 0..n_seeds-1 of each network and framework
    (`models_in`), the methods that apply to each network, and return its path."""
    from pipeline.methods import METHODS, base_name
    from pipeline.prune import LEVELS
    from pipeline.train import FRAMEWORKS
    from tqdm import tqdm
    if n_seeds < 1:
        raise fail("--seeds", f"must be >= 1, got {n_seeds}")
    levels = LEVELS if levels is None else levels
    root = Path(root)
    x, y = test_set(data_dir)
    rows = []
    for folder, framework, net in models_in(root, frameworks or tuple(FRAMEWORKS), nets):
        usable = [m for m in methods if net in METHODS[base_name(m)].networks]
        for seed in tqdm(range(n_seeds), desc=f"seeds {folder}", unit="seed", leave=False):
            model = trained_model(framework, seed, root, net)
            rows += seed_rows(model, framework=folder, seed=seed, methods=usable, levels=levels, x=x, y=y)
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
