"""Make weight pruning physical: store pruned weight matrices as SciPy CSR."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from pipeline.model import Model, validate


def to_csr(model: Model, *, min_sparsity: float = 0.0) -> Model:
    """CSR for every layer with at least `min_sparsity` (fraction) zero weights; dense otherwise.

    nnz equals the number of weights left by pruning (explicit zeros are not stored)."""
    layers = []
    for layer in model.layers:
        w = layer.dense_weight()
        zeros = 1.0 - np.count_nonzero(w) / w.size
        if zeros > 0 and zeros >= min_sparsity:
            csr = sp.csr_array(w)
            csr.sort_indices()
            layer = replace(layer, weight=csr)
        else:
            layer = replace(layer, weight=w)
        layers.append(layer)
    return validate(model.with_layers(layers, physical="csr"))


def to_dense(model: Model) -> Model:
    return model.densified().with_layers(model.densified().layers, physical="dense")
