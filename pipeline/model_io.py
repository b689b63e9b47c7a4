"""Save and load the model description: one `.npz` of arrays plus a JSON header, never pickled.

Fully connected chains are written exactly as format version 1 wrote them (so their files keep
their bytes); anything else (convolutions, residual inputs, an image input) is version 2, which
adds each layer's kind, inputs and attributes and the model's input shape.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from pipeline.errors import fail
from pipeline.fileio import atomic_path
from pipeline.layers import KINDS, WEIGHTED, Dense, array_fields
from pipeline.model import Model, validate
from pipeline.npzio import read_npz

VERSIONS = (1, 2)


def _is_v1(model: Model) -> bool:
    return model.is_mlp and model.input_shape == (model.layers[0].shape[0],)


def _layer_arrays(i: int, layer) -> tuple[dict, dict]:
    """(arrays, header entry) of one layer."""
    arrays, info = {}, {}
    for name in array_fields(layer):
        value = getattr(layer, name)
        if name == "weight" and sp.issparse(value):
            arrays[f"layer{i}.csr_data"] = value.data.astype(np.float32)
            arrays[f"layer{i}.csr_indices"] = value.indices.astype(np.int32)
            arrays[f"layer{i}.csr_indptr"] = value.indptr.astype(np.int64)
        else:
            arrays[f"layer{i}.{name}"] = value
    if isinstance(layer, WEIGHTED):
        info = {"shape": list(layer.weight.shape), "storage": "csr" if sp.issparse(layer.weight) else "dense"}
    return arrays, info


def save(model: Model, path: str | Path) -> Path:
    """Write the model as one .npz atomically; equal models give byte-identical files."""
    validate(model, str(path))
    v1 = _is_v1(model)
    arrays, layer_info = {}, []
    for i, layer in enumerate(model.layers):
        more, info = _layer_arrays(i, layer)
        arrays.update(more)
        if v1:
            info["activation"] = layer.activation
        else:
            info = {"kind": layer.kind, "inputs": list(layer.inputs), **info,
                    **{a: _plain(getattr(layer, a)) for a in layer.ATTRS}}
        layer_info.append(info)
    header = {"format": "prunedge-model", "version": 1 if v1 else 2, "layers": layer_info, "meta": model.meta}
    if not v1:
        header["input_shape"] = list(model.input_shape)
    arrays["meta.json"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(_deterministic_zip(buf.getvalue()))
    return Path(path)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


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
    files = read_npz(path)
    if "meta.json" not in files:
        raise fail(path, "not a prunedge model (no meta.json entry)")
    try:
        header = json.loads(files["meta.json"].tobytes().decode())
        infos, meta = header["layers"], header.get("meta", {})
        ok = header.get("format") == "prunedge-model" and isinstance(infos, list) and isinstance(meta, dict)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise fail(path, f"unreadable metadata ({' '.join(str(e).split())[:200]})") from None
    if not ok:
        raise fail(path, "not a prunedge model file")
    if header.get("version") not in VERSIONS:
        raise fail(path, f"model format version {header.get('version')!r} is not one of {list(VERSIONS)}")
    try:
        layers = [_layer(i, info, files) for i, info in enumerate(infos)]
        input_shape = tuple(int(s) for s in header.get("input_shape", ()))
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise fail(path, f"inconsistent model file ({' '.join(str(e).split())[:200]})") from None
    return validate(Model(tuple(layers), meta, input_shape), str(path))


def _layer(i: int, info: dict, files: dict):
    kind = KINDS[info.get("kind", "dense")]
    kwargs = {}
    for name in array_fields(kind):
        if name == "weight" and info.get("storage") == "csr":
            shape = tuple(int(s) for s in info["shape"])
            w = sp.csr_array((files[f"layer{i}.csr_data"], files[f"layer{i}.csr_indices"],
                              files[f"layer{i}.csr_indptr"]), shape=shape)
            w.check_format(full_check=True)
            kwargs[name] = w
        else:
            kwargs[name] = files[f"layer{i}.{name}"]
    if "shape" in info and info.get("storage") != "csr" and list(kwargs["weight"].shape) != list(info["shape"]):
        raise ValueError(f"layer {i} weight shape {list(kwargs['weight'].shape)} != recorded {list(info['shape'])}")
    for attr in kind.ATTRS:
        if attr in info:
            kwargs[attr] = tuple(info[attr]) if isinstance(info[attr], list) else info[attr]
    kwargs["inputs"] = tuple(int(j) for j in info.get("inputs", ()))
    if kind is Dense and "activation" not in info:
        raise KeyError("activation")
    return kind(**kwargs)

