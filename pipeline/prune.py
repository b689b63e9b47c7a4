"""One-shot magnitude pruning (weights, units/filters) as pure functions on the model description.

Counts are exact: the k% is turned into an integer with round-half-up and the
smallest entries are picked by a stable ranking, never by a threshold, so ties
cannot change how many weights or units go.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from pipeline import channels
from pipeline.errors import fail
from pipeline.layers import BatchNorm, Conv2D, Dense, DepthwiseConv2D
from pipeline.model import Model

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


def prunable_layers(model: Model, include_output: bool = False) -> list[int]:
    """Dense and Conv2D layers whose weights pruning may remove: all but the output layer
    (unless `include_output`); depthwise kernels hold ~1% of a CNN's weights and stay dense."""
    last = len(model.layers) - 1
    return [i for i, layer in model.weighted()
            if isinstance(layer, (Dense, Conv2D)) and (include_output or i != last)]


def weight_prune(model: Model, sparsity, *, include_output: bool = False) -> Model:
    """Zero exactly round(k%) of the smallest-|w| weights in each prunable layer."""
    k = check_sparsity(sparsity)
    layers = list(model.layers)
    for i in prunable_layers(model, include_output):
        w = layers[i].dense_weight()
        drop = smallest(np.abs(w).ravel(), count_to_remove(w.size, k))
        pruned = w.copy().ravel()
        pruned[drop] = 0.0
        layers[i] = replace(layers[i], weight=pruned.reshape(w.shape))
    return model.with_layers(layers, method="weight", sparsity=k, include_output=include_output)


def unit_prune(model: Model, sparsity, *, include_output: bool = False) -> Model:
    """Zero the incoming weights of exactly round(k%) of each channel group's units (filters), the
    ones with the smallest L2 norm, keeping at least one (`pipeline.channels` says which channels
    go together). A removed unit of a foldable group outputs the constant act(bias), which `shrink`
    folds into its readers; elsewhere its biases go too, so it outputs exactly 0. The output layer
    never loses units (`include_output` is accepted for a uniform signature and ignored)."""
    k = check_sparsity(sparsity)
    layers = list(model.layers)
    for group in channels.groups(model):
        if not group.prunable:
            continue
        drop = smallest(channels.filter_norms(model, group), min(count_to_remove(group.size, k), group.size - 1))
        for i in group.producers:
            layers[i] = zero_channels(layers[i], drop, bias=not group.foldable)
        if not group.foldable:
            for i in group.carriers:
                layers[i] = zero_channels(layers[i], drop, bias=True)
    return model.with_layers(layers, method="unit", sparsity=k)


def zero_channels(layer, channels_: np.ndarray, *, bias: bool):
    """The layer with output channels `channels_` zeroed (weights; biases too when `bias`)."""
    if isinstance(layer, BatchNorm):
        return replace(layer, gamma=_zeroed(layer.gamma, channels_, 0), beta=_zeroed(layer.beta, channels_, 0))
    if not isinstance(layer, (Dense, Conv2D, DepthwiseConv2D)):
        return layer
    axis = 1 if isinstance(layer, Dense) else 0
    out = replace(layer, weight=_zeroed(layer.dense_weight(), channels_, axis))
    return replace(out, bias=_zeroed(layer.bias, channels_, 0)) if bias else out


def _zeroed(a: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    a = a.copy()
    a[(slice(None),) * axis + (index,)] = 0.0
    return a
