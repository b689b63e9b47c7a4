"""Low-rank factorisation: parity at full rank, exact parameter counts, plain dense layers."""
import numpy as np
import pytest

from helpers import SMALL_WIDTHS, real_test_slice
from pipeline.errors import PrunedgeError
from pipeline.lowrank import factorize, lowrank, rank_for
from pipeline.model import random_model
from pipeline.model_io import load, save
from pipeline.methods import prune


def test_full_rank_reproduces_outputs(tmp_path):
    m = random_model(SMALL_WIDTHS, seed=0)
    full = {i: min(l.shape) for i, l in enumerate(m.layers[:-1])}
    f = lowrank(m, 50, ranks=full)
    assert len(f.layers) == 2 * (len(m.layers) - 1) + 1
    x = real_test_slice(200)
    np.testing.assert_allclose(f.forward(x), m.forward(x), rtol=0, atol=1e-4)
    # it is a plain description: saves, loads and runs the same
    np.testing.assert_allclose(load(save(f, tmp_path / "lr.npz")).forward(x), f.forward(x), atol=0)


@pytest.mark.parametrize("k", [25, 50, 90, 95])
def test_parameter_counts_exact(k):
    m = random_model(SMALL_WIDTHS, seed=1)
    f = lowrank(m, k)
    expected = m.layers[-1].weight.size + sum(l.bias.size for l in m.layers)
    for i, layer in enumerate(m.layers[:-1]):
        n_in, n_out = layer.shape
        r = rank_for(layer.shape, k)
        assert r * (n_in + n_out) <= (1 - k / 100) * n_in * n_out or r == 1
        assert (r + 1) * (n_in + n_out) > (1 - k / 100) * n_in * n_out  # largest such rank
        expected += r * (n_in + n_out) + r  # +r: the zero bias of the first factor
        assert f.meta["lowrank"][i] == {"layer": i, "rank": r, "shape": [n_in, n_out], "params": r * (n_in + n_out)}
    assert f.n_params == expected


def test_factor_layers_are_identity_then_original():
    layer = random_model(SMALL_WIDTHS, seed=2).layers[0]
    a, b = factorize(layer, 5)
    assert a.activation == "identity" and not a.bias.any() and a.shape == (784, 5)
    assert b.activation == layer.activation and b.shape == (5, 64)
    np.testing.assert_array_equal(b.bias, layer.bias)
    # truncation error equals the discarded singular values (Eckart-Young)
    s = np.linalg.svd(layer.weight.astype(np.float64), compute_uv=False)
    err = np.linalg.norm(layer.weight - a.weight @ b.weight)
    assert err == pytest.approx(np.sqrt((s[5:] ** 2).sum()), rel=1e-4)


def test_k0_is_unchanged_and_after_pruning_works():
    m = random_model(SMALL_WIDTHS, seed=3)
    assert len(lowrank(m, 0).layers) == len(m.layers)
    p = prune(m, "unit", 50)
    f = prune(p, "lowrank", 50)
    assert f.meta["method"] == "lowrank" and f.n_params < p.n_params


def test_bad_rank_raises():
    with pytest.raises(PrunedgeError, match="rank"):
        lowrank(random_model(SMALL_WIDTHS), 50, ranks={0: 0})
