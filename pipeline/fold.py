"""Fold inference-time BatchNorm into the convolution or Dense layer before it.

bn(conv(x)) = conv'(x) with W' = W * s (per output channel) and b' = b * s + t, where
(s, t) = BatchNorm.scale_shift(); the BatchNorm's activation moves onto the folded layer. Done
before pruning and export, so filter norms are those of the network that runs, and recorded in
provenance (meta["batchnorm_folded"]: how many were folded).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from pipeline.errors import fail
from pipeline.layers import BatchNorm, Conv2D, Dense, DepthwiseConv2D
from pipeline.model import Model, validate


def _fold_one(layer, bn: BatchNorm):
    s, t = bn.scale_shift()
    w = layer.dense_weight().astype(np.float64)
    w = w * s if isinstance(layer, Dense) else w * s.reshape(-1, *([1] * (w.ndim - 1)))
    bias = layer.bias.astype(np.float64) * s + t
    return replace(layer, weight=np.ascontiguousarray(w, dtype=np.float32), bias=bias.astype(np.float32),
                   activation=bn.activation)


def _readers(model: Model) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i in range(len(model.layers)):
        for j in model.sources(i):
            out.setdefault(j, []).append(i)
    return out


def fold_batchnorm(model: Model) -> Model:
    """The model without BatchNorm layers; each folded into the Dense/Conv2D/DepthwiseConv2D it
    follows (which must have identity activation and no other reader). Anything else is refused."""
    readers = _readers(model)
    layers, keep, folded = list(model.layers), [], 0
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, BatchNorm):
            keep.append(i)
            continue
        (j,) = model.sources(i)
        prev = layers[j] if j >= 0 else None
        if (not isinstance(prev, (Dense, Conv2D, DepthwiseConv2D)) or prev.activation != "identity"
                or readers.get(j) != [i]):
            raise fail(f"layer {i} (batchnorm)", "can only be folded into a conv or dense layer right before "
                                                 "it with no activation and no other reader")
        layers[j] = _fold_one(prev, layer)
        folded += 1
    if not folded:
        return model
    index = {old: new for new, old in enumerate(keep)}
    remap = {i: index[model.sources(i)[0]] for i, layer in enumerate(model.layers) if isinstance(layer, BatchNorm)}
    for old in remap:  # a folded BatchNorm's readers read the layer it was folded into
        index[old] = remap[old]
    index[-1] = -1
    out = []
    for new, old in enumerate(keep):
        layer = layers[old]
        srcs = model.sources(old)
        wired = tuple(index[j] for j in srcs)
        out.append(replace(layer, inputs=() if wired == (new - 1,) else wired))
    return validate(model.with_layers(out, batchnorm_folded=int(model.meta.get("batchnorm_folded", 0)) + folded))
