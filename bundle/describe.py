"""What is known about the file a bundle ships: its export record, its model description, the
input it takes and the names of its classes.

The input spec comes from the model description beside the file (model.npz `input_shape`,
channels-last) checked against the file's own declared input; without a description, from the
declared input alone. Class names are never assumed: Fashion-MNIST names only for the built-in
models (trained on it), else the names the model's labeled data carries, else "0".."n-1".
"""
from __future__ import annotations

import itertools
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from pipeline.errors import fail
from pipeline.fileio import sha256_file

CLASS_NAMES_KEY = "class_names"  # array of names in a labeled .npz (beside x and y)
CLASS_NAMES_FILE = "class_names.txt"  # one name per line, in a labeled IDX directory


# ---------------------------------------------------------------- the export record

def read_export_manifest(export_root: Path) -> dict:
    """artifacts/export/manifest.json, or {} when there is none."""
    path = Path(export_root) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        return manifest
    except (OSError, ValueError) as e:
        raise fail(path, f"unreadable export manifest ({e})") from None


def export_entry(model_path: Path, export_root: Path) -> tuple[str, dict, dict]:
    """(path relative to the export root, its manifest entry or {}, the manifest's config or {})."""
    try:
        rel = model_path.resolve().relative_to(Path(export_root).resolve()).as_posix()
    except ValueError:
        return model_path.name, {}, {}
    manifest = read_export_manifest(export_root)
    files = manifest.get("files") if isinstance(manifest.get("files"), list) else []
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    return rel, next((e for e in files if isinstance(e, dict) and e.get("path") == rel), {}), config


def check_entry(model_path: Path, entry: dict) -> None:
    """Refuse a file the export stage marked as failed, or one changed since it was recorded."""
    if not entry:
        return
    verify = entry.get("verify") or {}
    if verify.get("status") == "failed":
        raise fail(model_path, f"failed verification at export ({verify.get('reason') or 'no reason recorded'}); "
                               "not bundling it")
    if entry.get("sha256") and entry["sha256"] != sha256_file(model_path):
        raise fail(model_path, "sha256 differs from artifacts/export/manifest.json (changed since export); "
                               "re-run the export")


def provenance(model_path: Path) -> tuple[dict, object]:
    """model.npz meta beside the file (and the loaded description), or ({}, None)."""
    from pipeline.model_io import load
    npz = model_path.parent / "model.npz"
    if not npz.is_file():
        return {}, None
    reference = load(npz)
    return {**reference.meta, "model_npz_sha256": sha256_file(npz)}, reference


# ---------------------------------------------------------------- the input

def _layout(declared: list, description, runner, layouts, where) -> tuple[str, list]:
    """(layout, sample_shape): the runner's layout in which the description (or, without one, some
    channels-last reading of the declared dims) gives exactly the file's declared per-sample shape."""
    candidates = [list(description)] if description else [list(p) for p in itertools.permutations(declared)]
    for name in runner.layouts:
        for shape in candidates:
            if len(shape) == layouts[name].ndim and layouts[name].declared(shape) == declared:
                return name, shape
    said = f"model.npz describes input {list(description)}" if description else "no layout of its runner fits"
    raise fail(where, f"the file takes [batch, {', '.join(map(str, declared))}] but {said}")


def accepted_shapes(sample_shape: list) -> list[list[int]]:
    """Per-sample shapes predict.py takes: the description's, flat, [h, w] for one channel; a square
    feature count is also read as a one-channel image flattened row-major ([28, 28] for 784)."""
    size = math.prod(sample_shape)
    shapes = [list(sample_shape), [size]]
    if len(sample_shape) == 3 and sample_shape[2] == 1:
        shapes.append(list(sample_shape[:2]))
    side = math.isqrt(size)
    if len(sample_shape) == 1 and side * side == size and side > 1:
        shapes += [[side, side, 1], [side, side]]
    return [s for i, s in enumerate(shapes) if s not in shapes[:i]]


def input_spec(io_input: dict, reference, runner, layouts, where: Path) -> dict:
    """The manifest's `input`: the file's declared tensor plus the layout and shapes predict.py uses."""
    declared = io_input["shape"][1:]
    if not declared or not all(isinstance(d, int) and d > 0 for d in declared):
        raise fail(where, f"input shape {io_input['shape']} must be fixed apart from the batch")
    description = reference.input_shape if reference is not None else None
    layout, sample_shape = _layout(declared, description, runner, layouts, where)
    accepts = accepted_shapes(sample_shape)
    return {**io_input, "layout": layout, "sample_shape": sample_shape, "accepts": accepts,
            "source": "model.npz input_shape" if description else "the file's declared input",
            "scaling": "float32 pixels = uint8 / 255, in [0, 1]; channels-last (h, w, c) images, flattened "
                       "row-major for [n, features]",
            "accepted": " or ".join(f"[n, {', '.join(map(str, s))}]" for s in accepts)
                        + " .npy, uint8 0-255 or float 0-1; IDX images (.gz or raw)"}


# ---------------------------------------------------------------- class names

def labeled_class_names(path: Path) -> list[str] | None:
    """The class names a labeled set carries: `class_names` in an .npz, or class_names.txt in an IDX
    directory; None when it carries none."""
    path = Path(path)
    try:
        if path.is_dir():
            names_file = path / CLASS_NAMES_FILE
            return names_file.read_text(encoding="utf-8").splitlines() if names_file.is_file() else None
        if not zipfile.is_zipfile(path):
            return None
        with np.load(path, allow_pickle=False) as npz:
            if CLASS_NAMES_KEY not in npz.files:
                return None
            names = npz[CLASS_NAMES_KEY]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise fail(path, f"unreadable class names ({' '.join(str(e).split())[:200]})") from None
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise fail(path, f"{CLASS_NAMES_KEY} must be a 1-D array of strings, got {names.dtype} {list(names.shape)}")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist()]


def trained_on_fashion_mnist(meta: dict) -> bool:
    """The built-in networks (framework torch / tf) are trained on Fashion-MNIST; nothing else is assumed to be."""
    from pipeline.cli import FRAMEWORKS
    return meta.get("framework") in FRAMEWORKS


def class_names(meta: dict, n_classes: int, data: Path | None, valid) -> tuple[list[str], str]:
    """(names, where they came from). `valid(name)` is predict.py's rule for one name."""
    from pipeline.data import CLASS_NAMES
    if trained_on_fashion_mnist(meta):
        if n_classes != len(CLASS_NAMES):
            raise fail("model.npz", f"a built-in {meta['framework']} model with {n_classes} outputs, not "
                                    f"Fashion-MNIST's {len(CLASS_NAMES)}")
        return list(CLASS_NAMES), "Fashion-MNIST (built-in model trained on it)"
    names = labeled_class_names(data) if data is not None else None
    if names is None:
        return [str(i) for i in range(n_classes)], "class indices (the model's data carries no names)"
    if len(names) != n_classes or not all(valid(n) for n in names):
        raise fail(data, f"{len(names)} class names for a model with {n_classes} classes (or a name that is "
                         "empty, longer than 200 characters or not printable)")
    return names, f"{CLASS_NAMES_KEY} of {Path(data).name}"
