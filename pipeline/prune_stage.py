"""The prune stage: every method at every level for one trained model, as tasks on bytes.

One-shot methods prune the trained model once per level; "-ft" methods then fine-tune with the
mask fixed; "-gp" (gradual) methods prune the previous level's fine-tuned model further and
fine-tune again, level by level in ascending order. The driver (`prune_stage`) reads the stamps to
find what is stale, a task (`prune_task`: one method's stale levels) computes those levels from
bytes, and the driver writes each returned file atomically with its stamp. A gradual chain whose
level i is stale is recomputed from level i on, starting from level i-1's fine-tuned model.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline import finetune, model_io
from pipeline.errors import fail
from pipeline.executor import limit_threads
from pipeline.fileio import sha256_bytes, sha256_file, write_bytes
from pipeline.methods import physical, prune, resolve
from pipeline.prune import LEVELS
from pipeline.stages import ARTIFACTS, MASKED, STAMP, fresh, level_dir, mark, recorded


def method_levels(method: str, levels) -> list[float]:
    """The levels a method is computed at: `levels`, and for a gradual method also every standard
    level below their maximum, since a gradual 95% model is reached through 25, 50, ... 90."""
    if resolve(method)[1] != "-gp" or not len(levels):
        return list(levels)
    top = max(float(k) for k in levels)
    return sorted({float(k) for k in levels} | {float(k) for k in LEVELS if k < top})


def prune_key(method: str, k: float, source_sha: str, *, include_output: bool, framework: str,
              ft_epochs: int) -> dict:
    """What a level's files depend on: the method, the level, the source model's bytes and the recipe."""
    key = {"stage": "prune", "method": method, "sparsity": float(k), "include_output": include_output,
           "source": source_sha}
    if resolve(method)[1] and k > 0:
        key["finetune"] = {"framework": framework, "epochs": ft_epochs, "lr": finetune.LR, "schedule": finetune.SCHEDULE}
    return key


def _bytes(model) -> bytes:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        return model_io.save(model, Path(tmp) / "m.npz").read_bytes()


def _load(data: bytes):
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.npz"
        path.write_bytes(data)
        return model_io.load(path)


def prune_task(item: dict, shared: dict) -> dict:
    """item: {"base": trained model.npz bytes, "start": the previous gradual level's masked bytes or None,
    "method", "levels", "name", "include_output", "framework", "ft_epochs", "seed"};
    shared: {"dataset": a Dataset or None, "threads"}. Returns {"levels": [{"k", "files", "key"}]}."""
    base = _load(item["base"])
    method, tuning = item["method"], resolve(item["method"])[1]
    start = item["start"]
    out = []
    for k in item["levels"]:
        source_bytes = start if (tuning == "-gp" and start is not None) else item["base"]
        key = prune_key(method, k, sha256_bytes(source_bytes), include_output=item["include_output"],
                        framework=item["framework"], ft_epochs=item["ft_epochs"])
        kept = item.get("recorded", {}).get(str(float(k)))
        if kept is not None and kept["key"] == _plain(key):  # a redone level gave the same bytes
            start = kept["masked"]
            continue
        source = _load(source_bytes)
        masked = prune(source, resolve(method)[0].name, k, include_output=item["include_output"])
        if tuning and k > 0:
            if shared.get("dataset") is None:
                raise fail("dataset", f"{method} fine-tunes but no training data was given")
            limit_threads(shared.get("threads"))
            masked = finetune.fine_tune(masked, shared["dataset"], framework=item["framework"], seed=item["seed"],
                                        epochs=item["ft_epochs"], progress=False)
        masked = masked.with_layers(masked.layers, method=method, framework=base.meta.get("framework", item["name"]),
                                    **({"gradual_from": float(source.meta.get("sparsity", 0))} if tuning == "-gp" else {}))
        files = {"model.npz": _bytes(physical(masked))}
        if tuning == "-gp":
            files[MASKED] = start = _bytes(masked)
        out.append({"k": k, "files": files, "key": key})
    return {"method": method, "levels": out}


def _plain(key: dict) -> dict:
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def _plan_method(base_bytes: bytes, trained_sha: str, method: str, levels, common: dict, out_root: Path,
                 name: str) -> dict | None:
    """The task for a method's stale levels (None when all are fresh). In a gradual chain every level
    after the first stale one is in the task too, with what its stamp records, so the task can keep a
    level whose recomputed source turns out byte-identical."""
    tuning = resolve(method)[1]
    start, stale, kept = None, [], {}
    for k in method_levels(method, levels):
        out = level_dir(out_root, name, method, k)
        if tuning == "-gp" and stale:
            stale.append(k)
            if (key := recorded(out / STAMP)) is not None:
                kept[str(float(k))] = {"key": key, "masked": (out / MASKED).read_bytes()}
            continue
        source_sha = sha256_file(start) if (tuning == "-gp" and start is not None) else trained_sha
        key = prune_key(method, k, source_sha, include_output=common["include_output"],
                        framework=common["framework"], ft_epochs=common["ft_epochs"])
        if not fresh(out / STAMP, key):
            stale.append(k)
        elif tuning == "-gp":
            start = out / MASKED
    if not stale:
        return None
    return {**common, "base": base_bytes, "method": method, "levels": stale, "name": name, "recorded": kept,
            "start": start.read_bytes() if (tuning == "-gp" and start is not None) else None}


def prune_stage(trained_npz: Path, *, framework: str, methods=("weight", "unit"), levels=LEVELS,
                out_root: Path = ARTIFACTS / "export", include_output: bool = False,
                dataset=None, ft_epochs: float | None = None, executor=None) -> list[Path]:
    """Prune one trained model (its folder name `framework`: torch, cnn-tf, an imported name) at every
    level with every method; write the physical form (and, for -gp, the masked model). `dataset` (a
    Dataset or a zero-argument loader, default Fashion-MNIST) is only read when something fine-tunes."""
    from pipeline.executor import InProcess
    trained_npz, out_root = Path(trained_npz), Path(out_root)
    base_bytes = trained_npz.read_bytes()
    base = model_io.load(trained_npz)
    trained_in = base.meta.get("framework")
    if ft_epochs is None:  # the network's fine-tuning budget per level
        ft_epochs = finetune.EPOCHS_BY_NET["mlp" if base.is_mlp else "cnn"]
    common = {"include_output": include_output, "ft_epochs": ft_epochs, "seed": int(base.meta.get("seed", 0)),
              "framework": trained_in if trained_in in ("torch", "tf") else "torch"}  # imported: torch
    jobs = [(m, k) for m in methods for k in method_levels(m, levels)]
    if not jobs:
        raise fail("levels", "no pruning levels or methods given")
    tasks = [t for m in methods if (t := _plan_method(base_bytes, sha256_file(trained_npz), m, levels, common,
                                                      out_root, framework)) is not None]
    executor = executor or InProcess()
    shared = {"threads": 1 if executor.workers > 1 else None,
              "dataset": _dataset(dataset) if any(resolve(t["method"])[1] for t in tasks) else None}
    for result in executor.map(prune_task, tasks, shared=shared):
        for level in result["levels"]:
            out = level_dir(out_root, framework, result["method"], level["k"])
            for name, data in level["files"].items():
                write_bytes(out / name, data)
            mark(out / STAMP, level["key"], [out / name for name in level["files"]])
    return [level_dir(out_root, framework, m, k) / "model.npz" for m, k in jobs]


def _dataset(dataset):
    if callable(dataset):
        return dataset()
    if dataset is not None:
        return dataset
    from pipeline.data import load_fashion_mnist
    return load_fashion_mnist()

