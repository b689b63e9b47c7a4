"""Exact pruning counts, ties, range checks, purity."""
import numpy as np
import pytest

from helpers import SMALL_WIDTHS
from pipeline import model as m
from pipeline.errors import PrunedgeError
from pipeline.prune import LEVELS, count_to_remove, unit_prune, weight_prune
from pipeline.methods import prune


@pytest.fixture(scope="module")
def small():
    return m.random_model(SMALL_WIDTHS, seed=1)


@pytest.mark.parametrize("k", LEVELS + (33.3, 99.9))
def test_weight_prune_exact_counts(small, k):
    pruned = weight_prune(small, k)
    for before, after in zip(small.layers[:-1], pruned.layers[:-1]):
        n = before.weight.size
        assert after.nnz == n - count_to_remove(n, k)
    np.testing.assert_array_equal(pruned.layers[-1].weight, small.layers[-1].weight)


@pytest.mark.parametrize("k", LEVELS)
def test_weight_prune_removes_the_smallest(small, k):
    pruned = weight_prune(small, k)
    for before, after in zip(small.layers[:-1], pruned.layers[:-1]):
        kept = np.abs(before.weight[after.weight != 0])
        dropped = np.abs(before.weight[after.weight == 0])
        if kept.size and dropped.size:
            assert dropped.max() <= kept.min()
        np.testing.assert_array_equal(after.weight[after.weight != 0], before.weight[after.weight != 0])


def test_weight_prune_ties_still_exact():
    w = np.ones((10, 10), np.float32)  # every |w| ties
    model = m.dense_model([w, np.ones((10, 2))], [np.zeros(10), np.zeros(2)])
    for k in (25, 50, 33, 99):
        assert weight_prune(model, k).layers[0].nnz == 100 - count_to_remove(100, k)


def test_include_output(small):
    pruned = weight_prune(small, 50, include_output=True)
    out = small.layers[-1].weight.size
    assert pruned.layers[-1].nnz == out - count_to_remove(out, 50)


@pytest.mark.parametrize("k", LEVELS)
def test_unit_prune_exact_counts(small, k):
    pruned = unit_prune(small, k)
    for before, after in zip(small.layers[:-1], pruned.layers[:-1]):
        units = before.weight.shape[1]
        zero_cols = int((~np.any(after.weight != 0, axis=0)).sum())
        assert zero_cols == min(count_to_remove(units, k), units - 1)
    np.testing.assert_array_equal(pruned.layers[-1].weight, small.layers[-1].weight)


def test_unit_prune_removes_smallest_norm_columns(small):
    pruned = unit_prune(small, 50)
    w_before, w_after = small.layers[0].weight, pruned.layers[0].weight
    norms = np.linalg.norm(w_before, axis=0)
    dead = ~np.any(w_after != 0, axis=0)
    assert norms[dead].max() <= norms[~dead].min()


def test_unit_prune_keeps_one_unit():
    model = m.dense_model([np.ones((3, 2)), np.ones((2, 2))], [np.zeros(2), np.zeros(2)])
    pruned = unit_prune(model, 99)  # round(0.99 * 2) = 2, capped to 1
    assert int(np.any(pruned.layers[0].weight != 0, axis=0).sum()) == 1


def test_unit_prune_ties_still_exact():
    w = np.ones((4, 8), np.float32)
    model = m.dense_model([w, np.ones((8, 2))], [np.zeros(8), np.zeros(2)])
    assert int((~np.any(unit_prune(model, 50).layers[0].weight != 0, axis=0)).sum()) == 4


def test_pruning_is_pure(small):
    before = [l.weight.copy() for l in small.layers]
    weight_prune(small, 90), unit_prune(small, 90)
    for b, layer in zip(before, small.layers):
        np.testing.assert_array_equal(b, layer.weight)


def test_meta_records_method_and_sparsity(small):
    pruned = prune(small, "weight", 90)
    assert pruned.meta["method"] == "weight" and pruned.meta["sparsity"] == 90.0
    assert pruned.meta["seed"] == small.meta["seed"]


@pytest.mark.parametrize("k", [-1, 100, 150, "abc", float("nan"), None])
def test_sparsity_out_of_range(small, k):
    with pytest.raises(PrunedgeError, match=r"sparsity: must be .*\[0, 100\)"):
        prune(small, "weight", k)


def test_unknown_method(small):
    with pytest.raises(PrunedgeError, match="method: unknown method 'random'"):
        prune(small, "random", 50)
