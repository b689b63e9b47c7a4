"""ONNX export with onnx.helper: one Gemm (+ activation) per layer, input `x`, output `logits`.

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
from pipeline.model import LEAKY_RELU_ALPHA, Model, validate

if TYPE_CHECKING:
    from export.formats import ExportOptions

OPSET = 21
IR_VERSION = 10
INPUT, OUTPUT = "x", "logits"

# Activation name -> (ONNX op, attributes); identity adds no node.
ACTIVATION_OPS: dict[str, tuple[str, dict] | None] = {
    "relu": ("Relu", {}),
    "identity": None,
    "tanh": ("Tanh", {}),
    "sigmoid": ("Sigmoid", {}),
    "leaky_relu": ("LeakyRelu", {"alpha": LEAKY_RELU_ALPHA}),
}


def build(model: Model, *, sparse: bool = False, opset: int = OPSET):
    """The ModelProto for `model`; with `sparse`, CSR layers are stored as sparse constants."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    validate(model)
    nodes, initializers = [], []
    current = INPUT
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        w_name, b_name = f"W{i}", f"b{i}"
        if sparse and layer.is_sparse:
            nodes.append(helper.make_node("Constant", [], [w_name], name=f"const{i}",
                                          sparse_value=_sparse_tensor(layer.weight, w_name)))
        else:
            initializers.append(numpy_helper.from_array(np.ascontiguousarray(layer.dense_weight()), w_name))
        initializers.append(numpy_helper.from_array(layer.bias, b_name))
        act = ACTIVATION_OPS[layer.activation]
        z = OUTPUT if (i == last and act is None) else f"z{i}"
        nodes.append(helper.make_node("Gemm", [current, w_name, b_name], [z], name=f"gemm{i}"))
        current = z
        if act is not None:
            op, attrs = act
            current = OUTPUT if i == last else f"h{i}"
            nodes.append(helper.make_node(op, [z], [current], name=f"{op.lower()}{i}", **attrs))
    graph = helper.make_graph(
        nodes, "prunedge_mlp",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", model.input_dim])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", model.output_dim])],
        initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION,
                              producer_name="prunedge", doc_string="ReLU MLP exported from a prunedge model.npz")
    helper.set_model_props(proto, {k: json.dumps(v, sort_keys=True, default=str)
                                   for k, v in sorted(model.meta.items())})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _sparse_tensor(csr, name: str):
    """SparseTensorProto with row-major linear INT64 indices (sorted, as the checker requires)."""
    from onnx import helper, numpy_helper

    csr = csr.copy()
    csr.sort_indices()
    rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    linear = rows * csr.shape[1] + csr.indices.astype(np.int64)
    values = numpy_helper.from_array(csr.data.astype(np.float32), name)
    indices = numpy_helper.from_array(linear, f"{name}_indices")
    return helper.make_sparse_tensor(values, indices, list(csr.shape))


def _write(model: Model, out_path: Path, options: "ExportOptions", sparse: bool) -> Path:
    proto = build(model, sparse=sparse, opset=options.opset)
    # deterministic=True: same model -> byte-identical file (stable sha256 in the manifest)
    return write_bytes(out_path, proto.SerializeToString(deterministic=True))


def export_dense(model: Model, out_path: Path, options: "ExportOptions") -> Path:
    return _write(model, out_path, options, sparse=False)


def export_sparse(model: Model, out_path: Path, options: "ExportOptions") -> Path:
    if not any(layer.is_sparse for layer in model.layers):
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
