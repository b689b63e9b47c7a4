"""Low-rank factorisation: W [in, out] ~ U_r [in, r] @ V_r [r, out] by truncated SVD.

Each factorised layer becomes two ordinary dense layers (identity activation and zero bias,
then the original bias and activation), so every exporter and runtime handles it unchanged.
Sparsity k% means k% of the layer's weight parameters are gone: r * (in + out) <= (1 - k%) * in * out.
Works on pruned models too (the SVD of the masked weights), e.g. lowrank(prune(m, "unit", 50), 50).
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.errors import fail
from pipeline.model import Dense, Model, validate
from pipeline.prune import check_sparsity


def rank_for(shape: tuple[int, int], sparsity: float) -> int:
    """Largest rank whose two factors hold at most (1 - k%) of in*out weights (at least 1)."""
    n_in, n_out = shape
    budget = (1.0 - sparsity / 100.0) * n_in * n_out
    return max(1, min(min(n_in, n_out), int(math.floor(budget / (n_in + n_out) + 1e-9))))


def factorize(layer: Dense, rank: int) -> tuple[Dense, Dense]:
    """Two layers whose composition is the rank-`rank` SVD truncation of `layer`.
    Singular values are split as sqrt into both factors to keep their ranges alike (int8)."""
    w = layer.dense_weight().astype(np.float64)
    if not 1 <= rank <= min(w.shape):
        raise fail("rank", f"must be in [1, {min(w.shape)}] for a {list(w.shape)} layer, got {rank}")
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    root = np.sqrt(s[:rank])
    first = Dense(np.ascontiguousarray((u[:, :rank] * root).astype(np.float32)),
                  np.zeros(rank, np.float32), "identity")
    second = Dense(np.ascontiguousarray((root[:, None] * vt[:rank]).astype(np.float32)),
                   layer.bias, layer.activation)
    return first, second


def lowrank(model: Model, sparsity, *, include_output: bool = False, ranks=None) -> Model:
    """Factorise each hidden layer (all layers with include_output) to the rank that removes
    k% of its weights; a layer is left dense at k=0 or when factorising would not save parameters.
    `ranks` ({layer index: rank}) overrides the choice, e.g. full rank for parity checks."""
    k = check_sparsity(sparsity)
    if not model.is_mlp:
        raise fail("lowrank", "factorizes fully connected chains only")
    ranks = dict(ranks or {})
    n_pruned = len(model.layers) if include_output else len(model.layers) - 1
    layers, record = [], []
    for i, layer in enumerate(model.layers):
        n_in, n_out = layer.shape
        r = ranks.get(i, rank_for(layer.shape, k) if i < n_pruned else None)
        if r is None or (i not in ranks and (k == 0 or r * (n_in + n_out) >= n_in * n_out)):
            layers.append(layer)
            continue
        layers.extend(factorize(layer, int(r)))
        record.append({"layer": i, "rank": int(r), "shape": [n_in, n_out],
                       "params": int(r) * (n_in + n_out)})
    return validate(model.with_layers(layers, method="lowrank", sparsity=k,
                                      include_output=include_output, lowrank=record))

