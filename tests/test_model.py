"""The model description: validation, save/load round trip, rejection of bad files."""
import io
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from helpers import SMALL_WIDTHS, real_test_slice
from pipeline import model as m
from pipeline import model_io as m_io
from pipeline.errors import PrunedgeError
from pipeline.prune import weight_prune
from pipeline.sparse import to_csr


@pytest.fixture(scope="module")
def small():
    return m.random_model(SMALL_WIDTHS, seed=3)


def test_widths_and_forward_shape(small):
    assert small.widths == SMALL_WIDTHS
    assert small.forward(real_test_slice(7)).shape == (7, 10)


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_save_load_round_trip_is_exact(tmp_path, small, kind):
    model = to_csr(weight_prune(small, 80)) if kind == "csr" else small
    path = m_io.save(model, tmp_path / "model.npz")
    loaded = m_io.load(path)
    assert loaded.meta == model.meta
    for a, b in zip(model.layers, loaded.layers):
        assert a.is_sparse == b.is_sparse and a.activation == b.activation
        np.testing.assert_array_equal(a.dense_weight(), b.dense_weight())
    x = real_test_slice(50)
    np.testing.assert_array_equal(model.forward(x), loaded.forward(x))


def test_save_is_deterministic(tmp_path, small):
    a = m_io.save(small, tmp_path / "a.npz").read_bytes()
    b = m_io.save(small, tmp_path / "b.npz").read_bytes()
    assert a == b


def test_save_leaves_no_temp_files(tmp_path, small):
    m_io.save(small, tmp_path / "model.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_missing_file(tmp_path):
    with pytest.raises(PrunedgeError, match="missing.npz: model file not found"):
        m_io.load(tmp_path / "missing.npz")


def test_truncated_file(tmp_path, small):
    path = m_io.save(small, tmp_path / "model.npz")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(PrunedgeError, match="model.npz: "):
        m_io.load(path)


def test_flipped_bytes_rejected(tmp_path, small):
    path = m_io.save(small, tmp_path / "model.npz")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PrunedgeError, match="model.npz"):
        m_io.load(path)


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"meta.json": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(PrunedgeError, match="evil.npz"):
        m_io.load(path)


def _rewrite(path, **arrays):
    with np.load(path, allow_pickle=False) as npz:
        files = {k: npz[k] for k in npz.files}
    files.update(arrays)
    np.savez(path, **files)


@pytest.mark.parametrize("bad, message", [
    (np.nan, "NaN or infinite"),
    (np.inf, "NaN or infinite"),
])
def test_non_finite_weights_rejected(tmp_path, small, bad, message):
    path = m_io.save(small, tmp_path / "model.npz")
    w = small.layers[1].weight.copy()
    w[0, 0] = bad
    _rewrite(path, **{"layer1.weight": w})
    with pytest.raises(PrunedgeError, match=message):
        m_io.load(path)


def test_shapes_that_do_not_chain_are_rejected():
    w1, w2 = np.zeros((4, 3), np.float32), np.zeros((5, 2), np.float32)
    with pytest.raises(PrunedgeError, match=r"layer 1 \(dense\): weight \[5, 2\] does not take the 3 inputs"):
        m.dense_model([w1, w2], [np.zeros(3), np.zeros(2)])


def test_wrong_recorded_shape_rejected(tmp_path, small):
    path = m_io.save(small, tmp_path / "model.npz")
    _rewrite(path, **{"layer0.weight": np.zeros((784, 63), np.float32)})
    with pytest.raises(PrunedgeError, match="model.npz: inconsistent"):
        m_io.load(path)


def test_float64_rejected():
    layer = m.Dense(np.zeros((3, 2)), np.zeros(2, np.float32), "relu")
    with pytest.raises(PrunedgeError, match="float32"):
        m.validate(m.Model((layer,)))


def test_unknown_activation_rejected():
    with pytest.raises(PrunedgeError, match="unknown activation 'gelu'"):
        m.dense_model([np.zeros((3, 2))], [np.zeros(2)], ["gelu"])


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 783), np.float32), r"expected shape \[batch, 784\]"),
    (np.zeros((784,), np.float32), r"expected shape \[batch, 784\]"),
    (np.zeros((0, 784), np.float32), "empty batch"),
    (np.zeros((2, 784), np.int32), "expected float32"),
])
def test_bad_input_to_forward(small, x, message):
    with pytest.raises(PrunedgeError, match=message):
        small.forward(x)


@pytest.mark.parametrize("activation", sorted(m.ACTIVATIONS))
def test_activations_match_definitions(activation):
    x = np.linspace(-5, 5, 101, dtype=np.float32)
    expected = {"relu": np.maximum(x, 0), "identity": x, "tanh": np.tanh(x),
                "sigmoid": 1 / (1 + np.exp(-x)), "leaky_relu": np.where(x > 0, x, 0.01 * x),
                "relu6": np.clip(x, 0, 6)}[activation]
    np.testing.assert_allclose(m.ACTIVATIONS[activation](x), expected, rtol=1e-6, atol=1e-6)


def test_csr_forward_equals_dense(small):
    pruned = weight_prune(small, 90)
    x = real_test_slice(100)
    np.testing.assert_allclose(to_csr(pruned).forward(x), pruned.forward(x), atol=1e-5)
    assert all(sp.issparse(l.weight) for l in to_csr(pruned).layers[:-1])
