"""Any labeled dataset for an imported model: IDX directories or `.npz` files, validated.

`load_labeled(path)` gives (x float32 [n, features], y int64 [n]). Sources:
  * a directory of IDX files named like Fashion-MNIST (`train-images-idx3-ubyte[.gz]`,
    `train-labels-idx1-ubyte[.gz]`, and/or the `t10k-` pair); train rows come first;
  * an `.npz` with arrays `x` [n, ...] and `y` [n] (loaded with allow_pickle=False).
uint8 pixels are scaled to [0, 1]; float data is taken as-is; images are flattened
row-major. `load_split(path)` / `split(x, y)` give train/val/test with a fixed seed, for
calibration, fine-tuning and evaluation; an IDX directory's t10k pair stays the test set.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline import data as idx
from pipeline.data import Dataset
from pipeline.errors import fail

SPLIT_SEED = idx.SPLIT_SEED  # the same fixed seed as the Fashion-MNIST split
VAL_FRACTION = 0.1  # enough rows to calibrate int8 ranges and early-stop fine-tuning
TEST_FRACTION = 0.2  # only when the source has no test set of its own


def load_labeled(path: str | os.PathLike, *, input_dim: int | None = None, n_classes: int | None = None,
                 image_shape=None, layout: str = "nhwc") -> tuple[np.ndarray, np.ndarray]:
    """All labeled rows of `path`, checked against the model's input width and class count. For an
    image model (`image_shape` (h, w, c)), 4-D images may also come channels-first when the model's
    source file was (`layout` "nchw": ONNX, torch); they are reordered to the description's (h, w, c)."""
    parts = _load_parts(Path(path), input_dim=input_dim, n_classes=n_classes, image_shape=image_shape,
                        layout=layout)
    x = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    y = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return x, y


