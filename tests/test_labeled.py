"""Labeled data for imported models: IDX dirs and .npz files, validated; fixed-seed splits.

Uses the 8x8 digits set shipped inside scikit-learn (no download) as a second real dataset.
"""
import numpy as np
import pytest

from pipeline.data import FILES, write_idx_gz
from pipeline.errors import PrunedgeError
from pipeline.labeled import load_labeled, load_split, split


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.int64)  # pixels 0..16, labels 0..9


def _idx_dir(tmp_path, images, labels, n_test=300, plain_test=False):
    write_idx_gz(tmp_path / FILES["train"][0], images[n_test:])
    write_idx_gz(tmp_path / FILES["train"][1], labels[n_test:])
    test_images = tmp_path / FILES["test"][0]
    test_labels = tmp_path / FILES["test"][1]
    write_idx_gz(test_images, images[:n_test])
    write_idx_gz(test_labels, labels[:n_test])
    if plain_test:  # decompressed copies must be found too
        import gzip
        for p in (test_images, test_labels):
            p.with_suffix("").write_bytes(gzip.decompress(p.read_bytes()))
            p.unlink()
    return tmp_path


@pytest.mark.parametrize("plain_test", [False, True])
def test_idx_directory_train_then_t10k_scaled(tmp_path, digits, plain_test):
    images, labels = digits
    x, y = load_labeled(_idx_dir(tmp_path, images, labels, plain_test=plain_test), input_dim=64, n_classes=10)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.shape == (len(images), 64)
    expected = np.concatenate([images[300:], images[:300]]).reshape(-1, 64) / np.float32(255)
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y, np.concatenate([labels[300:], labels[:300]]))


def test_load_split_keeps_t10k_as_test(tmp_path, digits):
    images, labels = digits
    s = load_split(_idx_dir(tmp_path, images, labels), input_dim=64, n_classes=10, val_fraction=0.1)
    np.testing.assert_array_equal(s.y_test, labels[:300])
    assert len(s.x_val) == round(0.1 * (len(images) - 300))
    assert len(s.x_train) + len(s.x_val) == len(images) - 300


def test_only_one_idx_pair_is_enough(tmp_path, digits):
    images, labels = digits
    write_idx_gz(tmp_path / FILES["test"][0], images[:50])
    write_idx_gz(tmp_path / FILES["test"][1], labels[:50])
    x, y = load_labeled(tmp_path)
    assert x.shape == (50, 64) and list(y) == list(labels[:50])


def test_npz_float_taken_as_is_uint8_scaled(tmp_path, digits):
    images, labels = digits
    xf = images.reshape(-1, 64).astype(np.float64) / 16.0
    np.savez(tmp_path / "f.npz", x=xf, y=labels)
    x, y = load_labeled(tmp_path / "f.npz", input_dim=64, n_classes=10)
    np.testing.assert_array_equal(x, xf.astype(np.float32))
    np.testing.assert_array_equal(y, labels)
    np.savez(tmp_path / "u.npz", x=images, y=labels.astype(np.uint8))  # [n, 8, 8] uint8 is flattened
    x, y = load_labeled(tmp_path / "u.npz", input_dim=64)
    np.testing.assert_allclose(x, images.reshape(-1, 64) / np.float32(255), atol=1e-7)
    assert y.dtype == np.int64


def test_split_is_deterministic_disjoint_and_complete(digits):
    images, labels = digits
    x = images.reshape(-1, 64).astype(np.float32)
    a, b = split(x, labels, seed=7), split(x, labels, seed=7)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert len(a.x_val) == round(0.1 * len(x)) and len(a.x_test) == round(0.2 * len(x))
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == len(x)
    ids = np.arange(len(x), dtype=np.float32)[:, None]  # tag rows to check disjointness
    s = split(ids, labels, seed=7)
    together = np.concatenate([s.x_train, s.x_val, s.x_test]).ravel()
    assert sorted(together.tolist()) == list(range(len(x)))
    assert not np.array_equal(split(x, labels, seed=8).y_test, a.y_test)


