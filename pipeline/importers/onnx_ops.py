"""ONNX op_type -> handler(chain, node, where, const, attrs): one row per supported op.

The data input is node.input[0] (Add's operands are sorted by the walk: data first). ONNX is
NCHW: kernels are already [out, in, kh, kw]; pads [top, left, bottom, right] become (top,
bottom, left, right); auto_pad SAME_UPPER puts the odd pixel after, SAME_LOWER before; a
Flatten/Reshape after convolutions is channels-first.
"""
from __future__ import annotations

import numpy as np

from pipeline.errors import fail
from pipeline.importers.common import (check_leaky_alpha, clip_activation, float_array, no_dilation, pair,
                                       same_pads)

ELEMENTWISE = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}
PASS_THROUGH = {"Identity", "Dropout"}  # Dropout is the identity at inference
CHANNELS_FIRST = "channels_first"


def _src_out(node):
    return node.input[0], node.output[0]


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
    chain.linear(*_src_out(node), w, bias, where)


def _matmul(chain, node, where, const, attrs):
    chain.linear(*_src_out(node), const(node.input[1]), None, where)


def _add(chain, node, where, const, attrs):
    if len(node.input) == 2 and chain.has(node.input[1]):
        return chain.add(node.input[0], node.input[1], node.output[0], where)
    chain.add_bias(*_src_out(node), const(node.input[1]), where)


def _leaky(chain, node, where, const, attrs):
    chain.activation(*_src_out(node), check_leaky_alpha(attrs.get("alpha", 0.01), chain.source, where), where)


def _clip(chain, node, where, const, attrs):
    def bound(k, attr):
        if len(node.input) > k and node.input[k]:
            return const(node.input[k])
        return attrs.get(attr)  # opset < 11 keeps the bounds as attributes
    chain.activation(*_src_out(node), clip_activation(bound(1, "min"), bound(2, "max"), chain.source, where), where)


def _flatten(chain, node, where, const, attrs):
    if attrs.get("axis", 1) != 1:
        raise fail(chain.source, f"{where}: Flatten axis {attrs['axis']} is not supported (only 1)")
    chain.flatten(*_src_out(node), where, CHANNELS_FIRST)


def _reshape(chain, node, where, const, attrs):
    target = const(node.input[1], required=False)
    if target is not None and (target.ndim != 1 or target.size != 2):
        raise fail(chain.source, f"{where}: Reshape to {target.tolist()} is not supported "
                                 "(only to [batch, features])")
    chain.flatten(*_src_out(node), where, CHANNELS_FIRST)


def _squeeze(chain, node, where, const, attrs):
    """[N, C, 1, 1] -> [N, C] after a global pool: the description's pool already gives [C]."""
    shape = chain.shape(node.input[0], where)
    if shape is None or len(shape) != 1:
        raise fail(chain.source, f"{where}: Squeeze of the layer data is only supported after a global pool")
    chain.alias(*_src_out(node), where)


def _softmax(name):
    def handler(chain, node, where, const, attrs):
        if attrs.get("axis", -1) not in (-1, 1):
            raise fail(chain.source, f"{where}: {node.op_type} over axis {attrs['axis']} is not supported")
        chain.output(*_src_out(node), name, where)
    return handler


def _activation(name):
    return lambda chain, node, where, const, attrs: chain.activation(*_src_out(node), name, where)


def _window(chain, node, where, attrs, kernel):
    """(stride, pads) of a Conv/pool node, auto_pad resolved against the input's spatial size."""
    no_dilation(attrs.get("dilations", [1, 1]), chain.source, where)
    stride = pair(attrs.get("strides", [1, 1]), chain.source, where, "strides")
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        shape = chain.shape(node.input[0], where, image=True)
        return stride, same_pads(shape[:2], kernel, stride, odd_after=auto == "SAME_UPPER")
    if auto not in ("NOTSET", "VALID"):
        raise fail(chain.source, f"{where}: auto_pad {auto!r} is not supported")
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])] if auto == "NOTSET" else [0, 0, 0, 0]
    if len(pads) != 4:
        raise fail(chain.source, f"{where}: pads {pads} are not 2-D")
    return stride, (pads[0], pads[2], pads[1], pads[3])


