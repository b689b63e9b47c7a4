"""Training-time augmentation in numpy, so both frameworks see exactly the same images.

Pure functions of (images [n, 784] or [n, h, w, c], rng); the name in TrainConfig.augment picks one.
"""
from __future__ import annotations

import numpy as np

SIDE = 28  # Fashion-MNIST images are 28x28x1


def _flip_shift(x: np.ndarray, rng: np.random.Generator, shift: int = 2) -> np.ndarray:
    """Random horizontal flip and a random shift of up to `shift` pixels (zero fill) per image."""
    n = len(x)
    img = x.reshape(n, SIDE, SIDE)
    flip = rng.random(n) < 0.5
    img = np.where(flip[:, None, None], img[:, :, ::-1], img)
    padded = np.pad(img, ((0, 0), (shift, shift), (shift, shift)))
    dy, dx = rng.integers(0, 2 * shift + 1, n), rng.integers(0, 2 * shift + 1, n)
    rows = dy[:, None] + np.arange(SIDE)[None, :]
    cols = dx[:, None] + np.arange(SIDE)[None, :]
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return np.ascontiguousarray(out.reshape(x.shape), dtype=np.float32)


AUGMENTATIONS = {
    "none": lambda x, rng: x,
    "flip-shift": _flip_shift,
}


def augment(x: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    return AUGMENTATIONS[name](x, rng)
