"""Make unit pruning physical: drop constant units, fold their output into the next bias.

A hidden unit whose incoming column is all zero outputs act(b_j) for every input.
Removing it and adding act(b_j) * W_next[j, :] to the next bias leaves the network's
outputs unchanged (up to float rounding), whatever made the column zero.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from pipeline.model import ACTIVATIONS, Layer, Model, validate


def constant_units(layer: Layer) -> np.ndarray:
    """Boolean mask of units whose incoming weights are all zero; at least one unit is kept."""
    w = layer.dense_weight()
    dead = ~np.any(w != 0, axis=0)
    if dead.all():
        dead[0] = False
    return dead


def remove_units(layer: Layer, successor: Layer, dead: np.ndarray) -> tuple[Layer, Layer]:
    """The coupled edit: drop columns/bias of `layer` and matching rows of `successor`."""
    keep = ~dead
    act = ACTIVATIONS[layer.activation]
    constant_out = act(layer.bias[dead].astype(np.float32))
    w_next = successor.dense_weight()
    folded_bias = (successor.bias + constant_out @ w_next[dead]).astype(np.float32)
    shrunk = replace(layer, weight=np.ascontiguousarray(layer.dense_weight()[:, keep]),
                     bias=np.ascontiguousarray(layer.bias[keep]))
    next_layer = replace(successor, weight=np.ascontiguousarray(w_next[keep]), bias=folded_bias)
    return shrunk, next_layer


def shrink(model: Model) -> Model:
    """Smaller dense model with the same outputs as the unit-masked one."""
    layers = list(model.layers)
    for i in range(len(layers) - 1):
        dead = constant_units(layers[i])
        if dead.any():
            layers[i], layers[i + 1] = remove_units(layers[i], layers[i + 1], dead)
    return validate(model.with_layers(layers, physical="shrunk"))
