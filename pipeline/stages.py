"""Pipeline stages that skip themselves when their inputs and config are unchanged.

A stage writes a stamp (`.stage.json`) next to its outputs holding a key (config and
sha256 of the inputs) and the sha256 of each output. It is fresh when the key is the
same and every output still hashes to what was recorded, so a killed or tampered run
is redone rather than trusted.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from pipeline.fileio import sha256_file, write_json

STAMP = ".stage.json"
ARTIFACTS = Path("artifacts")


def recorded(stamp_path: Path) -> dict | None:
    """The key a stamp records when every output it lists still has its recorded sha256, else None."""
    stamp_path = Path(stamp_path)
    try:
        stamp = json.loads(stamp_path.read_text())
        outputs = stamp.get("outputs", {})
        base = stamp_path.parent
        intact = bool(outputs) and all((base / rel).is_file() and sha256_file(base / rel) == digest
                                       for rel, digest in outputs.items())
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return stamp.get("key") if intact else None


def fresh(stamp_path: Path, key: dict) -> bool:
    """The stamp records exactly `key` and its outputs are untouched."""
    return recorded(stamp_path) == json.loads(json.dumps(key, sort_keys=True, default=str))


def mark(stamp_path: Path, key: dict, outputs) -> None:
    """Record the key and hashes of outputs (paths inside the stamp's directory)."""
    stamp_path = Path(stamp_path)
    base = stamp_path.parent
    hashes = {str(Path(p).resolve().relative_to(base.resolve())): sha256_file(p) for p in outputs}
    write_json(stamp_path, {"key": json.loads(json.dumps(key, sort_keys=True, default=str)),
                            "outputs": hashes})


def level_name(sparsity: float) -> str:
    """`k<NN>`: two digits; fractional levels keep two decimals (33.3 -> k33p30)."""
    sparsity = float(sparsity)
    return f"k{int(sparsity):02d}" if sparsity.is_integer() else f"k{sparsity:05.2f}".replace(".", "p")


def level_dir(root: Path, framework: str, method: str, sparsity: float) -> Path:
    """`<root>/<framework>/<method>/k<NN>`."""
    return Path(root) / framework / method / level_name(sparsity)


def model_name(framework: str, net: str = "mlp") -> str:
    """The folder a built-in model's runs live in: `torch`/`tf` for the MLP, `cnn-torch`/`cnn-tf` for the CNN."""
    return framework if net == "mlp" else f"{net}-{framework}"


def train_dir(framework: str, seed: int, root: Path = ARTIFACTS, net: str = "mlp") -> Path:
    return Path(root) / "train" / model_name(framework, net) / f"s{seed}"


def train_stage(framework: str, *, seed: int = 0, data_dir=None, config=None,
                root: Path = ARTIFACTS) -> Path:
    """Train (or reuse) one framework's model; returns the path of its model.npz."""
    from pipeline import data, train

    config = config or train.TrainConfig()
    out = train_dir(framework, seed, root, config.net)
    directory = data.data_dir(data_dir)
    key = {"stage": "train", "framework": framework, "seed": seed, "config": asdict(config),
           "data_sha256": data.files_sha256(directory) if directory.is_dir() else None}
    stamp = out / STAMP
    if fresh(stamp, key):
        tqdm.write(f"train {framework} seed {seed}: up to date ({out})")
        return out / "model.npz"
    dataset = data.load_fashion_mnist(directory)
    train.train_and_save(framework, dataset=dataset, seed=seed, out_dir=out, config=config)
    mark(stamp, key, [out / "model.npz", out / "curves.json", out / "train.json"])
    return out / "model.npz"


MASKED = ".masked.npz"  # a gradual level's fine-tuned model before shrink/CSR: the next level's start