@pytest.mark.parametrize("x, y, kwargs, message", [
    (np.zeros((5, 63), np.float32), np.zeros(5, np.int64), {"input_dim": 64}, "63 features per example but the model takes 64"),
    (np.zeros((5, 64), np.float32), np.array([0, 1, 2, 10, 3]), {"n_classes": 10}, "label 10 at example 3 is out of range [0, 10)"),
    (np.zeros((5, 64), np.float32), np.array([0, -1, 2, 1, 3]), {}, "label -1 at example 1 is negative"),
    (np.zeros((5, 64), np.float32), np.array([0, 1.5, 2, 1, 3]), {}, "labels must be integers, got 1.5 at example 1"),
    (np.zeros((5, 64), np.float32), np.array(["a"] * 5), {}, "labels must be integers"),
    (np.where(np.eye(5, 64) > 0, np.nan, 0).astype(np.float32), np.zeros(5, np.int64), {}, "NaN or infinite values (first in example 0)"),
    (np.full((5, 64), np.inf, np.float64), np.zeros(5, np.int64), {}, "NaN or infinite"),
    (np.zeros((5, 64), np.float32), np.zeros(4, np.int64), {}, "5 examples in x but 4 labels in y"),
    (np.zeros((0, 64), np.float32), np.zeros(0, np.int64), {}, "no examples"),
    (np.zeros((5, 64), np.int32), np.zeros(5, np.int64), {}, "x has dtype int32"),
    (np.zeros((5, 64), np.float32), np.eye(5, 10), {}, "one-hot"),
    (np.zeros(5, np.float32), np.zeros(5, np.int64), {}, "x must be [n, features]"),
])
def test_npz_rejections_name_the_file(tmp_path, x, y, kwargs, message):
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(PrunedgeError) as e:
        load_labeled(path, **kwargs)
    assert str(e.value).startswith(str(path)) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_npz_structure_errors(tmp_path):
    np.savez(tmp_path / "keys.npz", images=np.zeros((2, 3)), labels=np.zeros(2))
    with pytest.raises(PrunedgeError, match="expected arrays 'x' and 'y', found"):
        load_labeled(tmp_path / "keys.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(PrunedgeError, match="obj.npz: member 'x' holds Python objects"):
        load_labeled(tmp_path / "obj.npz")  # needs pickle: refused, never unpickled
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "keys.npz").read_bytes()[:40])
    with pytest.raises(PrunedgeError, match="trunc.npz: corrupt or truncated .npz"):
        load_labeled(tmp_path / "trunc.npz")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")  # not a zip: never unpickled
    with pytest.raises(PrunedgeError, match="model.onnx: corrupt or truncated .npz"):
        load_labeled(tmp_path / "model.onnx")
    with pytest.raises(PrunedgeError, match="labeled data not found"):
        load_labeled(tmp_path / "missing.npz")


def test_idx_directory_errors(tmp_path, digits):
    images, labels = digits
    with pytest.raises(PrunedgeError, match="no IDX files found"):
        load_labeled(tmp_path)
    write_idx_gz(tmp_path / FILES["train"][0], images[:20])
    with pytest.raises(PrunedgeError, match="train set is incomplete: train-labels"):
        load_labeled(tmp_path)
    write_idx_gz(tmp_path / FILES["train"][1], labels[:19])
    with pytest.raises(PrunedgeError, match="20 examples in x but 19 labels"):
        load_labeled(tmp_path)
    write_idx_gz(tmp_path / FILES["train"][1], labels[:20])
    with pytest.raises(PrunedgeError, match="out of range \\[0, 5\\)"):
        load_labeled(tmp_path, n_classes=5)
    raw = (tmp_path / FILES["train"][0]).read_bytes()
    (tmp_path / FILES["train"][0]).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PrunedgeError, match="corrupt or truncated gzip"):
        load_labeled(tmp_path)


def test_split_rejects_bad_fractions():
    x, y = np.zeros((3, 2), np.float32), np.zeros(3, np.int64)
    with pytest.raises(PrunedgeError, match="val_fraction: must be in"):
        split(x, y, val_fraction=1.5)
    with pytest.raises(PrunedgeError, match="too few"):
        split(x[:2], y[:2], val_fraction=0.5, test_fraction=0.5)


def test_channels_first_images_are_reordered_for_a_channels_first_source(tmp_path):
    """A 3-channel [n, c, h, w] array for a model imported from ONNX/torch becomes [n, h, w, c]
    features; the same array for a channels-last model is refused instead of silently reordered."""
    x = np.random.default_rng(0).random((4, 3, 5, 6), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(4))
    got, _ = load_labeled(tmp_path / "d.npz", image_shape=(5, 6, 3), layout="nchw")
    np.testing.assert_array_equal(got, x.transpose(0, 2, 3, 1).reshape(4, -1))
    with pytest.raises(PrunedgeError, match=r"images are \[3, 5, 6\] but the model takes \[5, 6, 3\]"):
        load_labeled(tmp_path / "d.npz", image_shape=(5, 6, 3), layout="nhwc")
