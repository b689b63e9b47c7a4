"""The framework-neutral model description every stage reads and writes.

A model is an ordered tuple of fully connected layers `y = act(x @ W + b)` with
`W` of shape [in, out] (dense float32 ndarray or `scipy.sparse.csr_array`).
Its numpy forward pass is the reference every exported file is checked against.
Saved as one `.npz` (arrays + a UTF-8 JSON metadata blob), loaded without pickle.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

from pipeline.errors import PrunedgeError, fail
from pipeline.fileio import atomic_path

FORMAT_VERSION = 1


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(x.dtype, copy=False)


def _leaky_relu(x: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    return np.where(x >= 0, x, x * np.float32(alpha)).astype(x.dtype, copy=False)


# Activation name -> elementwise numpy function. Every exporter/importer maps these names.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0),
    "identity": lambda x: x,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "leaky_relu": _leaky_relu,
}
LEAKY_RELU_ALPHA = 0.01


@dataclass(frozen=True)
class Layer:
    weight: np.ndarray | sp.csr_array  # [in, out]
    bias: np.ndarray  # [out]
    activation: str = "relu"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.weight)

    @property
    def nnz(self) -> int:
        return int(self.weight.nnz) if self.is_sparse else int(np.count_nonzero(self.weight))

    def dense_weight(self) -> np.ndarray:
        return self.weight.toarray() if self.is_sparse else self.weight

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.weight
        z = np.asarray(z, dtype=np.float32) + self.bias
        return ACTIVATIONS[self.activation](z)


@dataclass(frozen=True)
class Model:
    layers: tuple[Layer, ...]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))

    @property
    def widths(self) -> list[int]:
        """[input, hidden..., output], e.g. [784, 1000, 1000, 500, 200, 10]."""
        return [self.layers[0].shape[0]] + [layer.shape[1] for layer in self.layers]

    @property
    def input_dim(self) -> int:
        return self.widths[0]

    @property
    def output_dim(self) -> int:
        return self.widths[-1]

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(layer.shape)) + layer.bias.size for layer in self.layers)

    @property
    def n_nonzero(self) -> int:
        return sum(layer.nnz + int(np.count_nonzero(layer.bias)) for layer in self.layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (or final activations) for a float32 batch [n, input_dim]."""
        x = check_input(x, self.input_dim)
        for layer in self.layers:
            x = layer(x)
        return x

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x).argmax(axis=1)

    def with_layers(self, layers, **meta) -> "Model":
        return replace(self, layers=tuple(layers), meta={**self.meta, **meta})

    def densified(self) -> "Model":
        return self.with_layers([replace(l, weight=l.dense_weight()) for l in self.layers])


def check_input(x, input_dim: int, name: str = "input") -> np.ndarray:
    """A 2-D float32 batch with `input_dim` features, or a PrunedgeError."""
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists and the like
        raise fail(name, f"not a numeric array ({' '.join(str(e).split())[:200]})") from None
    if x.ndim != 2 or x.shape[1] != input_dim:
        raise fail(name, f"expected shape [batch, {input_dim}], got {list(x.shape)}")
    if x.shape[0] == 0:
        raise fail(name, "empty batch")
    if not np.issubdtype(x.dtype, np.floating):
        raise fail(name, f"expected float32 values, got dtype {x.dtype}")
    return x.astype(np.float32, copy=False)


def validate(model: Model, source: str = "model") -> Model:
    """Check shapes chain, dtypes are float32, values finite and activations known."""
    if not model.layers:
        raise fail(source, "model has no layers")
    prev_out = None
    for i, layer in enumerate(model.layers):
        w, b = layer.weight, layer.bias
        where = f"layer {i}"
        if not (isinstance(w, np.ndarray) or isinstance(w, sp.csr_array)):
            raise fail(source, f"{where} weight must be an ndarray or csr_array, got {type(w).__name__}")
        if w.ndim != 2:
            raise fail(source, f"{where} weight must be 2-D, got shape {list(w.shape)}")
        if not isinstance(b, np.ndarray) or b.ndim != 1 or b.shape[0] != w.shape[1]:
            raise fail(source, f"{where} bias shape {list(np.shape(b))} does not match weight {list(w.shape)}")
        if w.dtype != np.float32 or b.dtype != np.float32:
            raise fail(source, f"{where} must be float32, got {w.dtype}/{b.dtype}")
        values = w.data if sp.issparse(w) else w
        if not (np.isfinite(values).all() and np.isfinite(b).all()):
            raise fail(source, f"{where} has NaN or infinite values")
        if prev_out is not None and w.shape[0] != prev_out:
            raise fail(source, f"{where} takes {w.shape[0]} inputs but layer {i - 1} gives {prev_out}")
        if layer.activation not in ACTIVATIONS:
            raise fail(source, f"{where} has unknown activation {layer.activation!r}")
        prev_out = w.shape[1]
    return model


