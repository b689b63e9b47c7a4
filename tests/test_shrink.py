"""Shrinking unit-pruned models changes no output, for every level and activation."""
import numpy as np
import pytest

from helpers import SMALL_WIDTHS, real_test_slice
from pipeline import model as m
from pipeline.prune import LEVELS, count_to_remove, unit_prune
from pipeline.shrink import shrink

TOL = 1e-5  # float32 reassociation of the folded bias


@pytest.fixture(scope="module")
def x():
    return real_test_slice(300)


@pytest.mark.parametrize("k", LEVELS)
def test_shrink_parity_and_widths(x, k):
    model = m.random_model(SMALL_WIDTHS, seed=2)
    masked = unit_prune(model, k)
    small = shrink(masked)
    expected = [784] + [w - min(count_to_remove(w, k), w - 1) for w in SMALL_WIDTHS[1:-1]] + [10]
    assert small.widths == expected
    assert all(not layer.is_sparse for layer in small.layers)
    np.testing.assert_allclose(small.forward(x), masked.forward(x), atol=TOL, rtol=0)


@pytest.mark.parametrize("activation", sorted(m.ACTIVATIONS))
def test_removed_units_fold_their_constant_output(x, activation):
    # Large biases make act(bias) far from zero, so a missing fold would show.
    model = m.random_model(SMALL_WIDTHS, seed=4, activations=[activation] * 3 + ["identity"])
    layers = [m.Dense(l.weight, (l.bias + 1.5).astype(np.float32), l.activation) for l in model.layers]
    model = model.with_layers(layers)
    masked = unit_prune(model, 70)
    np.testing.assert_allclose(shrink(masked).forward(x), masked.forward(x), atol=TOL, rtol=0)


def test_without_fold_outputs_would_differ(x):
    """Guard that the parity test can fail: dropping units without folding changes outputs."""
    model = m.random_model(SMALL_WIDTHS, seed=5)
    masked = unit_prune(model, 50)
    small = shrink(masked)
    last = small.layers[-1]
    unfolded = small.with_layers(small.layers[:-1] + (m.Dense(last.weight, model.layers[-1].bias, last.activation),))
    assert np.abs(unfolded.forward(x) - masked.forward(x)).max() > 1e-3


def test_shrink_of_dense_model_is_identity(x):
    model = m.random_model(SMALL_WIDTHS, seed=6)
    assert shrink(model).widths == model.widths
    np.testing.assert_array_equal(shrink(model).forward(x), model.forward(x))
