"""What a bundle records about its model as run here: accuracy, verification against the numpy
reference, and the self-test images a device must classify the same way.

Everything runs through bundle_template/predict.py's own loading code (`pred.Model`), so the
build measures exactly what the device will run, in the file's own input layout.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np

from pipeline.errors import PrunedgeError

SELFTEST_N = 16
SELFTEST_POOL = 256  # candidates the clearest self-test images are picked from
VERIFY_N = 512
FASHION_IMAGE = [28, 28]  # a model that takes these one-channel images can be fed Fashion-MNIST


def sample_images(spec: dict, n: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(uint8 [n, *sample_shape], labels or None, what they are): real Fashion-MNIST test images when
    the model takes 28x28 one-channel images and the dataset is here, else seeded noise."""
    shape = spec["sample_shape"]
    if FASHION_IMAGE in spec["accepts"]:
        from pipeline.data import FILES, IMAGE_MAGIC, LABEL_MAGIC, data_dir, read_idx
        try:
            x = read_idx(data_dir() / FILES["test"][0], IMAGE_MAGIC)[:n]
            y = read_idx(data_dir() / FILES["test"][1], LABEL_MAGIC)[:n].astype(np.int64)
            return np.ascontiguousarray(x).reshape(len(x), *shape), y, "Fashion-MNIST test images"
        except PrunedgeError:
            pass
    noise = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)
    return noise, None, "seeded uniform noise images"


def _pixels(x_u8: np.ndarray) -> np.ndarray:
    return x_u8.astype(np.float32) / np.float32(255)


def _accuracy(model, pred, entry: dict, spec: dict, fashion: bool) -> dict:
    """From the export manifest when it has one; else measured here, on Fashion-MNIST only for a
    model trained on it (anything else has no labels this build knows)."""
    if entry.get("accuracy") is not None:
        return {"accuracy": entry["accuracy"], "accuracy_source": "artifacts/export/manifest.json"}
    x_u8, y, _ = sample_images(spec, 10000)
    if not fashion or y is None:
        return {"accuracy": None}
    classes = pred.run_batched(model, _pixels(x_u8)).argmax(axis=1)
    return {"accuracy": round(float((classes == y).mean()), 6),
            "accuracy_source": f"bundle build: this file in its runtime, {len(y)} Fashion-MNIST test images"}


def host_measurements(model, pred, reference, entry: dict, spec: dict, fashion: bool) -> dict:
    """Accuracy and verification from the export manifest, or measured here when it has none."""
    out = _accuracy(model, pred, entry, spec, fashion)
    if entry.get("verify"):
        out["verify"] = {**entry["verify"], "source": "artifacts/export/manifest.json"}
    elif reference is not None:
        x_u8, _, what = sample_images(spec, VERIFY_N)
        x = _pixels(x_u8)
        got, want = pred.run_batched(model, x), reference.forward(x)
        out["verify"] = {"status": "measured", "max_abs_diff": float(np.abs(got - want).max()),
                         "top1_agreement": float((got.argmax(1) == want.argmax(1)).mean()), "n": len(x),
                         "images": what, "reference": "model.npz numpy forward", "source": "bundle build"}
    return out


def selftest_data(model, pred, variant: str, spec: dict) -> tuple[np.ndarray, dict]:
    """The images with the clearest top-1 margin (so rounding on another CPU cannot flip them), and
    the classes/logits this host gives them."""
    x_u8, _, what = sample_images(spec, SELFTEST_POOL)
    logits = pred.run_batched(model, _pixels(x_u8))
    scale = max(1.0, float(np.abs(logits).max()))
    tol = (1e-3 if variant in ("fp32", "sparse") else 5e-2) * scale
    top2 = np.sort(logits, axis=1)[:, -2:] if logits.shape[1] > 1 else np.concatenate([logits, logits], 1)
    clear = np.sort(np.argsort(top2[:, 0] - top2[:, 1], kind="stable")[:SELFTEST_N])
    return x_u8[clear], {"file": "selftest.npy", "images": what, "classes": logits[clear].argmax(1).tolist(),
                         "logits": np.round(logits[clear], 6).tolist(), "tolerance": tol}


def machine(bench_root: Path) -> dict:
    """The bench run's machine record, else a short description of this one."""
    path = Path(bench_root) / "results.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["machine"]
    except (OSError, ValueError, KeyError, TypeError):
        return {"machine": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
                "platform": platform.platform()}
