"""Fuzz targets: every loader of untrusted input, a valid seed file for it, and how to mutate it.

A target's `load(path)` must either return (anything) or raise PrunedgeError (or the bundle's
BundleError) with a one-line message; any other exception, a hang or a memory blow-up is a defect.
Mutations start from a valid file: truncation, bit flips, overwritten header bytes, inserted or
deleted bytes, and for JSON files edited structure (deleted keys, swapped types, path tricks).
Run by tests/fuzz_runner.py in a child process with an address-space limit (RLIMIT_AS).
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from helpers import REPO

PATH_TRICKS = ["../outside", "/etc/passwd", "a/../../b", "", ".", "x" * 300, "sub/dir/file", "~/x", "\x00", "nul\x00l"]
JSON_VALUES = [None, True, 0, -1, 2**63, 1e308, float("nan"), "", "x", [], {}, [1, 2], {"a": 1}] + PATH_TRICKS


@dataclass(frozen=True)
class Target:
    name: str
    seed: Callable[[Path], Path]  # writes a valid file (or directory) into the given dir, returns the path to load
    load: Callable[[Path], object]
    json: bool = False  # mutate as JSON structure too
    heavy: bool = False  # imports TensorFlow/torch: a larger address-space limit
    errors: Callable[[], tuple] = tuple  # exception types besides PrunedgeError that are the one-line error


# ---------------------------------------------------------------- seeds

def _idx_seed(d: Path) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    raw = struct.pack(">I", 2051) + struct.pack(">3I", *images.shape) + images.tobytes()
    path = d / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw, mtime=0))
    return path


def _npz_data_seed(d: Path) -> Path:
    np.savez(d / "data.npz", x=np.random.default_rng(0).random((6, 16), dtype=np.float32), y=np.arange(6) % 3)
    return d / "data.npz"


def _model_seed(d: Path) -> Path:
    from pipeline.model import random_model
    from pipeline.model_io import save
    return save(random_model([16, 8, 3], seed=0), d / "model.npz")


def _cnn_seed(d: Path) -> Path:
    from pipeline.fold import fold_batchnorm
    from pipeline.model_io import save
    from pipeline.nets import Block, CnnSpec, cnn
    return save(fold_batchnorm(cnn(0, CnnSpec(stem=4, blocks=(Block(expand=8, out=4),), head=8))), d / "model.npz")


def _manifest_seed(d: Path) -> Path:
    entry = {"path": "m/weight/k00/model.npz", "sha256": "0" * 64, "bytes": 10, "name": "npz", "format": "npz",
             "variant": "fp32", "framework": "torch", "method": "weight", "sparsity": 0.0, "runtime": "numpy",
             "verify": {"status": "passed"}, "accuracy": 0.9}
    (d / "manifest.json").write_text(json.dumps({"config": {}, "versions": {}, "files": [entry]}))
    return d


def _onnx_seed(d: Path) -> Path:
    from export import onnx_format
    from export.formats import ExportOptions
    from pipeline.model import random_model
    return onnx_format.export_dense(random_model([16, 8, 3], seed=0), d / "net.onnx", ExportOptions())


def _tflite_seed(d: Path) -> Path:
    from export import tflite_format
    from export.formats import ExportOptions
    from pipeline.model import random_model
    return tflite_format.export(random_model([16, 8, 3], seed=0), d / "net.tflite", ExportOptions(), recipe="fp32")


def _keras_seed(d: Path) -> Path:
    from pipeline.keras_net import to_keras
    from pipeline.model import random_model
    path = d / "net.keras"
    to_keras(random_model([16, 8, 3], seed=0)).save(path)
    return path


def _torchscript_seed(d: Path) -> Path:
    import torch
    from pipeline.model import random_model
    from pipeline.torch_net import to_torch
    path = d / "net.pt"
    torch.jit.save(torch.jit.trace(to_torch(random_model([16, 8, 3], seed=0)), torch.zeros(1, 16)), str(path))
    return path


def _state_dict_seed(d: Path) -> Path:
    import torch
    from pipeline.model import random_model
    from pipeline.torch_net import to_torch
    path = d / "state.pt"
    torch.save(to_torch(random_model([16, 8, 3], seed=0)).state_dict(), path)
    return path


def _results_seed(d: Path) -> Path:
    row = {"source": "host", "framework": "torch", "method": "weight", "sparsity": 0.0, "artifact": "a/model.onnx",
           "format": "onnx", "variant": "fp32", "runtime": "onnxruntime", "threads": 1, "batch": 1, "status": "ok",
           "p50_us": 100.0, "accuracy": 0.9}
    (d / "results.json").write_text(json.dumps({"machine": {}, "config": {}, "rows": [row]}))
    return d / "results.json"


def _bundle_seed(d: Path) -> Path:
    """An ONNX MLP bundle; the fuzzer mutates its manifest.json."""
    from bundle.build import make_bundle
    from export import formats as F
    from pipeline.model import random_model
    from pipeline.model_io import save
    kdir = d / "export" / "torch" / "dense" / "k00"
    kdir.mkdir(parents=True)
    model = random_model([784, 16, 10], seed=0, method="dense", sparsity=0.0, physical="dense")
    model = model.with_layers(model.layers, framework="torch")
    save(model, kdir / "model.npz")
    F.FORMATS["onnx"].export(model, kdir / F.FORMATS["onnx"].suffix, F.ExportOptions())
    return make_bundle(kdir, fmt="onnx", out_root=d / "bundles", export_root=d / "export", bench_root=d / "nb")


# ---------------------------------------------------------------- loaders

@functools.lru_cache(maxsize=1)
def _predict():
    spec = importlib.util.spec_from_file_location("fuzz_predict", REPO / "bundle_template" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _load_idx(path: Path):
    from pipeline.data import IMAGE_MAGIC, read_idx
    return read_idx(path, IMAGE_MAGIC)


def _load_labeled(path: Path):
    from pipeline.labeled import load_labeled
    return load_labeled(path)


def _load_model(path: Path):
    from pipeline.model_io import load
    model = load(path)
    model.forward(np.zeros((1, *model.input_shape), np.float32))  # a loaded model must also run
    return model


def _load_manifest(path: Path):
    from export.manifest import check_manifest, load_manifest
    load_manifest(path)
    return check_manifest(path)


def _import(path: Path):
    from pipeline.importers import import_model
    return import_model(path, arch="16-8-3:relu" if path.name == "state.pt" else None)


def _load_bundle(path: Path):
    """What predict.py and bench_device.py do first: the manifest's schema, then every file's hash."""
    return _predict().Bundle(path)


def _bundle_errors() -> tuple:
    return (_predict().BundleError,)


def _load_results(path: Path):
    from report.inputs import read_results
    return read_results(path)


TARGETS = {t.name: t for t in (
    Target(name="idx", seed=_idx_seed, load=_load_idx),
    Target(name="npz-data", seed=_npz_data_seed, load=_load_labeled),
    Target(name="model-npz", seed=_model_seed, load=_load_model),
    Target(name="cnn-npz", seed=_cnn_seed, load=_load_model),
    Target(name="export-manifest", seed=_manifest_seed, load=_load_manifest, json=True),
    Target(name="bench-results", seed=_results_seed, load=_load_results, json=True),
    Target(name="bundle-manifest", seed=_bundle_seed, load=_load_bundle, json=True, heavy=True, errors=_bundle_errors),
    Target(name="onnx", seed=_onnx_seed, load=_import, heavy=True),
    Target(name="tflite", seed=_tflite_seed, load=_import, heavy=True),
    Target(name="keras", seed=_keras_seed, load=_import, heavy=True),
    Target(name="torchscript", seed=_torchscript_seed, load=_import, heavy=True),
    Target(name="state-dict", seed=_state_dict_seed, load=_import, heavy=True),
)}
