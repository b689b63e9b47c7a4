"""TFLite builtin op name -> handler(graph, op, chain, where): one row per supported op.

TFLite is channels-last like the description: CONV_2D filters [out, kh, kw, in] become
[out, in, kh, kw], DEPTHWISE_CONV_2D filters [1, kh, kw, c] become [c, 1, kh, kw]; SAME padding
puts the odd pixel after (bottom/right); a RESHAPE to [batch, features] is a channels-last flatten.
Fused activations (RELU, RELU6, TANH) go onto the op's layer.
"""
from __future__ import annotations

import numpy as np

from pipeline.errors import fail
from pipeline.importers.common import check_leaky_alpha, no_dilation, tf_padding

FUSED = {0: "identity", 1: "relu", 3: "relu6", 4: "tanh"}  # ActivationFunctionType -> our name
FUSED_NAMES = {2: "RELU_N1_TO_1", 5: "SIGN_BIT"}
PADDING = {0: "same", 1: "valid"}  # schema Padding enum


def _io(op):
    return int(op.inputs[0]), int(op.outputs[0])


def _fused(graph, op, chain, where: str) -> None:
    code = getattr(op.builtinOptions, "fusedActivationFunction", 0) if op.builtinOptions else 0
    if code not in FUSED:
        raise fail(graph.source, f"{where}: fused activation {FUSED_NAMES.get(code, code)} is not supported")
    out = int(op.outputs[0])
    chain.activation(out, out, FUSED[code], where)


def _fully_connected(graph, op, chain, where):
    opts = op.builtinOptions
    if opts is not None and getattr(opts, "weightsFormat", 0) != 0:
        raise fail(graph.source, f"{where}: shuffled/packed weight format is not supported")
    weights = graph.constant(op.inputs[1], where)  # [out, in]
    if weights.ndim != 2:
        raise fail(graph.source, f"{where}: weights must be 2-D, got {list(weights.shape)}")
    bias = graph.constant(op.inputs[2], where) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    src, out = _io(op)
    shape = chain.shape(src, where)
    if shape is not None and len(shape) > 1:  # FC flattens its input itself
        if getattr(opts, "keepNumDims", False):
            raise fail(graph.source, f"{where}: a fully connected op on an image with keepNumDims is not supported")
        chain.flatten(src, (src, "flat"), where, "channels_last")
        src = (src, "flat")
    chain.linear(src, out, weights.T, bias, where)
    _fused(graph, op, chain, where)


def _add(graph, op, chain, where):
    a, b = (int(t) for t in op.inputs)
    out = int(op.outputs[0])
    if chain.has(a) and chain.has(b):
        chain.add(a, b, out, where)
    else:
        data, other = (a, b) if chain.has(a) else (b, a)
        chain.add_bias(data, out, graph.constant(other, where), where)
    _fused(graph, op, chain, where)


def _padding(graph, op, chain, where, kernel, stride):
    opts = op.builtinOptions
    no_dilation([getattr(opts, "dilationHFactor", 1), getattr(opts, "dilationWFactor", 1)], graph.source, where)
    size = chain.shape(int(op.inputs[0]), where, image=True)[:2]
    return tf_padding(PADDING.get(opts.padding, opts.padding), size, kernel, stride, graph.source, where)


def _conv(graph, op, chain, where):
    filters = graph.constant(op.inputs[1], where)  # [out, kh, kw, in]
    src, out = _io(op)
    channels = chain.shape(src, where, image=True)[2]
    if filters.ndim != 4 or filters.shape[3] != channels:
        raise fail(graph.source, f"{where}: filter {list(filters.shape)} on {channels} channels: grouped "
                                 "convolutions are not supported (only groups 1 or DEPTHWISE_CONV_2D)")
    stride = (op.builtinOptions.strideH, op.builtinOptions.strideW)
    pads = _padding(graph, op, chain, where, filters.shape[1:3], stride)
    bias = graph.constant(op.inputs[2], where) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    chain.conv(src, out, filters.transpose(0, 3, 1, 2), bias, stride, pads, where)
    _fused(graph, op, chain, where)


