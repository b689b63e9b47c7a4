"""Block (1x4, 1x16), N:M and column-balanced pruning: exact counts, orientation, stability."""
import numpy as np
import pytest

from helpers import SMALL_WIDTHS, real_test_slice
from pipeline.errors import PrunedgeError
from pipeline.model import dense_model, random_model
from pipeline.prune import count_to_remove
from pipeline.methods import METHODS, prune
from pipeline.prune_block import block_mask, nm_mask


def _blocks_zero_or_full(w, size):
    """Every block of `size` consecutive inputs of one unit is all-zero or all-kept."""
    pad = (-w.shape[0]) % size
    nz = np.pad(w != 0, ((0, pad), (0, 0))).reshape(-1, size, w.shape[1])
    valid = np.pad(np.ones(w.shape, bool), ((0, pad), (0, 0))).reshape(-1, size, w.shape[1])
    any_nz, all_nz = nz.any(1), (nz | ~valid).all(1)
    return np.array_equal(any_nz, all_nz)


@pytest.mark.parametrize("method,size", [("block", 4), ("block16", 16), ("block-l1", 4)])
@pytest.mark.parametrize("k", [0, 25, 50, 90, 95, 99])
def test_block_exact_counts_and_structure(method, size, k):
    m = random_model(SMALL_WIDTHS, seed=1)
    p = prune(m, method, k)
    for i, (a, b) in enumerate(zip(m.layers, p.layers)):
        w = b.dense_weight()
        if i == len(m.layers) - 1:
            np.testing.assert_array_equal(w, a.weight)  # output layer untouched
            continue
        n_blocks = -(-w.shape[0] // size) * w.shape[1]
        removed_blocks = n_blocks - int(np.pad(w != 0, ((0, (-w.shape[0]) % size), (0, 0)))
                                        .reshape(-1, size, w.shape[1]).any(1).sum())
        assert removed_blocks == count_to_remove(n_blocks, k)
        assert _blocks_zero_or_full(w, size)
        kept = w != 0
        np.testing.assert_array_equal(w[kept], a.weight[kept])  # survivors unchanged
    assert p.meta["method"] == method and p.meta["block"] == [1, size]


def test_block_is_along_input_axis_of_one_unit():
    """Our [in, out] axis 0 is TFLite's contiguous input axis: blocks are w[4b:4b+4, j]."""
    w = np.ones((8, 2), np.float32)
    w[4:8, 1] = 0.01  # the weakest block: inputs 4..7 of unit 1
    keep = block_mask(w, 25, size=4)  # 4 blocks, remove 1
    expected = np.ones((8, 2), bool)
    expected[4:8, 1] = False
    np.testing.assert_array_equal(keep, expected)


def test_block_non_multiple_width_and_ties_are_stable():
    w = np.ones((10, 3), np.float32)  # 3 blocks per column, the last one has 2 inputs
    keep = block_mask(w, 50, size=4)  # 9 blocks, remove round(4.5) = 5
    removed = (~np.pad(keep, ((0, 2), (0, 0)), constant_values=True).reshape(3, 4, 3).all(1)).sum()
    assert removed == 5
    # partial blocks have the smallest L2 norm (sqrt 2) and go first, then ties by lower index
    assert not keep[8:, :].any()
    assert not keep[0:4, 0].any() and not keep[0:4, 1].any() and keep[0:4, 2].all()
    np.testing.assert_array_equal(block_mask(w, 50, size=4), keep)  # deterministic


def test_l1_and_l2_rank_differently():
    w = np.array([[3.0, 2.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0]], np.float32)  # L1 3 vs 4, L2 3 vs 2.83
    assert block_mask(w, 50, size=4, norm="l2")[:, 0].all()
    assert not block_mask(w, 50, size=4, norm="l1")[:, 0].any()


def test_block_prune_after_weight_prune_keeps_zero_blocks_pruned():
    m = prune(random_model(SMALL_WIDTHS, seed=2), "weight", 50)
    p = prune(m, "block", 60)
    for a, b in zip(m.layers[:-1], p.layers[:-1]):
        assert not np.any((a.weight == 0) & (b.weight != 0))


@pytest.mark.parametrize("k,m_,n_keep", [(50, 4, 2), (75, 4, 1), (90, 4, 1), (90, 10, 1), (0, 4, 4)])
def test_nm_every_group_keeps_n(k, m_, n_keep):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, 7)).astype(np.float32)
    keep = nm_mask(w, k, m=m_)
    per_group = keep.reshape(40 // m_, m_, 7).sum(1)
    assert (per_group == n_keep).all()
    # the kept ones are the largest |w| of their group
    groups = np.abs(w).reshape(40 // m_, m_, 7)
    kept_min = np.where(keep.reshape(groups.shape), groups, np.inf).min(1)
    dropped_max = np.where(~keep.reshape(groups.shape), groups, -np.inf).max(1)
    assert (kept_min >= dropped_max).all()


def test_nm_trailing_group_and_meta():
    w = np.arange(1, 11, dtype=np.float32).reshape(10, 1)  # groups of 4: [1..4], [5..8], tail [9, 10]
    keep = nm_mask(w, 50, m=4)
    np.testing.assert_array_equal(keep[:, 0], [0, 0, 1, 1, 0, 0, 1, 1, 0, 1])
    p = prune(random_model(SMALL_WIDTHS, seed=3), "nm", 90)
    assert p.meta["nm"] == [1, 4] and p.meta["achieved_sparsity"] == pytest.approx(75.0)


def test_balanced_every_unit_keeps_the_same_count():
    p = prune(random_model(SMALL_WIDTHS, seed=4), "balanced", 90)
    for layer in p.layers[:-1]:
        per_unit = (layer.weight != 0).sum(0)
        assert (per_unit == layer.shape[0] - count_to_remove(layer.shape[0], 90)).all()


@pytest.mark.parametrize("method", ["block", "block16", "nm", "balanced"])
def test_pruned_forward_matches_masked_reference(method):
    m = random_model(SMALL_WIDTHS, seed=5)
    p = prune(m, method, 70)
    x = real_test_slice(50)
    manual = dense_model([l.weight for l in p.layers], [l.bias for l in p.layers],
                         [l.activation for l in p.layers])
    np.testing.assert_allclose(p.forward(x), manual.forward(x), rtol=0, atol=1e-6)
    assert p.n_nonzero < m.n_nonzero


def test_bad_options_raise_prunedge_error():
    w = np.ones((8, 2), np.float32)
    with pytest.raises(PrunedgeError, match="norm"):
        block_mask(w, 50, norm="l3")
    with pytest.raises(PrunedgeError, match="block size"):
        block_mask(w, 50, size=0)
    with pytest.raises(PrunedgeError, match="m:"):
        nm_mask(w, 50, m=1)
    with pytest.raises(PrunedgeError, match="sparsity"):
        prune(random_model(SMALL_WIDTHS), "block", 100)
    assert {"block", "block16", "nm", "balanced"} <= set(METHODS)
