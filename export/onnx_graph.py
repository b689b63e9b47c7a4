"""The nodes of one description layer in ONNX (NCHW), one emitter per layer kind.

Names follow the MLP exporter's scheme (W<i>, b<i>, gemm<i>, z<i> before and h<i> after the
activation, `logits` at the end), so a fully connected chain exports byte for byte as before.
"""
from __future__ import annotations

import numpy as np

from pipeline.layers import (LEAKY_RELU_ALPHA, Add, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Flatten,
                             GlobalAvgPool, Pool2D)

# Activation name -> (ONNX op, attributes); identity adds no node; relu6 is Clip(0, 6).
ACTIVATION_OPS: dict[str, tuple[str, dict] | None] = {
    "relu": ("Relu", {}),
    "identity": None,
    "tanh": ("Tanh", {}),
    "sigmoid": ("Sigmoid", {}),
    "leaky_relu": ("LeakyRelu", {"alpha": LEAKY_RELU_ALPHA}),
    "relu6": ("Clip", {}),
}


class Graph:
    """Nodes and initializers being built; `sparse_weight(i, csr, shape)` decides sparse storage."""

    def __init__(self, sparse: bool):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.sparse, self.nodes, self.initializers = sparse, [], []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def weight(self, i: int, layer, dense: np.ndarray) -> str:
        name = f"W{i}"
        if self.sparse and layer.is_sparse:
            self.nodes.append(self.helper.make_node("Constant", [], [name], name=f"const{i}",
                                                    sparse_value=sparse_tensor(layer.weight, name, dense.shape)))
            return name
        return self.const(name, dense)

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def activate(self, i: int, z: str, activation: str, out: str) -> str:
        """The activation node of layer i reading z, writing `out` (z itself for identity)."""
        act = ACTIVATION_OPS[activation]
        if act is None:
            return z
        op, attrs = act
        inputs = [z]
        if op == "Clip":
            inputs += [self.const(f"clip{i}_min", np.float32(0)), self.const(f"clip{i}_max", np.float32(6))]
        return self.node(op, inputs, out, f"{op.lower()}{i}", **attrs)


def sparse_tensor(csr, name: str, shape):
    """SparseTensorProto of a CSR matrix (reshaped to `shape`): row-major linear INT64 indices,
    sorted, as the checker requires; a conv kernel's [out, in*kh*kw] rows map onto [out, in, kh, kw]."""
    from onnx import helper, numpy_helper
    csr = csr.copy()
    csr.sort_indices()
    rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    linear = rows * csr.shape[1] + csr.indices.astype(np.int64)
    values = numpy_helper.from_array(csr.data.astype(np.float32), name)
    indices = numpy_helper.from_array(linear, f"{name}_indices")
    return helper.make_sparse_tensor(values, indices, list(shape))


def _onnx_pads(pads) -> list[int]:
    top, bottom, left, right = pads
    return [top, left, bottom, right]


def _dense(g: Graph, i, layer: Dense, xs, z, out):
    w = g.weight(i, layer, layer.dense_weight())
    return g.activate(i, g.node("Gemm", [xs[0], w, g.const(f"b{i}", layer.bias)], z, f"gemm{i}"),
                      layer.activation, out)


def _conv(g: Graph, i, layer, xs, z, out):
    group = layer.weight.shape[0] if isinstance(layer, DepthwiseConv2D) else 1
    w = g.weight(i, layer, layer.dense_weight())
    conv = g.node("Conv", [xs[0], w, g.const(f"b{i}", layer.bias)], z, f"conv{i}", kernel_shape=list(layer.kernel),
                  strides=list(layer.stride), pads=_onnx_pads(layer.pads), group=group)
    return g.activate(i, conv, layer.activation, out)


def _batchnorm(g: Graph, i, layer: BatchNorm, xs, z, out):
    names = [g.const(f"bn{i}_{k}", getattr(layer, k)) for k in ("gamma", "beta", "mean", "var")]
    return g.activate(i, g.node("BatchNormalization", [xs[0], *names], z, f"bn{i}", epsilon=float(layer.eps)),
                      layer.activation, out)


def _pool(g: Graph, i, layer: Pool2D, xs, z, out):
    op = "MaxPool" if layer.op == "max" else "AveragePool"
    return g.node(op, [xs[0]], out, f"pool{i}", kernel_shape=list(layer.size), strides=list(layer.stride),
                  pads=_onnx_pads(layer.pads))


def _global_avg(g: Graph, i, layer, xs, z, out):
    pooled = g.node("GlobalAveragePool", [xs[0]], f"gap{i}", f"gap{i}")
    return g.node("Flatten", [pooled], out, f"flatten{i}", axis=1)


def _flatten(g: Graph, i, layer: Flatten, xs, z, out):
    x = xs[0]
    if layer.layout == "channels_last":  # NCHW -> NHWC first, so features come out (h, w, c)
        x = g.node("Transpose", [x], f"nhwc{i}", f"transpose{i}", perm=[0, 2, 3, 1])
    return g.node("Flatten", [x], out, f"flatten{i}", axis=1)


def _add(g: Graph, i, layer: Add, xs, z, out):
    return g.activate(i, g.node("Add", list(xs), z, f"add{i}"), layer.activation, out)


EMITTERS = {Dense: _dense, Conv2D: _conv, DepthwiseConv2D: _conv, BatchNorm: _batchnorm, Pool2D: _pool,
            GlobalAvgPool: _global_avg, Flatten: _flatten, Add: _add}
