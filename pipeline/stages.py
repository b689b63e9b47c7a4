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

from pipeline import finetune, model_io
from pipeline.errors import fail
from pipeline.fileio import sha256_file, write_json
from pipeline.methods import physical, prune, resolve
from pipeline.prune import LEVELS

STAMP = ".stage.json"
ARTIFACTS = Path("artifacts")


def fresh(stamp_path: Path, key: dict) -> bool:
    stamp_path = Path(stamp_path)
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        return False
    if stamp.get("key") != json.loads(json.dumps(key, sort_keys=True, default=str)):
        return False
    base = stamp_path.parent
    outputs = stamp.get("outputs", {})
    return bool(outputs) and all(
        (base / rel).is_file() and sha256_file(base / rel) == digest for rel, digest in outputs.items())


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


def method_levels(method: str, levels) -> list[float]:
    """The levels a method is computed at: `levels`, and for a gradual method also every standard
    level below their maximum, since a gradual 95% model is reached through 25, 50, ... 90."""
    if resolve(method)[1] != "-gp" or not len(levels):
        return list(levels)
    top = max(float(k) for k in levels)
    return sorted({float(k) for k in levels} | {float(k) for k in LEVELS if k < top})


def _fashion_mnist(data_dir=None):
    from pipeline.data import load_fashion_mnist
    return load_fashion_mnist(data_dir)


def prune_stage(trained_npz: Path, *, framework: str, methods=("weight", "unit"), levels=LEVELS,
                out_root: Path = ARTIFACTS / "export", include_output: bool = False,
                dataset=None, ft_epochs: int = finetune.EPOCHS) -> list[Path]:
    """Prune one trained model at every level with every method; write the physical form.

    "-ft" methods are pruned once from the trained model and fine-tuned with the mask fixed;
    "-gp" (gradual) methods prune the previous level's fine-tuned model further and fine-tune
    again, level by level in ascending order, like tfmot's gradual schedule sampled at the
    levels. `dataset` (a Dataset or a zero-argument loader, default Fashion-MNIST) is only
    read when fine-tuning."""
    trained_npz = Path(trained_npz)
    base = model_io.load(trained_npz)
    trained_sha = sha256_file(trained_npz)
    trained_in = base.meta.get("framework")
    ft_framework = trained_in if trained_in in ("torch", "tf") else "torch"  # imported models: torch
    loaded = {}

    def data():
        if "ds" not in loaded:
            loaded["ds"] = dataset() if callable(dataset) else (dataset or _fashion_mnist())
        return loaded["ds"]

    written = []
    jobs = [(m, k) for m in methods for k in method_levels(m, levels)]
    previous: dict[str, Path] = {}  # gradual method -> the last level's MASKED file
    for method, k in tqdm(jobs, desc=f"prune {framework}", unit="model"):
        method_row, tuning = resolve(method)
        out = level_dir(out_root, framework, method, k)
        start = previous.get(method) if tuning == "-gp" else None
        key = {"stage": "prune", "method": method, "sparsity": k, "include_output": include_output,
               "source": sha256_file(start) if start else trained_sha}
        if tuning and k > 0:
            key["finetune"] = {"framework": ft_framework, "epochs": ft_epochs, "lr": finetune.LR,
                               "schedule": finetune.SCHEDULE}
        outputs = [out / "model.npz"] + ([out / MASKED] if tuning == "-gp" else [])
        if not fresh(out / STAMP, key):
            source = model_io.load(start) if start else base
            masked = prune(source, method_row.name, k, include_output=include_output)
            if tuning and k > 0:
                masked = finetune.fine_tune(masked, data(), framework=ft_framework,
                                            seed=int(base.meta.get("seed", 0)), epochs=ft_epochs, progress=False)
            masked = masked.with_layers(masked.layers, method=method,
                                        framework=base.meta.get("framework", framework),
                                        **({"gradual_from": float(source.meta.get("sparsity", 0))}
                                           if tuning == "-gp" else {}))
            model_io.save(physical(masked), out / "model.npz")
            if tuning == "-gp":
                model_io.save(masked, out / MASKED)
            mark(out / STAMP, key, outputs)
        if tuning == "-gp":
            previous[method] = out / MASKED
        written.append(out / "model.npz")
    if not written:
        raise fail("levels", "no pruning levels or methods given")
    return written
