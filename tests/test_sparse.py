"""CSR storage of weight-pruned models: exact nnz and the same outputs."""
import numpy as np
import pytest
import scipy.sparse as sp

from helpers import SMALL_WIDTHS, real_test_slice
from pipeline import model as m
from pipeline.prune import LEVELS, count_to_remove, weight_prune
from pipeline.sparse import to_csr, to_dense


@pytest.mark.parametrize("k", LEVELS)
def test_csr_nnz_and_parity(k):
    model = m.random_model(SMALL_WIDTHS, seed=7)
    masked = weight_prune(model, k)
    csr = to_csr(masked)
    x = real_test_slice(200)
    for before, layer in zip(model.layers[:-1], csr.layers[:-1]):
        n = before.weight.size
        assert layer.nnz == n - count_to_remove(n, k)
        assert layer.is_sparse == (k > 0)
        if layer.is_sparse:
            assert isinstance(layer.weight, sp.csr_array) and layer.weight.has_sorted_indices
    np.testing.assert_allclose(csr.forward(x), masked.forward(x), atol=1e-5, rtol=0)


def test_round_trip_to_dense():
    masked = weight_prune(m.random_model(SMALL_WIDTHS, seed=8), 90)
    back = to_dense(to_csr(masked))
    for a, b in zip(masked.layers, back.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
