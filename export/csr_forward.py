"""The SciPy CSR forward pass the bench times for models stored as CSR (`scipy-csr` runtime).

Dense layers run in the orientation measured fastest for each batch shape (full-size MLP,
1 thread, random weights; numbers in the bench report):
- batch 1: W^T stored as CSR [out, in] times the 1-D input (`csr_matvec`): 1.7-2x faster
  than `x @ W`, whose rmatmul path transposes and wraps 2-D arrays (90%: 100 vs 166 us);
- batch > 1: `x @ W` with W CSR [in, out], which SciPy runs as CSC mat-vecs over the batch;
  keeping activations transposed and calling W^T @ H was 7-15% slower at 50-95%.
Convolutions run the description's own im2col x CSR product; other layers their numpy forward.
Every prunable layer of a dense (k00) model is converted to CSR, so k00 is the same-runtime reference.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from pipeline.layers import ACTIVATIONS, Dense
from pipeline.model import Model, check_input
from pipeline.prune import prunable_layers


def _csr(w: np.ndarray) -> sp.csr_array:
    csr = sp.csr_array(w)
    csr.sort_indices()
    return csr


def as_csr(model: Model) -> Model:
    """Every prunable layer stored as CSR (Dense [in, out]; conv [out, in*kh*kw])."""
    layers = list(model.layers)
    for i in prunable_layers(model):
        layer = layers[i]
        if not layer.is_sparse:
            w = layer.dense_weight()
            layers[i] = replace(layer, weight=_csr(w if isinstance(layer, Dense) else w.reshape(len(w), -1)))
    return model.with_layers(layers)


class CsrForward:
    def __init__(self, model: Model):
        self.model = as_csr(model)
        self.transposed = {i: (layer.weight.T.tocsr() if layer.is_sparse else np.ascontiguousarray(layer.weight.T))
                           for i, layer in enumerate(self.model.layers) if isinstance(layer, Dense)}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        m = self.model
        x = check_input(x, m.input_shape)
        if m.is_mlp and len(x) == 1:
            v = x[0]
            for i, layer in enumerate(m.layers):
                v = ACTIVATIONS[layer.activation](self.transposed[i] @ v + layer.bias)
            return np.asarray(v, dtype=np.float32)[None, :]
        return m.forward(x)
