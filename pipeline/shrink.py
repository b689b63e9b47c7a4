"""Make unit (filter) pruning physical: remove dead channels from every layer of their group.

A channel is dead when all its producers' incoming weights are zero. In a foldable group it then
outputs the constant act(b) everywhere, which is added to each reader's bias before the channel
is removed; in any other group it must output exactly 0 (biases zero as well), else it stays.
The coupled edit (producers, carriers, readers) is one function, `remove_channels`.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from pipeline.channels import Group, groups
from pipeline.layers import ACTIVATIONS, BatchNorm, Conv2D, Dense, DepthwiseConv2D
from pipeline.model import Model, validate


def _zero_out(layer, axis: int) -> np.ndarray:
    """Per output channel: True where the layer's weights (summed over the other axes) are all zero."""
    w = layer.dense_weight()
    return ~np.any(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) != 0, axis=1)


def dead_channels(model: Model, group: Group) -> np.ndarray:
    """Boolean mask of the group's removable channels; at least one channel is kept."""
    dead = np.ones(group.size, dtype=bool)
    for i in group.producers:
        layer = model.layers[i]
        dead &= _zero_out(layer, 1 if isinstance(layer, Dense) else 0)
        if not group.foldable:
            dead &= layer.bias == 0
    if not group.foldable:
        for i in group.carriers:
            layer = model.layers[i]
            if isinstance(layer, DepthwiseConv2D):
                dead &= _zero_out(layer, 0) & (layer.bias == 0)
            elif isinstance(layer, BatchNorm):
                dead &= (layer.gamma == 0) & (layer.beta == 0)
    if dead.all():
        dead[0] = False
    return dead


def remove_channels(layers: list, group: Group, dead: np.ndarray) -> list:
    """The coupled edit: drop the dead channels of every producer and carrier, the matching inputs of
    every reader, and (foldable groups) add their constant output to the readers' biases."""
    keep = ~dead
    layers = list(layers)
    constant = None
    if group.foldable:
        producer = layers[group.producers[0]]
        constant = ACTIVATIONS[producer.activation](producer.bias[dead].astype(np.float32))
    for i in group.producers + group.carriers:
        layers[i] = _keep_outputs(layers[i], keep)
    for reader in group.readers:
        layers[reader.layer] = _keep_inputs(layers[reader.layer], reader.rows, dead, constant)
    return layers


def _keep_outputs(layer, keep: np.ndarray):
    if isinstance(layer, Dense):
        return replace(layer, weight=np.ascontiguousarray(layer.dense_weight()[:, keep]),
                       bias=np.ascontiguousarray(layer.bias[keep]))
    if isinstance(layer, (Conv2D, DepthwiseConv2D)):
        return replace(layer, weight=np.ascontiguousarray(layer.dense_weight()[keep]),
                       bias=np.ascontiguousarray(layer.bias[keep]))
    if isinstance(layer, BatchNorm):
        return replace(layer, **{k: np.ascontiguousarray(getattr(layer, k)[keep])
                                 for k in ("gamma", "beta", "mean", "var")})
    return layer  # pooling, Add: shapes follow


def _keep_inputs(layer, rows: tuple, dead: np.ndarray, constant):
    """A reader without the dead channels' inputs; `constant` (foldable groups) folded into its bias."""
    w = layer.dense_weight()
    if isinstance(layer, Conv2D):
        bias = layer.bias
        if constant is not None:  # unpadded: every window sees the constant at every tap
            bias = (bias + w[:, dead].sum(axis=(2, 3)) @ constant).astype(np.float32)
        return replace(layer, weight=np.ascontiguousarray(w[:, ~dead]), bias=bias)
    dead_rows = [r for c in np.flatnonzero(dead) for r in rows[c]]
    bias = layer.bias
    if constant is not None:
        per_row = np.repeat(constant, [len(rows[c]) for c in np.flatnonzero(dead)])
        bias = (layer.bias + per_row @ w[dead_rows]).astype(np.float32)
    keep_rows = np.ones(w.shape[0], dtype=bool)
    keep_rows[dead_rows] = False
    return replace(layer, weight=np.ascontiguousarray(w[keep_rows]), bias=bias)


def shrink(model: Model) -> Model:
    """Smaller dense model with the same outputs as the unit-masked one."""
    layers = list(model.layers)
    for group in groups(model):
        if not group.prunable:
            continue
        dead = dead_channels(model.with_layers(layers), group)
        if dead.any():
            layers = remove_channels(layers, group, dead)
    return validate(model.with_layers(layers, physical="shrunk"))
