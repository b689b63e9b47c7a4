"""Make weight pruning physical: store pruned weight matrices as SciPy CSR.

Dense layers store W [in, out] as CSR; convolutions store their [out, in*kh*kw] kernel matrix
(the im2col layout `pipeline.ops.conv2d` multiplies by). Depthwise kernels stay dense.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from pipeline.layers import Conv2D, Dense
from pipeline.model import Model, validate


def _as_csr(matrix: np.ndarray) -> sp.csr_array:
    csr = sp.csr_array(matrix)
    csr.sort_indices()
    return csr


def to_csr(model: Model, *, min_sparsity: float = 0.0) -> Model:
    """CSR for every Dense/Conv2D layer with at least `min_sparsity` (fraction) zero weights;
    dense otherwise. nnz equals the number of weights left by pruning (explicit zeros are not stored)."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, (Dense, Conv2D)):
            w = layer.dense_weight()
            zeros = 1.0 - np.count_nonzero(w) / w.size
            if zeros > 0 and zeros >= min_sparsity:
                layer = replace(layer, weight=_as_csr(w if isinstance(layer, Dense) else w.reshape(len(w), -1)))
            else:
                layer = replace(layer, weight=w)
        layers.append(layer)
    return validate(model.with_layers(layers, physical="csr"))


def to_dense(model: Model) -> Model:
    return model.densified().with_layers(model.densified().layers, physical="dense")
