"""Retrain a pruned model with its sparsity pattern frozen (issue 5).

Every weight that is zero in the given model stays exactly zero (gradients are masked and
the mask is re-applied after each optimizer step), so unit-pruned columns stay empty and
`shrink` / `to_csr` afterwards give the same shapes and nnz as without fine-tuning.
Call it on the masked model (before shrink/CSR); a CSR model is densified first.
`prune_gradually` is one level of a gradual (-gp) chain: the mask grows while it trains
(`pipeline.gradual` is its schedule).
"""
from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import numpy as np

from pipeline import gradual
from pipeline.data import Dataset
from pipeline.errors import fail
from pipeline.model import Model, validate
from pipeline.train import TrainConfig, framework_module

FT_SUFFIX = "-ft"
# The one fine-tuning default (-ft and each -gp level). Masked Adam, rate cosine-decayed per batch
# from LR to ~0 so the result is not a noisy snapshot. Measured in torch (test accuracy, dense
# 89.74%): 2 epochs at 2e-3 beat 1e-3 from the same gradual start: block 95% 89.10 vs 88.56,
# block 90% 89.77 vs 89.40, unit 90% 88.72 vs 88.46, weight 95% 89.41 vs 89.38; 1e-4 lost
# (weight 95%, 3 epochs one-shot: 86.9 vs 88.9 at 1e-3).
EPOCHS = 2
# The CNN's epoch costs ~95 s on 2 cores (the MLP's ~6 s), so each of its fine-tuned levels trains
# half an epoch (a seeded half of the training images): a -gp chain to 99% is 4.5 epochs.
EPOCHS_BY_NET = {"mlp": EPOCHS, "cnn": 0.5}
LR = 2e-3
SCHEDULE = "cosine-step"


def fine_tune(model: Model, dataset: Dataset, *, framework: str, seed: int, epochs: float = EPOCHS,
              schedule: str = SCHEDULE, lr: float = LR, batch_size: int = 128, progress: bool = True) -> Model:
    """The model after `epochs` of masked Adam training in `framework` (same batches as
    training; a fractional budget trains a seeded share of the images, see gradual.passes);
    meta method gets "-ft"."""
    module = framework_module(framework)
    start = model.densified()
    if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
        raise fail("epochs", f"must be a number > 0, got {epochs!r}")
    passes, images = gradual.passes(epochs, len(dataset.x_train))
    dataset = _share(dataset, images, seed=seed, level=float(model.meta.get("sparsity", 0)))
    config = TrainConfig(epochs=passes, batch_size=batch_size, lr=lr, schedule=schedule)  # the net is `start`
    trained, curves = module.fit(dataset, config=config, seed=seed, init=start, masked=True,
                                 progress=progress)
    layers = [_keep_pattern(before, after) if hasattr(before, "weight") else after
              for before, after in zip(start.layers, trained.layers)]
    meta = {**model.meta, "method": model.meta.get("method", "dense") + FT_SUFFIX,
            "finetune": {"framework": framework, "seed": seed, "epochs": epochs, "lr": lr, "schedule": schedule,
                         "batch_size": batch_size, "val_acc": curves["val_acc"]}}
    if "physical" in meta:
        meta["physical"] = "dense"
    return validate(Model(tuple(layers), meta, start.input_shape))


def prune_gradually(source: Model, dataset: Dataset | None, *, method: str, target: float, framework: str, seed: int,
                    schedule: gradual.Schedule = gradual.SCHEDULE, include_output: bool = False,
                    progress: bool = True) -> Model:
    """One level of a gradual chain: `source` (the previous level's masked model; its meta
    "sparsity" is where the level starts) pruned by one-shot `method` (e.g. "weight") up to exactly
    `target`% while it trains in `framework`, as `schedule` says. A level of 0 epochs is the
    one-shot prune of `source`. The result's meta is the one-shot prune's plus "gradual"."""
    from pipeline.methods import prune

    start_k = float(source.meta.get("sparsity", 0))
    one_shot = prune(source, method, target, include_output=include_output)
    budget = gradual.level_epochs(start_k, target, schedule)
    if budget == 0:  # `dataset` is not read: it may be None
        return one_shot
    epochs, images = gradual.passes(budget, len(dataset.x_train))
    dataset = _share(dataset, images, seed=seed, level=target)
    n_steps = epochs * math.ceil(images / schedule.batch_size)
    last = {"model": one_shot}

    def to(sparsity: float, current: Model) -> Model:
        last["model"] = prune(source.with_layers(current.layers), method, sparsity, include_output=include_output)
        return last["model"]

    updates = gradual.mask_updates(n_steps, start=start_k, target=target, schedule=schedule)
    lr = gradual.level_lr(budget, schedule)
    config = TrainConfig(epochs=epochs, batch_size=schedule.batch_size, lr=lr, schedule="constant")
    trained, curves = framework_module(framework).fit(
        dataset, config=config, seed=seed, init=source.densified(), masked=True, progress=progress,
        remask={t: partial(to, k) for t, k in updates.items()},
        lr_at=partial(gradual.lr_at, n_steps=n_steps, hold=gradual.ramp_steps(n_steps, schedule), lr=lr))
    assert float(last["model"].meta["sparsity"]) == float(target), "the last mask update missed the target"
    layers = [_keep_pattern(before, after) if hasattr(before, "weight") else after
              for before, after in zip(last["model"].layers, trained.layers)]
    meta = {**one_shot.meta, "gradual": {"framework": framework, "seed": seed, "from": start_k, "passes": epochs,
                                         "images": images, "batches": n_steps, "lr": lr, "mask_updates": len(updates),
                                         "schedule": schedule.to_dict(), "val_acc": curves["val_acc"]}}
    return validate(replace(one_shot, layers=tuple(layers), meta=meta))


def _share(dataset: Dataset, images: int, *, seed: int, level: float) -> Dataset:
    """`dataset` with `images` of its training images (all when that is all of them): a fractional
    budget trains a seeded share, the same for every framework, one share per level."""
    if images >= len(dataset.x_train):
        return dataset
    order = np.random.default_rng([seed, int(round(level * 100))]).permutation(len(dataset.x_train))
    keep = np.sort(order[:images])
    return replace(dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep])


def _keep_pattern(before, after):
    """`after` with exactly the nonzero pattern of `before`. Masking already keeps pruned
    weights at 0; a kept weight that an Adam step lands exactly on 0.0 (rare) is set to the
    smallest normal float32 so nnz, and hence the recorded sparsity, stays exact."""
    kept = before.weight != 0
    w = after.weight
    assert not np.any(w[~kept]), "masked training changed a pruned weight"
    w = np.where(kept & (w == 0), np.finfo(np.float32).tiny, w).astype(np.float32)
    return replace(after, weight=w)