def _conv(chain, node, where, const, attrs):
    w = float_array(const(node.input[1]), chain.source, where)
    if w.ndim != 4:
        raise fail(chain.source, f"{where}: only 2-D convolutions are supported, got weight {list(w.shape)}")
    stride, pads = _window(chain, node, where, attrs, tuple(w.shape[2:]))
    bias = const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    group = int(attrs.get("group", 1))
    channels = chain.shape(node.input[0], where, image=True)[2]
    if group == 1:
        return chain.conv(*_src_out(node), w, bias, stride, pads, where)
    if group != channels or w.shape[1] != 1:
        raise fail(chain.source, f"{where}: group {group} is not supported (only 1, or depthwise: group = "
                                 f"the {channels} input channels)")
    if w.shape[0] != channels:
        raise fail(chain.source, f"{where}: depthwise channel multiplier {w.shape[0] // channels} is not "
                                 "supported (only 1)")
    chain.conv(*_src_out(node), w, bias, stride, pads, where, depthwise=True)


def _pool(op):
    def handler(chain, node, where, const, attrs):
        if len(node.output) > 1 and node.output[1]:
            raise fail(chain.source, f"{where}: MaxPool with an Indices output is not supported")
        kernel = pair(attrs.get("kernel_shape", []), chain.source, where, "kernel_shape")
        stride, pads = _window(chain, node, where, attrs, kernel)
        if attrs.get("ceil_mode", 0):
            raise fail(chain.source, f"{where}: ceil_mode=1 is not supported")
        chain.pool(*_src_out(node), op, kernel, stride, pads, where)
    return handler


def _reduce_mean(chain, node, where, const, attrs):
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = const(node.input[1]).tolist()  # opset 18 moved axes to an input
    if sorted(int(a) % 4 for a in (axes or [])) != [2, 3]:
        raise fail(chain.source, f"{where}: ReduceMean over axes {axes} is not supported (only the spatial "
                                 "axes [2, 3], a global average pool)")
    chain.global_pool(*_src_out(node), where)


def _batchnorm(chain, node, where, const, attrs):
    if attrs.get("training_mode", 0) or any(node.output[1:]):
        raise fail(chain.source, f"{where}: BatchNormalization in training mode is not supported")
    gamma, beta, mean, var = (const(n) for n in node.input[1:5])
    chain.batchnorm(*_src_out(node), gamma, beta, mean, var, attrs.get("epsilon", 1e-5), where)


def _pad(chain, node, where, const, attrs):
    mode = attrs.get("mode", b"constant")
    pads = const(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("pads")
    value = const(node.input[2]) if len(node.input) > 2 and node.input[2] else attrs.get("value", 0.0)
    pads = [int(p) for p in np.asarray(pads).ravel()]
    if (mode not in (b"constant", "constant") or float(np.asarray(value).reshape(())) != 0.0
            or len(node.input) > 3 and node.input[3] or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5))):
        raise fail(chain.source, f"{where}: only constant zero padding of the spatial axes is supported")
    chain.zero_pad(*_src_out(node), (pads[2], pads[6], pads[3], pads[7]), where)


# op_type -> handler(chain, node, where, const, attrs)
HANDLERS = {
    "Gemm": _gemm, "MatMul": _matmul, "Add": _add,
    **{op: _activation(name) for op, name in ELEMENTWISE.items()},
    "LeakyRelu": _leaky, "Clip": _clip,
    **{op: _activation("identity") for op in PASS_THROUGH},
    "Flatten": _flatten, "Reshape": _reshape, "Squeeze": _squeeze,
    "Softmax": _softmax("softmax"), "LogSoftmax": _softmax("log_softmax"),
    "Conv": _conv, "BatchNormalization": _batchnorm, "Pad": _pad,
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda chain, node, where, const, attrs: chain.global_pool(*_src_out(node), where),
    "ReduceMean": _reduce_mean,
}
