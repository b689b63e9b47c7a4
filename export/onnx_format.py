"""ONNX export with onnx.helper: one node group per description layer (`export.onnx_graph`: Gemm,
Conv, pooling, Flatten, Add, activations), input `x` ([batch, features], or NCHW images), output `logits`.

Opset 21 / IR 10 is what onnxruntime >= 1.20 runs, so files also load on older device builds.
The sparse variant stores CSR weights as `Constant(sparse_value=...)` (linear INT64 indices,
the smallest encoding the spec allows: 12 bytes per kept weight, so it only shrinks the
file below ~67% density). onnxruntime turns sparse constants and sparse initializers into
dense tensors when it loads the graph (microsoft/onnxruntime#5540), so it computes dense.
We use a Constant node rather than `graph.sparse_initializer` because the checker's full
type check rejects a sparse initializer feeding Gemm ("unsupported type sparse_tensor(float)").
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import fail
from pipeline.fileio import write_bytes
from pipeline.model import Model, validate

if TYPE_CHECKING:
    from export.formats import ExportOptions

OPSET = 21
IR_VERSION = 10
INPUT, OUTPUT = "x", "logits"

def build(model: Model, *, sparse: bool = False, opset: int = OPSET):
    """The ModelProto for `model` (image models take NCHW input); with `sparse`, CSR layers are
    stored as sparse constants."""
    import onnx
    from onnx import TensorProto, helper

    from export.onnx_graph import EMITTERS, Graph
    validate(model)
    g = Graph(sparse)
    names, last = {-1: INPUT}, len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        act = getattr(layer, "activation", "identity")
        z = OUTPUT if (i == last and act == "identity") else f"z{i}"
        names[i] = EMITTERS[type(layer)](g, i, layer, [names[j] for j in model.sources(i)], z,
                                         OUTPUT if i == last else f"h{i}")
    if names[last] != OUTPUT:  # a parameter-free last layer already wrote `logits`; anything else is a bug
        raise AssertionError(f"last layer wrote {names[last]!r}")
    shape = model.input_shape
    dims = ["batch", *shape] if len(shape) == 1 else ["batch", shape[2], shape[0], shape[1]]
    graph = helper.make_graph(
        g.nodes, "prunedge_mlp" if model.is_mlp else "prunedge_net",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", model.output_dim])],
        g.initializers)
    doc = "ReLU MLP exported from a prunedge model.npz" if model.is_mlp else "network exported from a prunedge model.npz"
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION,
                              producer_name="prunedge", doc_string=doc)
    helper.set_model_props(proto, {k: json.dumps(v, sort_keys=True, default=str)
                                   for k, v in sorted(model.meta.items())})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _write(model: Model, out_path: Path, options: "ExportOptions", sparse: bool) -> Path:
    proto = build(model, sparse=sparse, opset=options.opset)
    # deterministic=True: same model -> byte-identical file (stable sha256 in the manifest)
    return write_bytes(out_path, proto.SerializeToString(deterministic=True))


def export_dense(model: Model, out_path: Path, options: "ExportOptions") -> Path:
    return _write(model, out_path, options, sparse=False)


def export_sparse(model: Model, out_path: Path, options: "ExportOptions") -> Path:
    if not any(getattr(layer, "is_sparse", False) for layer in model.layers):
        raise fail(out_path, "sparse ONNX needs a model with CSR layers (weight-pruned)")
    return _write(model, out_path, options, sparse=True)


def inspect(path: Path) -> tuple[list[str], bool]:
    """(sorted op types, runs_sparse). onnxruntime's CPU EP has no sparse Gemm: always dense."""
    import onnx
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise fail(path, f"not a readable ONNX file ({type(e).__name__})") from None
    return sorted({node.op_type for node in proto.graph.node}), False