def _depthwise(graph, op, chain, where):
    filters = graph.constant(op.inputs[1], where)  # [1, kh, kw, c * multiplier]
    src, out = _io(op)
    channels = chain.shape(src, where, image=True)[2]
    if filters.ndim != 4 or filters.shape[3] != channels:
        raise fail(graph.source, f"{where}: depth multiplier {filters.shape[-1] / channels:g} is not supported "
                                 "(only 1)")
    stride = (op.builtinOptions.strideH, op.builtinOptions.strideW)
    pads = _padding(graph, op, chain, where, filters.shape[1:3], stride)
    bias = graph.constant(op.inputs[2], where) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    chain.conv(src, out, filters[0].transpose(2, 0, 1)[:, None], bias, stride, pads, where, depthwise=True)
    _fused(graph, op, chain, where)


def _pool(kind):
    def handler(graph, op, chain, where):
        opts = op.builtinOptions
        size, stride = (opts.filterHeight, opts.filterWidth), (opts.strideH, opts.strideW)
        chain.pool(*_io(op), kind, size, stride, _padding(graph, op, chain, where, size, stride), where)
        _fused(graph, op, chain, where)
    return handler


def _mean(graph, op, chain, where):
    axes = sorted(int(a) % 4 for a in graph.constant(op.inputs[1], where).ravel())
    if axes != [1, 2]:
        raise fail(graph.source, f"{where}: MEAN over axes {axes} is not supported (only [1, 2], a global "
                                 "average pool)")
    chain.global_pool(*_io(op), where)


def _pad(graph, op, chain, where):
    pads = graph.constant(op.inputs[1], where).reshape(-1, 2)
    value = graph.constant(op.inputs[2], where) if len(op.inputs) > 2 and op.inputs[2] >= 0 else 0.0
    if pads.shape != (4, 2) or pads[0].any() or pads[3].any() or float(np.asarray(value).reshape(())) != 0.0:
        raise fail(graph.source, f"{where}: only zero padding of the spatial axes is supported")
    chain.zero_pad(*_io(op), (pads[1, 0], pads[1, 1], pads[2, 0], pads[2, 1]), where)


def _reshape(graph, op, chain, where):
    out = graph.shape(op.outputs[0])
    if len(out) != 2:
        raise fail(graph.source, f"{where}: RESHAPE to {out} is not supported (only to [batch, features])")
    chain.flatten(*_io(op), where, "channels_last")


def _squeeze(graph, op, chain, where):
    shape = chain.shape(int(op.inputs[0]), where)
    if shape is None or len(shape) != 1:
        raise fail(graph.source, f"{where}: SQUEEZE of the layer data is only supported after a global pool")
    chain.alias(*_io(op), where)


def _leaky(graph, op, chain, where):
    chain.activation(*_io(op), check_leaky_alpha(op.builtinOptions.alpha, graph.source, where), where)


def _softmax(graph, op, chain, where):
    if op.builtinOptions is not None and float(op.builtinOptions.beta) != 1.0:
        raise fail(graph.source, f"{where}: SOFTMAX with beta {op.builtinOptions.beta} is not supported")
    chain.output(*_io(op), "softmax", where)


def _activation(name):
    return lambda graph, op, chain, where: chain.activation(*_io(op), name, where)


# builtin op name -> handler(graph, op, chain, where)
HANDLERS = {
    "FULLY_CONNECTED": _fully_connected, "ADD": _add,
    "CONV_2D": _conv, "DEPTHWISE_CONV_2D": _depthwise,
    "MAX_POOL_2D": _pool("max"), "AVERAGE_POOL_2D": _pool("avg"), "MEAN": _mean,
    "PAD": _pad, "PADV2": _pad, "RESHAPE": _reshape, "SQUEEZE": _squeeze,
    "RELU": _activation("relu"), "RELU6": _activation("relu6"), "TANH": _activation("tanh"),
    "LOGISTIC": _activation("sigmoid"), "LEAKY_RELU": _leaky, "SOFTMAX": _softmax,
    "LOG_SOFTMAX": lambda graph, op, chain, where: chain.output(*_io(op), "log_softmax", where),
}
