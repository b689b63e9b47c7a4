"""ONNX -> layers: a chain of Gemm or MatMul(+Add) with elementwise activations between.

Weights come from initializers or Constant nodes. Shape side-computations that only feed
an input Reshape (Shape/Gather/Unsqueeze/Concat..., as torch.onnx emits for
`x.view(x.size(0), -1)`) are allowed; any other op is refused by name and position.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import fail
from pipeline.importers.chain import Chain, check_leaky_alpha, float_array

# Ops whose outputs are shapes/indices, tolerated only as feeders of an input Reshape.
SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "ConstantOfShape"}
ELEMENTWISE = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}
PASS_THROUGH = {"Identity", "Dropout"}  # Dropout is the identity at inference


def _attrs(node) -> dict:
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(i: int, node) -> str:
    return f"{node.op_type} (node {i}" + (f" '{node.name}')" if node.name else ")")


def _gemm(chain, node, where, const, attrs):
    if attrs.get("transA", 0):
        raise fail(chain.source, f"{where}: Gemm with transA=1 is not supported")
    w = float_array(const(node.input[1]), chain.source, where)
    w = w.T if attrs.get("transB", 0) else w
    alpha, beta = np.float32(attrs.get("alpha", 1.0)), np.float32(attrs.get("beta", 1.0))
    w = w if alpha == 1 else alpha * w
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = float_array(const(node.input[2]), chain.source, where)
        bias = bias if beta == 1 else beta * bias
    chain.linear(w, bias, where)


def _matmul(chain, node, where, const, attrs):
    chain.linear(const(node.input[1]), None, where)


def _add(chain, node, where, const, attrs):
    chain.add_bias(const(node.input[1]), where)


def _leaky(chain, node, where, const, attrs):
    chain.activation(check_leaky_alpha(attrs.get("alpha", 0.01), chain.source, where), where)


def _flatten(chain, node, where, const, attrs):
    if attrs.get("axis", 1) != 1:
        raise fail(chain.source, f"{where}: Flatten axis {attrs['axis']} is not supported (only 1)")
    chain.flatten(where)


def _reshape(chain, node, where, const, attrs):
    target = const(node.input[1], required=False)
    if target is not None and (target.ndim != 1 or target.size != 2):
        raise fail(chain.source, f"{where}: Reshape to {target.tolist()} is not supported "
                                 "(only to [batch, features] at the input)")
    chain.flatten(where)


def _softmax(name):
    def handler(chain, node, where, const, attrs):
        if attrs.get("axis", -1) not in (-1, 1):
            raise fail(chain.source, f"{where}: {node.op_type} over axis {attrs['axis']} is not supported")
        chain.output(name, where)
    return handler


def _activation(name):
    return lambda chain, node, where, const, attrs: chain.activation(name, where)


# op_type -> handler(chain, node, where, const, attrs); the data input is always input[0]
# except for Add, whose operands may come in either order (normalised before the call).
HANDLERS = {
    "Gemm": _gemm, "MatMul": _matmul, "Add": _add,
    **{op: _activation(name) for op, name in ELEMENTWISE.items()},
    "LeakyRelu": _leaky,
    **{op: _activation("identity") for op in PASS_THROUGH},
    "Flatten": _flatten, "Reshape": _reshape,
    "Softmax": _softmax("softmax"), "LogSoftmax": _softmax("log_softmax"),
}


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


def load(path: Path, arch=None):
    """(weights, biases, activations, meta) from an ONNX file; see the module docstring."""
    from onnx import numpy_helper
    model = _read(path)
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    values: dict[str, np.ndarray] = {t.values.name: _dense_from_sparse(t, path) for t in graph.sparse_initializer}
    unsupported = [_where(i, n) for i, n in enumerate(graph.node)
                   if n.domain not in ("", "ai.onnx")
                   or n.op_type not in HANDLERS and n.op_type not in SHAPE_OPS | {"Constant"}]
    if unsupported:
        raise fail(path, f"unsupported ops: {', '.join(unsupported)}")
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

    inputs = [i for i in graph.input if i.name not in consts and i.name not in values]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise fail(path, f"expected one input and one output, got {len(inputs)} and {len(graph.output)}")
    chain = Chain(str(path))
    current = inputs[0].name
    on_chain = {current}  # every activation tensor so far: only `current` may be read again
    for i, node in enumerate(graph.node):
        where = _where(i, node)
        if node.op_type == "Constant":
            continue
        if node.op_type in SHAPE_OPS:
            if on_chain.intersection(node.input) and not (node.op_type == "Shape" and current == inputs[0].name):
                raise fail(path, f"{where}: {node.op_type} on the layer data is not supported")
            continue
        data_inputs = list(node.input)
        if node.op_type == "Add" and len(data_inputs) == 2 and data_inputs[1] == current:
            data_inputs.reverse()
        if not data_inputs or data_inputs[0] != current or on_chain.intersection(data_inputs[1:]):
            raise fail(path, f"{where}: does not continue the single chain from the input "
                             "(branches and skip connections are not supported)")
        HANDLERS[node.op_type](chain, _NodeView(node, data_inputs), where, const, _attrs(node))
        current = node.output[0]
        on_chain.add(current)
    if current != graph.output[0].name:
        raise fail(path, f"graph output {graph.output[0].name!r} is not the end of the layer chain")
    _check_input_width(inputs[0], chain, path)
    return chain.result()


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


def _check_input_width(graph_input, chain: Chain, path: Path) -> None:
    """If the input's feature dims are static, their product must be the first layer's width."""
    dims = graph_input.type.tensor_type.shape.dim
    feature_dims = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
    if not feature_dims or None in feature_dims:
        return
    width = int(np.prod(feature_dims))
    if len(feature_dims) > 1 and not chain.flattened:
        raise fail(path, f"input has shape {[d for d in feature_dims]} per example but no "
                         "Flatten/Reshape before the first layer")
    if width != chain.weights[0].shape[0]:
        raise fail(path, f"input has {width} features but the first layer takes "
                              f"{chain.weights[0].shape[0]}")
