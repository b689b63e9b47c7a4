"""Small shared test fixtures: tiny models and a slice of real data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data import DEFAULT_DATA_DIR, FILES, load_idx_pair

REPO = Path(__file__).resolve().parents[1]
SMALL_WIDTHS = [784, 64, 48, 32, 10]  # the MLP's shape in miniature: three hidden ReLU layers, 10 classes


def real_test_slice(n: int = 500) -> np.ndarray:
    """The first n real Fashion-MNIST test images, or random pixels if the data isn't installed."""
    images, labels = FILES["test"]
    if (DEFAULT_DATA_DIR / images).is_file():
        x, _ = load_idx_pair(DEFAULT_DATA_DIR / images, DEFAULT_DATA_DIR / labels)
        return x[:n]
    return np.random.default_rng(0).random((n, 784), dtype=np.float32)


def small_dataset(n_train: int = 2000, n_val: int = 500, n_test: int = 1000):
    """A slice of real Fashion-MNIST (first n of each split) for quick training tests;
    a learnable synthetic stand-in (noisy class prototypes) if the data isn't installed."""
    from dataclasses import replace

    from pipeline.data import Dataset, load_fashion_mnist
    if (DEFAULT_DATA_DIR / FILES["test"][0]).is_file():
        d = load_fashion_mnist()
        return replace(d, x_train=d.x_train[:n_train], y_train=d.y_train[:n_train], x_val=d.x_val[:n_val],
                       y_val=d.y_val[:n_val], x_test=d.x_test[:n_test], y_test=d.y_test[:n_test])
    rng = np.random.default_rng(0)
    prototypes = rng.random((10, 784), dtype=np.float32)

    def split(n):
        y = rng.integers(0, 10, n)
        x = np.clip(prototypes[y] + rng.normal(0, 0.3, (n, 784)), 0, 1).astype(np.float32)
        return x, y.astype(np.int64)
    return Dataset(*split(n_train), *split(n_val), *split(n_test), sha256="synthetic")


def train_torch(net, x, y, epochs: int):
    """Plain PyTorch training of a small net (seeded Adam, batch 64) for import tests."""
    import torch
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: extra threads only spin on a shared 2-core box
    try:
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(epochs):
            for idx in torch.randperm(len(xt)).split(64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()
