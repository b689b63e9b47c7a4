"""Structured weight pruning that sparse kernels can exploit: 1xB blocks and N:M groups.

Orientation: our weights are [in, out]; TFLite's FULLY_CONNECTED stores [out, in] and its
sparse kernels want blocks of B *consecutive input weights of one output unit*, i.e. along
our axis 0 within one column. LiteRT's float kernel uses 1x4 blocks, its int8/hybrid kernel
1x16 blocks (other shapes make the converter insert DENSIFY), hence "block" and "block16".

Counts are exact, like `pipeline.prune`: round-half-up of k% of the blocks (or of each group)
and a stable ranking, never a threshold. A width that is not a multiple of B ends in one
shorter block per column, ranked by its own norm like the others.
"""
from __future__ import annotations

from dataclasses import replace
import numpy as np

from pipeline.errors import fail
from pipeline.layers import Dense
from pipeline.model import Model
from pipeline.prune import check_sparsity, count_to_remove, prunable_layers, smallest

NORMS = {
    "l2": lambda blocks: np.sqrt(np.sum(blocks.astype(np.float64) ** 2, axis=1)),
    "l1": lambda blocks: np.sum(np.abs(blocks.astype(np.float64)), axis=1),
}


def matrix_layers(model: Model, include_output: bool) -> list[int]:
    """Layers whose weight is an [in, out] matrix a sparse kernel runs: Dense, and 1x1 Conv2D
    (the pointwise convolutions XNNPACK's sparse inference targets); other kernels stay dense."""
    return [i for i in prunable_layers(model, include_output)
            if isinstance(model.layers[i], Dense) or model.layers[i].kernel == (1, 1)]


def _get(layer) -> np.ndarray:
    """The layer's weight as [in, out]."""
    w = layer.dense_weight()
    return w if isinstance(layer, Dense) else w[:, :, 0, 0].T


def _put(layer, w: np.ndarray):
    w = np.ascontiguousarray(w, dtype=np.float32)
    return replace(layer, weight=w if isinstance(layer, Dense) else np.ascontiguousarray(w.T[:, :, None, None]))


def _padded_blocks(w: np.ndarray, size: int) -> np.ndarray:
    """[n_blocks, size, out] view of w [in, out] zero-padded along `in` to a multiple of size."""
    pad = (-w.shape[0]) % size
    wp = np.pad(w, ((0, pad), (0, 0))) if pad else w
    return wp.reshape(wp.shape[0] // size, size, w.shape[1])


def block_mask(w: np.ndarray, sparsity: float, *, size: int = 4, norm: str = "l2") -> np.ndarray:
    """Boolean keep-mask of w [in, out] removing exactly round(k% of blocks) lowest-norm 1xsize
    blocks (size consecutive inputs of one output unit). Ties go to the lower block index,
    blocks numbered row-major over [block_row, out]."""
    if norm not in NORMS:
        raise fail("norm", f"unknown block norm {norm!r} (choose from {', '.join(NORMS)})")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise fail("block size", f"must be a positive integer, got {size!r}")
    scores = NORMS[norm](_padded_blocks(w, size))  # [n_blocks, out]
    keep = np.ones(scores.size, dtype=bool)
    keep[smallest(scores.ravel(), count_to_remove(scores.size, sparsity))] = False
    return np.repeat(keep.reshape(scores.shape), size, axis=0)[: w.shape[0]]


def block_prune(model: Model, sparsity, *, include_output: bool = False,
                size: int = 4, norm: str = "l2") -> Model:
    """Zero exactly round(k%) of each hidden layer's 1x`size` weight blocks (lowest norm)."""
    k = check_sparsity(sparsity)
    layers = list(model.layers)
    for i in matrix_layers(model, include_output):
        w = _get(layers[i])
        layers[i] = _put(layers[i], np.where(block_mask(w, k, size=size, norm=norm), w, 0))
    method = ("block" if size == 4 else f"block{size}") + ("" if norm == "l2" else f"-{norm}")
    return model.with_layers(layers, method=method, sparsity=k, include_output=include_output,
                             block=[1, int(size)], block_norm=norm)


def _group_keep(scores: np.ndarray, drop: int) -> np.ndarray:
    """scores [groups, m, out] -> keep mask dropping the `drop` smallest in each (group, out)."""
    order = np.argsort(scores, axis=1, kind="stable")
    keep = np.ones_like(scores, dtype=bool)
    np.put_along_axis(keep, order[:, :drop, :], False, axis=1)
    return keep


def nm_mask(w: np.ndarray, sparsity: float, *, m: int = 4) -> np.ndarray:
    """Keep-mask with N:M structure along the input axis: in every group of m consecutive inputs
    of one output unit, drop round(k% of m) smallest |w| (at most m-1, so N >= 1).
    A trailing group of r < m inputs drops round(k% of r), at most r-1."""
    if not isinstance(m, (int, np.integer)) or m < 2:
        raise fail("m", f"N:M group size must be an integer >= 2, got {m!r}")
    n_in, n_out = w.shape
    full = n_in - n_in % m
    keep = np.ones(w.shape, dtype=bool)
    drop = min(count_to_remove(m, sparsity), m - 1)
    if full:
        keep[:full] = _group_keep(np.abs(w[:full]).reshape(full // m, m, n_out), drop).reshape(full, n_out)
    r = n_in - full
    if r:
        tail_drop = min(count_to_remove(r, sparsity), r - 1)
        keep[full:] = _group_keep(np.abs(w[full:])[None], tail_drop)[0]
    return keep


def nm_prune(model: Model, sparsity, *, include_output: bool = False, m: int = 4) -> Model:
    """N:M pruning (k=50, m=4 gives 2:4). The achieved sparsity is recorded in meta because
    k% of m is rounded (k=90, m=4 drops 3 of 4 = 75%)."""
    k = check_sparsity(sparsity)
    layers = list(model.layers)
    removed = total = 0
    for i in matrix_layers(model, include_output):
        w = _get(layers[i])
        keep = nm_mask(w, k, m=m)
        removed += int((~keep).sum())
        total += keep.size
        layers[i] = _put(layers[i], np.where(keep, w, 0))
    achieved = 100.0 * removed / total if total else 0.0
    return model.with_layers(layers, method="nm", sparsity=k, include_output=include_output,
                             nm=[m - min(count_to_remove(m, k), m - 1), m], achieved_sparsity=achieved)


def balanced_prune(model: Model, sparsity, *, include_output: bool = False) -> Model:
    """Column-balanced weight pruning: every output unit keeps the same number of inputs
    (round-half-up of k% removed per unit, smallest |w|), so sparse rows are load-balanced."""
    k = check_sparsity(sparsity)
    layers = list(model.layers)
    for i in matrix_layers(model, include_output):
        w = _get(layers[i])
        keep = _group_keep(np.abs(w)[None], count_to_remove(w.shape[0], k))[0]
        layers[i] = _put(layers[i], np.where(keep, w, 0))
    return model.with_layers(layers, method="balanced", sparsity=k, include_output=include_output)

