"""Fashion-MNIST from IDX `.gz` files, validated, as float32 pixels in [0, 1].

The 60k training images are split with a fixed seed into 55k train / 5k validation;
the 10k test set is only used for final accuracy.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import fail

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
N_CLASSES = 10
VAL_SIZE = 5000
SPLIT_SEED = 1234  # fixed so every framework and run sees the same validation images


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """--data-dir beats $PRUNEDGE_DATA beats the Debian package's location."""
    return Path(override or os.environ.get("PRUNEDGE_DATA") or DEFAULT_DATA_DIR)


MAX_GZIP_RATIO = 1100  # deflate expands at most ~1032x: a header declaring more is not backed by the file


def _regular_file(path: Path, missing: str = "file not found") -> int:
    """The size of a regular file; devices (/dev/zero), FIFOs and directories are refused."""
    import stat
    try:
        st = path.stat()
    except FileNotFoundError:
        raise fail(path, missing) from None
    except OSError as e:
        raise fail(path, f"cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise fail(path, "not a regular file (a device, FIFO or directory has no fixed size to check)")
    return st.st_size


def _read_capped(f, path: Path, ndim: int, limit: int) -> bytes:
    """Header first, then exactly what its dimensions declare (and one byte more, to notice extra
    data); never more than `limit` bytes, whatever the stream would expand to."""
    import math
    header = f.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim:
        raise fail(path, f"truncated IDX header ({len(header)} bytes)")
    dims = struct.unpack(f">{ndim}I", header[4:])
    size = math.prod(dims)
    if size > limit:
        raise fail(path, f"header declares dimensions {list(dims)} ({size} bytes), more than the file can hold")
    return header + f.read(size + 1)


def _read(path: Path, ndim: int) -> bytes:
    hint = ("file not found (install the Debian package dataset-fashion-mnist or point --data-dir / "
            "PRUNEDGE_DATA at the IDX files)")
    size = _regular_file(path, hint)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return _read_capped(f, path, ndim, MAX_GZIP_RATIO * size + 1024)
        with open(path, "rb") as f:
            return _read_capped(f, path, ndim, size)
    except (OSError, EOFError, zlib.error) as e:
        raise fail(path, f"corrupt or truncated {'gzip' if path.suffix == '.gz' else 'IDX'} file ({e})") from None


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes: big-endian magic, dims, then the data. Memory is bounded
    by what the file holds: the declared size is checked before anything is allocated."""
    path = Path(path)
    ndim = {IMAGE_MAGIC: 3, LABEL_MAGIC: 1}[magic]
    raw = _read(path, ndim)
    header = 4 + 4 * ndim
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        raise fail(path, f"wrong magic number {found} (expected {magic})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=object))
    if len(raw) != expected:
        raise fail(path, f"size {len(raw)} bytes does not match dimensions {list(dims)} "
                         f"({expected} bytes expected)")
    if 0 in dims:
        raise fail(path, f"dimensions {list(dims)} hold no data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_pair(images_path: Path, labels_path: Path, n_classes: int = N_CLASSES):
    """Images as float32 [n, rows*cols] in [0, 1] and int64 labels, checked against each other."""
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if len(images) != len(labels):
        raise fail(labels_path, f"{len(labels)} labels but {images_path.name} has {len(images)} images")
    if labels.size and labels.max() >= n_classes:
        raise fail(labels_path, f"label {int(labels.max())} out of range [0, {n_classes})")
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test arrays (x float32 [n, features], y int64 [n]) of any labeled set."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    sha256: str = ""  # of the source files when known, recorded in model provenance
    n_classes: int = N_CLASSES


def load_fashion_mnist(directory: str | os.PathLike | None = None, val_size: int = VAL_SIZE,
                       seed: int = SPLIT_SEED) -> Dataset:
    d = data_dir(directory)
    if not d.is_dir():
        raise fail(d, "data directory not found (install the Debian package dataset-fashion-mnist "
                      "or point --data-dir / PRUNEDGE_DATA at the IDX files)")
    x_all, y_all = load_idx_pair(d / FILES["train"][0], d / FILES["train"][1])
    x_test, y_test = load_idx_pair(d / FILES["test"][0], d / FILES["test"][1])
    if not 0 < val_size < len(x_all):
        raise fail(d, f"{len(x_all)} training images are too few for a {val_size}-image validation split")
    order = np.random.default_rng(seed).permutation(len(x_all))
    val, train = order[:val_size], order[val_size:]
    return Dataset(x_all[train], y_all[train], x_all[val], y_all[val], x_test, y_test,
                   sha256=files_sha256(d))


def files_sha256(directory: Path) -> str:
    h = hashlib.sha256()
    for images, labels in FILES.values():
        for name in (images, labels):
            path = Path(directory) / name
            if not path.is_file():  # the stamp key is computed before loading: fail as the loader would
                raise fail(path, "file not found (install the Debian package dataset-fashion-mnist "
                                 "or point --data-dir / PRUNEDGE_DATA at the IDX files)")
            h.update(path.read_bytes())
    return h.hexdigest()


def write_idx_gz(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write uint8 images [n, r, c] or labels [n] as IDX .gz (tests and bundles use it)."""
    array = np.asarray(array, dtype=np.uint8)
    magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    from pipeline.fileio import write_bytes
    return write_bytes(path, gzip.compress(header + array.tobytes(), mtime=0))
