"""IDX loader: real files load, every kind of corrupt file fails with a one-line error."""
import gzip
import struct

import numpy as np
import pytest

from pipeline import data
from pipeline.errors import PrunedgeError


def _images(n=6, rows=4, cols=4):
    return np.random.default_rng(n).integers(0, 256, (n, rows, cols), dtype=np.uint8)


@pytest.fixture
def idx_dir(tmp_path):
    for split, n in (("train", 30), ("test", 10)):
        images, labels = data.FILES[split]
        data.write_idx_gz(tmp_path / images, _images(n))
        data.write_idx_gz(tmp_path / labels, np.arange(n) % 10)
    return tmp_path


def test_load_small_dir(idx_dir):
    ds = data.load_fashion_mnist(idx_dir, val_size=5)
    assert ds.x_train.shape == (25, 16) and ds.x_val.shape == (5, 16) and ds.x_test.shape == (10, 16)
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert ds.y_train.dtype == np.int64


def test_split_is_fixed_and_disjoint(idx_dir):
    a = data.load_fashion_mnist(idx_dir, val_size=5)
    b = data.load_fashion_mnist(idx_dir, val_size=5)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    rows = {r.tobytes() for r in a.x_train} & {r.tobytes() for r in a.x_val}
    assert not rows


def test_env_variable_points_elsewhere(idx_dir, monkeypatch):
    monkeypatch.setenv("PRUNEDGE_DATA", str(idx_dir))
    assert data.data_dir() == idx_dir
    assert data.data_dir("/elsewhere") == data.Path("/elsewhere")


@pytest.mark.skipif(not (data.DEFAULT_DATA_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = data.load_fashion_mnist(data.DEFAULT_DATA_DIR)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (55000, 5000, 10000)
    assert ds.x_test.shape[1] == 784
    assert set(np.unique(ds.y_test)) == set(range(10))


def _corrupt(idx_dir, name, payload: bytes, compress=True):
    (idx_dir / name).write_bytes(gzip.compress(payload) if compress else payload)


IMG, LBL = data.FILES["train"]


@pytest.mark.parametrize("name, payload, compress, message", [
    (IMG, b"", False, "truncated IDX header"),
    (IMG, b"\x1f\x8b\x08\x00garbage", False, "corrupt or truncated gzip"),
    (IMG, struct.pack(">IIII", 2049, 30, 4, 4) + bytes(480), True, "wrong magic number 2049"),
    (IMG, struct.pack(">IIII", 2051, 30, 4, 4) + bytes(100), True, "does not match dimensions"),
    (IMG, b"\x00\x00", True, "truncated IDX header"),
    (LBL, struct.pack(">II", 2049, 29) + bytes(29), True, "29 labels but"),
    (LBL, struct.pack(">II", 2049, 30) + bytes([12] * 30), True, r"label 12 out of range \[0, 10\)"),
])
def test_corrupt_files_name_the_file(idx_dir, name, payload, compress, message):
    _corrupt(idx_dir, name, payload, compress)
    with pytest.raises(PrunedgeError, match=message) as err:
        data.load_fashion_mnist(idx_dir, val_size=5)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_truncated_gzip_stream(idx_dir):
    raw = (idx_dir / IMG).read_bytes()
    (idx_dir / IMG).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PrunedgeError, match=f"{IMG}: corrupt or truncated gzip"):
        data.load_fashion_mnist(idx_dir, val_size=5)


def test_missing_directory(tmp_path):
    with pytest.raises(PrunedgeError, match="nope: data directory not found"):
        data.load_fashion_mnist(tmp_path / "nope")


def test_missing_file(idx_dir):
    (idx_dir / LBL).unlink()
    with pytest.raises(PrunedgeError, match=f"{LBL}: file not found"):
        data.load_fashion_mnist(idx_dir, val_size=5)
