"""ONNX -> layers: dense chains (Gemm, MatMul + Add) and CNNs (Conv, BatchNormalization, pools).

Weights come from initializers and Constant nodes; ops whose inputs are all constants (an
Identity of a weight, the Concat/Transpose/Cast chain torch.onnx writes for F.pad's pads) are
evaluated here by onnx's reference implementation. Shape side-computations (Shape/Gather/
Unsqueeze/Concat..., as torch.onnx emits for `x.view(x.size(0), -1)`) are skipped. Every op that
reads the layer data must be in `onnx_ops.HANDLERS`, else it is refused by name and position.
The input [N, C, H, W] becomes the description's (h, w, c).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import fail
from pipeline.importers.chain import Chain
from pipeline.importers.onnx_ops import HANDLERS

def _read(path: Path):
    import onnx
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf/external-data errors come in many types
        first_line = (str(e).splitlines() or [""])[0][:200]
        raise fail(path, f"corrupt or unreadable ONNX file ({type(e).__name__}: {first_line})") from None
    if not model.graph.node or not model.graph.output:
        raise fail(path, "not an ONNX model (no graph nodes or outputs)")
    return model


def _attrs(node) -> dict:
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(i: int, node) -> str:
    return f"{node.op_type} (node {i}" + (f" '{node.name}')" if node.name else ")")


def _data_flow(graph, source: str) -> list[str]:
    """Per node: "data" (reads the layer data), "shape" (reads only sizes: Shape and what follows it)
    or "const" (reads constants only: foldable)."""
    data, shapes, out = {source}, set(), []
    for node in graph.node:
        inputs = set(node.input) - {""}
        kind = ("shape" if node.op_type == "Shape" else "data" if inputs & data
                else "shape" if inputs & shapes else "const")
        (shapes if kind == "shape" else data if kind == "data" else set()).update(node.output)
        out.append(kind)
    return out


def load(path: Path, arch=None):
    """`chain.Described` from an ONNX file; see the module docstring."""
    model = _read(path)
    graph = model.graph
    values, const = _constants(graph, path)
    inputs = [i for i in graph.input if i.name not in values and const(i.name, required=False) is None]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise fail(path, f"expected one input and one output, got {len(inputs)} and {len(graph.output)}")
    kinds = _data_flow(graph, inputs[0].name)
    unsupported = [_where(i, n) for i, (n, k) in enumerate(zip(graph.node, kinds)) if k == "data"
                   and (n.domain not in ("", "ai.onnx") or n.op_type not in HANDLERS)]
    if unsupported:
        raise fail(path, f"unsupported ops: {', '.join(unsupported)}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    chain = Chain(str(path), inputs[0].name, *_input_shape(inputs[0]), layout="nchw")
    for i, (node, kind) in enumerate(zip(graph.node, kinds)):
        if kind == "const" and node.op_type != "Constant":
            _fold(node, values, const, opset)
        if kind != "data":
            continue
        inputs_in_order = list(node.input)
        if node.op_type == "Add" and len(inputs_in_order) == 2 and not chain.has(inputs_in_order[0]):
            inputs_in_order.reverse()  # bias first (b + xW) is still a bias
        HANDLERS[node.op_type](chain, _NodeView(node, inputs_in_order), _where(i, node), const, _attrs(node))
    return chain.result(graph.output[0].name, f"graph output {graph.output[0].name!r}")


def _fold(node, values: dict, const, opset) -> None:
    """Evaluate an op on constants; if the reference implementation cannot, its outputs stay unknown
    (and a layer that needs them is refused as reading a non-constant)."""
    from onnx.reference import ReferenceEvaluator
    try:
        feeds = {n: const(n) for n in node.input if n}
        results = ReferenceEvaluator(node, opsets={"": opset} if opset else None).run(None, feeds)
    except Exception:  # unknown op, bad attributes, a missing input: not foldable
        return
    values.update((name, np.asarray(v)) for name, v in zip(node.output, results) if name)


def _constants(graph, path):
    """(values, const): every constant tensor by name, and a reader that refuses non-constants."""
    from onnx import numpy_helper
    consts = {t.name: t for t in graph.initializer}
    values: dict[str, np.ndarray] = {t.values.name: _dense_from_sparse(t, path) for t in graph.sparse_initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = _constant_value(node, path)

    def const(name: str, required: bool = True):
        if name in values:
            return values[name]
        if name in consts:
            values[name] = numpy_helper.to_array(consts[name])
            return values[name]
        if required:
            raise fail(path, f"tensor {name!r} is not a constant initializer "
                             "(weights must be stored in the file)")
        return None
    return values, const


def _input_shape(graph_input):
    """(description shape, the file's shape for messages): [N, C, H, W] -> (h, w, c); None if unknown."""
    dims = graph_input.type.tensor_type.shape.dim
    per_sample = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
    if not per_sample:
        return None, None
    shape = (per_sample[1], per_sample[2], per_sample[0]) if len(per_sample) == 3 else tuple(per_sample)
    return shape, per_sample


class _NodeView:
    """A node with its inputs reordered so the chain's tensor comes first."""
    def __init__(self, node, inputs):
        self.op_type, self.name, self.input, self.output = node.op_type, node.name, inputs, node.output


def _constant_value(node, path) -> np.ndarray:
    from onnx import numpy_helper
    attrs = {a.name: a for a in node.attribute}
    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"].t)
    if "sparse_value" in attrs:
        return _dense_from_sparse(attrs["sparse_value"].sparse_tensor, path)
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            import onnx
            return np.asarray(onnx.helper.get_attribute_value(attrs[key]), dtype)
    raise fail(path, f"Constant node {node.name!r} has no supported value attribute")


def _dense_from_sparse(sparse, path) -> np.ndarray:
    """A SparseTensorProto (linear [nnz] or coordinate [nnz, rank] indices) as a dense array."""
    from onnx import numpy_helper
    values, indices = numpy_helper.to_array(sparse.values), numpy_helper.to_array(sparse.indices)
    dense = np.zeros([int(d) for d in sparse.dims], values.dtype)
    try:
        if indices.ndim == 1:
            dense.reshape(-1)[indices] = values
        else:
            dense[tuple(indices.T)] = values
    except (IndexError, ValueError) as e:
        raise fail(path, f"sparse tensor {sparse.values.name!r} has invalid indices ({e})") from None
    return dense
