"""One-shot magnitude pruning as pure functions on the model description.

Counts are exact: the k% is turned into an integer with round-half-up and the
smallest entries are picked by a stable ranking, never by a threshold, so ties
cannot change how many weights or units go.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import numpy as np

from pipeline.errors import fail
from pipeline.model import Layer, Model

LEVELS = (0, 25, 50, 60, 70, 80, 90, 95, 97, 99)


def check_sparsity(sparsity, subject: str = "sparsity") -> float:
    """Sparsity in percent, in [0, 100)."""
    try:
        k = float(sparsity)
    except (TypeError, ValueError):
        raise fail(subject, f"must be a number in [0, 100), got {sparsity!r}") from None
    if not (0.0 <= k < 100.0) or math.isnan(k):
        raise fail(subject, f"must be in [0, 100), got {sparsity!r}")
    return k


def count_to_remove(n: int, sparsity: float) -> int:
    """round(k% of n), half rounding up, so 50% of 3 removes 2."""
    return int(math.floor(n * sparsity / 100.0 + 0.5))


def smallest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` smallest scores; ties go to the lower index (stable)."""
    return np.argsort(scores, kind="stable")[:count]


def _pruned_layers(model: Model, include_output: bool) -> range:
    return range(len(model.layers) if include_output else len(model.layers) - 1)


def weight_prune(model: Model, sparsity, *, include_output: bool = False) -> Model:
    """Zero exactly round(k%) of the smallest-|w| weights in each hidden layer."""
    k = check_sparsity(sparsity)
    layers = list(model.layers)
    for i in _pruned_layers(model, include_output):
        w = layers[i].dense_weight()
        drop = smallest(np.abs(w).ravel(), count_to_remove(w.size, k))
        pruned = w.copy().ravel()
        pruned[drop] = 0.0
        layers[i] = replace(layers[i], weight=pruned.reshape(w.shape))
    return model.with_layers(layers, method="weight", sparsity=k, include_output=include_output)


def unit_prune(model: Model, sparsity, *, include_output: bool = False) -> Model:
    """Zero the incoming weights (columns) of exactly round(k%) of each hidden layer's units
    with the smallest L2 norm, keeping at least one. The unit then outputs the constant act(bias),
    which `shrink` folds into the next layer. The output layer never loses units
    (`include_output` is accepted for a uniform signature and ignored)."""
    k = check_sparsity(sparsity)
    layers = list(model.layers)
    for i in range(len(layers) - 1):
        w = layers[i].dense_weight()
        n_units = w.shape[1]
        drop = smallest(np.linalg.norm(w, axis=0), min(count_to_remove(n_units, k), n_units - 1))
        pruned = w.copy()
        pruned[:, drop] = 0.0
        layers[i] = replace(layers[i], weight=pruned)
    return model.with_layers(layers, method="unit", sparsity=k)


def no_prune(model: Model, sparsity=0, *, include_output: bool = False) -> Model:
    return model.with_layers(model.layers, method="dense", sparsity=0.0)


# Method name -> masked pruning function. Later methods (block, fine-tuned, low-rank) register here.
METHODS: dict[str, Callable[..., Model]] = {
    "weight": weight_prune,
    "unit": unit_prune,
}


def prune(model: Model, method: str, sparsity, *, include_output: bool = False) -> Model:
    if method not in METHODS:
        raise fail("method", f"unknown pruning method {method!r} (choose from {', '.join(METHODS)})")
    return METHODS[method](model, sparsity, include_output=include_output)


def sparsity_of(layer: Layer) -> float:
    return 1.0 - layer.nnz / float(np.prod(layer.shape))


# Structured and low-rank methods register themselves into METHODS (additive; keep last).
from pipeline import lowrank as _lowrank, prune_block as _prune_block  # noqa: E402,F401
