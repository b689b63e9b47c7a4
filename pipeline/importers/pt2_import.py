"""torch.export programs (`torch.export.save`, .pt2) -> layers, without torch.export.load.

`torch.export.load` unpickles, so we read the PT2 archive ourselves: the graph is JSON
(`models/model.json`), weights are raw little-endian storage bytes plus JSON metadata (dtype,
sizes, strides, storage offset). Entries marked `use_pickle` (tensor subclasses) and archives
older than the PT2 format (their state dict is a pickle) are refused. The graph's aten ops go
through `aten_ops.HANDLERS`, like TorchScript; the input's [C, H, W] is stored in the file.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from pipeline.errors import fail
from pipeline.importers.aten_ops import HANDLERS
from pipeline.importers.chain import Chain

MODEL_JSON = "models/model.json"
# torch._export.serde.schema.ScalarType -> numpy dtype (what a float CNN can hold)
DTYPES = {4: np.int32, 5: np.int64, 6: np.float16, 7: np.float32, 8: np.float64, 12: np.bool_}
SCALARS = {"as_int", "as_float", "as_bool", "as_string", "as_ints", "as_floats", "as_bools", "as_strings"}


def _ints(values, source, what: str) -> list:
    if not all("as_int" in v for v in values):
        raise fail(source, f"{what} has a symbolic size (export with static shapes)")
    return [int(v["as_int"]) for v in values]


def _payloads(z: zipfile.ZipFile, folder: str, config_name: str, source: str) -> dict[str, np.ndarray]:
    """name -> array of every weight in `folder`, viewed as torch does (as_strided on raw storage)."""
    if folder + config_name not in z.namelist():
        return {}
    out = {}
    for name, meta in json.loads(z.read(folder + config_name))["config"].items():
        if meta.get("use_pickle"):
            raise fail(source, f"weight '{name}' is pickled (a tensor subclass), which we never unpickle")
        t = meta["tensor_meta"]
        if t["dtype"] not in DTYPES:
            raise fail(source, f"weight '{name}' has unsupported dtype code {t['dtype']}")
        storage = np.frombuffer(z.read(folder + meta["path_name"]), DTYPES[t["dtype"]])
        sizes, strides = _ints(t["sizes"], source, name), _ints(t["strides"], source, name)
        offset = _ints([t["storage_offset"]], source, name)[0]
        last = offset + sum((n - 1) * s for n, s in zip(sizes, strides)) if all(sizes) else offset - 1
        if offset < 0 or last >= storage.size:
            raise fail(source, f"weight '{name}' does not fit its storage (corrupt archive)")
        item = storage.itemsize
        out[name] = np.lib.stride_tricks.as_strided(storage[offset:], sizes, [s * item for s in strides]).copy()
    return out


def _read(path: Path):
    """(program JSON, weights and constants by name) from the archive."""
    source = str(path)
    try:
        with zipfile.ZipFile(path) as z:
            found = [n for n in z.namelist() if n.endswith(MODEL_JSON)]
            if not found:
                raise fail(path, "an old torch.export archive (before the PT2 format) keeps its weights pickled, "
                                 "which we never unpickle: save it again with torch.export.save from torch >= 2.8")
            root = found[0][:-len(MODEL_JSON)]
            order = root + "byteorder"
            if order in z.namelist() and z.read(order).decode().strip() != "little":
                raise fail(path, "big-endian weights are not supported")
            program = json.loads(z.read(found[0]))
            arrays = {**_payloads(z, root + "data/weights/", "model_weights_config.json", source),
                      **_payloads(z, root + "data/constants/", "model_constants_config.json", source)}
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError) as e:
        raise fail(path, f"corrupt or unsupported torch.export archive ({type(e).__name__}: {e})") from None
    return program, arrays


class _ExportCall:
    """One exported node as `aten_ops` handlers see it (positional arguments, then keywords)."""

    def __init__(self, node: dict, tensors: dict, source: str, where: str):
        self.args = [i["arg"] for i in node["inputs"] if i.get("kind", 1) != 2]
        self.kwargs = {i["name"]: i["arg"] for i in node["inputs"] if i.get("kind", 1) == 2}
        self.tensors, self.source, self.where = tensors, source, where
        outputs = node["outputs"]
        if len(outputs) != 1 or "as_tensor" not in outputs[0]:
            raise fail(source, f"{where}: ops with several outputs are not supported")
        self.out = outputs[0]["as_tensor"]["name"]

    def _raw(self, k: int, name):
        return self.args[k] if k < len(self.args) else self.kwargs.get(name)

    def src(self, k: int):
        raw = self._raw(k, None) or {}
        return raw["as_tensor"]["name"] if "as_tensor" in raw else None

    def known(self, k: int) -> bool:
        """Is argument k a constant (not computed at run time)?"""
        raw = self._raw(k, None) or {}
        return "as_tensor" not in raw or raw["as_tensor"]["name"] in self.tensors

    def arg(self, k: int, default=None, name: str | None = None):
        raw = self._raw(k, name)
        if raw is None:
            return default
        ((kind, value),) = raw.items()
        if kind == "as_tensor":
            if value["name"] not in self.tensors:
                raise fail(self.source, f"{self.where}: argument {k} is computed at run time, not stored")
            return self.tensors[value["name"]]
        if kind == "as_none":
            return None
        if kind not in SCALARS:
            raise fail(self.source, f"{self.where}: argument {k} ({kind}) is not supported")
        return value


def _op(target: str) -> str:
    """'torch.ops.aten.conv2d.default' -> 'aten::conv2d' (the TorchScript spelling of the table)."""
    parts = target.split(".")
    return f"{parts[2]}::{parts[3]}" if len(parts) >= 4 and parts[:2] == ["torch", "ops"] else target


def _signature(program: dict, arrays: dict, source: str):
    """(data input name, its [C, H, W] or [features], output name, weights by graph name)."""
    sig, graph = program["graph_module"]["signature"], program["graph_module"]["graph"]
    tensors, inputs = {}, []
    keys = {"parameter": "parameter_name", "buffer": "buffer_name", "tensor_constant": "tensor_constant_name"}
    for spec in sig["input_specs"]:
        ((kind, value),) = spec.items()
        if kind == "user_input" and "as_tensor" in value["arg"]:
            inputs.append(value["arg"]["as_tensor"]["name"])
        elif kind in keys and value[keys[kind]] in arrays:
            tensors[value["arg"]["name"]] = arrays[value[keys[kind]]]
        else:
            raise fail(source, f"program input {kind} {value.get('arg')} is not supported")
    outputs = [o["user_output"]["arg"]["as_tensor"]["name"] for o in sig["output_specs"] if "user_output" in o]
    if len(inputs) != 1 or len(outputs) != 1 or len(outputs) != len(sig["output_specs"]):
        raise fail(source, f"expected one input and one output, got {len(inputs)} and {len(sig['output_specs'])}")
    dims = graph["tensor_values"][inputs[0]]["sizes"][1:]
    per_sample = [int(d["as_int"]) if "as_int" in d else None for d in dims]
    return inputs[0], per_sample, outputs[0], tensors


def load(path: Path, arch=None):
    """`chain.Described` from a torch.export archive."""
    source = str(path)
    program, arrays = _read(path)
    data_input, dims, output, tensors = _signature(program, arrays, source)
    nodes = program["graph_module"]["graph"]["nodes"]
    wheres = [f"{_op(n['target'])} (node {i} '{n.get('name', '')}')" for i, n in enumerate(nodes)]
    unsupported = [w for n, w in zip(nodes, wheres) if _op(n["target"]) not in HANDLERS]
    if unsupported:
        raise fail(path, f"unsupported ops: {', '.join(unsupported)}")
    shape = (dims[1], dims[2], dims[0]) if len(dims) == 3 else tuple(dims)
    chain = Chain(source, data_input, shape or None, dims, layout="nchw")
    for node, where in zip(nodes, wheres):
        HANDLERS[_op(node["target"])](chain, _ExportCall(node, tensors, source, where))
    return chain.result(output)