def load_split(path: str | os.PathLike, *, input_dim: int | None = None, n_classes: int | None = None,
               image_shape=None, layout: str = "nhwc", val_fraction: float = VAL_FRACTION,
               test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> Dataset:
    """train/val/test from `path`; an IDX directory with both pairs keeps t10k as the test set."""
    path = Path(path)
    parts = _load_parts(path, input_dim=input_dim, n_classes=n_classes, image_shape=image_shape, layout=layout)
    if len(parts) == 2:  # IDX train + t10k: never mix the official test images into training
        (x, y), (x_test, y_test) = parts
        inner = split(x, y, val_fraction=val_fraction, test_fraction=0.0, seed=seed)
        ds = Dataset(inner.x_train, inner.y_train, inner.x_val, inner.y_val, x_test, y_test,
                     n_classes=max(inner.n_classes, int(y_test.max(initial=-1)) + 1))
    else:
        ds = split(*parts[0], val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    return ds if n_classes is None else replace(ds, n_classes=n_classes)


def split(x: np.ndarray, y: np.ndarray, *, val_fraction: float = VAL_FRACTION,
          test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> Dataset:
    """Shuffle with `seed` and cut into train/val/test (sizes rounded, each non-empty if asked)."""
    n = len(x)
    if len(y) != n:
        raise fail("split", f"{n} examples but {len(y)} labels")
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise fail(name, f"must be in [0, 1), got {frac}")
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise fail("split", f"{n} examples are too few for val_fraction={val_fraction}, "
                            f"test_fraction={test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    val, test, train = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]
    return Dataset(x[train], y[train], x[val], y[val], x[test], y[test], n_classes=int(y.max(initial=-1)) + 1)


# ---------------------------------------------------------------- readers

def _load_parts(path: Path, *, input_dim, n_classes, image_shape=None,
                layout="nhwc") -> list[tuple[np.ndarray, np.ndarray]]:
    """[(x, y)] for an .npz, [(train), (t10k)] / [(one pair)] for an IDX directory, validated."""
    if path.is_dir():
        raw = _read_idx_dir(path)
    elif path.is_file():
        raw = [(path, *_read_npz(path))]
    else:
        raise fail(path, "labeled data not found (expected a directory of IDX files or an .npz)")
    return [_validate(where, _channels_last(where, x, image_shape, layout), y, input_dim=input_dim,
                      n_classes=n_classes) for where, x, y in raw]


def _find(directory: Path, name: str) -> Path | None:
    """`name` as shipped (.gz) or decompressed."""
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_dir(directory: Path):
    found = []
    for split_name, (images_name, labels_name) in idx.FILES.items():
        images, labels = _find(directory, images_name), _find(directory, labels_name)
        if images is None and labels is None:
            continue
        if images is None or labels is None:
            missing = images_name if images is None else labels_name
            raise fail(directory, f"{split_name} set is incomplete: {missing} not found")
        x = idx.read_idx(images, idx.IMAGE_MAGIC)
        y = idx.read_idx(labels, idx.LABEL_MAGIC)
        found.append((images, x, y))
    if not found:
        names = ", ".join(n for pair in idx.FILES.values() for n in pair)
        raise fail(directory, f"no IDX files found (expected {names}, optionally without .gz)")
    return found


def _read_npz(path: Path):
    from pipeline.npzio import read_npz
    arrays = read_npz(path)
    if "x" not in arrays or "y" not in arrays:
        raise fail(path, f"expected arrays 'x' and 'y', found {sorted(arrays) or 'none'}")
    return arrays["x"], arrays["y"]


def _validate(where, x, y, *, input_dim, n_classes):
    """float32 [n, features] in the model's width and int64 labels in [0, n_classes)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2:
        raise fail(where, f"x must be [n, features] or [n, *image_shape], got shape {list(x.shape)}")
    if x.shape[0] == 0:
        raise fail(where, "no examples (empty x)")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise fail(where, f"y must be a 1-D array of class indices, got shape {list(y.shape)}"
                          + (" (one-hot? store y.argmax(axis=1))" if y.ndim == 2 else ""))
    if len(y) != len(x):
        raise fail(where, f"{len(x)} examples in x but {len(y)} labels in y")
    x = _features(where, x)
    if input_dim is not None and x.shape[1] != input_dim:
        raise fail(where, f"{x.shape[1]} features per example but the model takes {input_dim}")
    return x, _labels(where, y, n_classes)


def _channels_last(where, x, image_shape, layout: str):
    """[n, c, h, w] images of a model imported from a channels-first file -> [n, h, w, c]; any other
    4-D shape that is not the model's is refused (flattening it would silently reorder the pixels)."""
    x = np.asarray(x)
    if image_shape is None or x.ndim != 4:
        return x
    h, w, c = image_shape
    if tuple(x.shape[1:]) == (h, w, c):
        return x
    if layout == "nchw" and tuple(x.shape[1:]) == (c, h, w):
        return x.transpose(0, 2, 3, 1)
    raise fail(where, f"images are {list(x.shape[1:])} but the model takes [{h}, {w}, {c}]"
                      + (f" (or [{c}, {h}, {w}] like its source file)" if layout == "nchw" else ""))


def _features(where, x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise fail(where, f"x has dtype {x.dtype}; expected uint8 pixels (scaled to [0, 1]) or floats")
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise fail(where, f"x has {int(bad.sum())} NaN or infinite values (first in example {row})")
    x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        raise fail(where, "x has values too large for float32")
    return x32


def _labels(where, y: np.ndarray, n_classes) -> np.ndarray:
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise fail(where, f"labels must be integers, got {float(y[i])!r} at example {i}")
    elif not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise fail(where, f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise fail(where, f"label {int(y.min())} at example {int(np.argmin(y))} is negative")
    if n_classes is not None and y.max() >= n_classes:
        raise fail(where, f"label {int(y.max())} at example {int(np.argmax(y))} is out of range "
                          f"[0, {n_classes}) for a model with {n_classes} outputs")
    return y
