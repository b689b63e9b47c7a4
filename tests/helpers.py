"""Small shared test fixtures: tiny models and a slice of real data."""
from __future__ import annotations

import numpy as np

from pipeline.data import DEFAULT_DATA_DIR, FILES, load_idx_pair

SMALL_WIDTHS = [784, 64, 48, 32, 10]


def real_test_slice(n: int = 500) -> np.ndarray:
    """The first n real Fashion-MNIST test images, or random pixels if the data isn't installed."""
    images, labels = FILES["test"]
    if (DEFAULT_DATA_DIR / images).is_file():
        x, _ = load_idx_pair(DEFAULT_DATA_DIR / images, DEFAULT_DATA_DIR / labels)
        return x[:n]
    return np.random.default_rng(0).random((n, 784), dtype=np.float32)