def dense_model(weights, biases, activations=None, **meta) -> Model:
    """Build a validated model from lists of [in, out] weights and biases."""
    n = len(weights)
    activations = activations or ["relu"] * (n - 1) + ["identity"]
    layers = [
        Layer(np.ascontiguousarray(w, dtype=np.float32), np.ascontiguousarray(b, dtype=np.float32), a)
        for w, b, a in zip(weights, biases, activations)
    ]
    return validate(Model(tuple(layers), meta))


def random_model(widths, seed: int = 0, activations=None, **meta) -> Model:
    """He-initialised model, for tests and benchmarks of untrained shapes."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, np.sqrt(2.0 / a), (a, b)) for a, b in zip(widths[:-1], widths[1:])]
    biases = [rng.normal(0, 0.05, b) for b in widths[1:]]
    return dense_model(weights, biases, activations, seed=seed, framework="random", **meta)


# ---------------------------------------------------------------- save / load

def save(model: Model, path: str | Path) -> Path:
    """Write the model as one .npz atomically. Metadata goes in as UTF-8 JSON bytes."""
    validate(model, str(path))
    arrays: dict[str, np.ndarray] = {}
    layer_info = []
    for i, layer in enumerate(model.layers):
        arrays[f"layer{i}.bias"] = layer.bias
        if layer.is_sparse:
            w = layer.weight
            arrays[f"layer{i}.csr_data"] = w.data.astype(np.float32)
            arrays[f"layer{i}.csr_indices"] = w.indices.astype(np.int32)
            arrays[f"layer{i}.csr_indptr"] = w.indptr.astype(np.int64)
        else:
            arrays[f"layer{i}.weight"] = layer.weight
        layer_info.append({"shape": list(layer.shape), "activation": layer.activation,
                           "storage": "csr" if layer.is_sparse else "dense"})
    header = {"format": "prunedge-model", "version": FORMAT_VERSION,
              "layers": layer_info, "meta": model.meta}
    arrays["meta.json"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(_deterministic_zip(buf.getvalue()))
    return Path(path)


def _deterministic_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed timestamps so equal models give byte-identical files."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


def load(path: str | Path) -> Model:
    """Load and validate a model .npz; never unpickles. Raises PrunedgeError on any defect."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "model file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = {name: npz[name] for name in npz.files}
    except ValueError as e:
        raise fail(path, f"not a valid model file ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise fail(path, f"corrupt or truncated model file ({type(e).__name__}: {e})") from None
    if "meta.json" not in files:
        raise fail(path, "not a prunedge model (no meta.json entry)")
    try:
        header = json.loads(files["meta.json"].tobytes().decode())
        infos = header["layers"]
        meta = header.get("meta", {})
    except (ValueError, KeyError, TypeError) as e:
        raise fail(path, f"unreadable metadata ({e})") from None
    if header.get("format") != "prunedge-model":
        raise fail(path, "not a prunedge model file")
    layers = []
    try:
        for i, info in enumerate(infos):
            shape = tuple(int(s) for s in info["shape"])
            if info["storage"] == "csr":
                w = sp.csr_array((files[f"layer{i}.csr_data"], files[f"layer{i}.csr_indices"],
                                  files[f"layer{i}.csr_indptr"]), shape=shape)
                w.check_format(full_check=True)
            else:
                w = files[f"layer{i}.weight"]
                if w.shape != shape:
                    raise ValueError(f"layer {i} weight shape {list(w.shape)} != recorded {list(shape)}")
            layers.append(Layer(w, files[f"layer{i}.bias"], info["activation"]))
    except (KeyError, ValueError, TypeError) as e:
        raise fail(path, f"inconsistent model file ({e})") from None
    return validate(Model(tuple(layers), meta), str(path))
