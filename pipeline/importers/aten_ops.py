"""aten op -> handler(chain, call): the one table for TorchScript graphs and torch.export programs.

A `call` is what both walks hand over: `call.src(k)` names the data tensor at argument k,
`call.arg(k, default, name)` is a constant argument (positional k, or keyword `name`; a tensor
comes back as a numpy array; `call.known(k)` says whether it is constant), `call.out` names the output
and `call.where` the op and position.
PyTorch is NCHW: kernels are already [out, in, kh, kw]; padding (ph, pw) is (ph, ph, pw, pw);
padding='same' (stride 1) puts the odd pixel after; a flatten after convolutions is channels-first.
"""
from __future__ import annotations

import numpy as np

from pipeline.errors import fail
from pipeline.importers.common import check_leaky_alpha, clip_activation, no_dilation, pair, same_pads

CHANNELS_FIRST = "channels_first"


def _weight(call, k):
    value = call.arg(k)
    if value is None or not isinstance(value, np.ndarray):
        raise fail(call.source, f"{call.where}: weight is computed at run time, not stored")
    return value


def _linear(chain, call):
    chain.linear(call.src(0), call.out, _weight(call, 1).T, call.arg(2), call.where)


def _torch_pads(chain, call, padding, kernel, stride) -> tuple:
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same" or stride != (1, 1):
            raise fail(call.source, f"{call.where}: padding {padding!r} with stride {list(stride)} is not supported")
        return same_pads(chain.shape(call.src(0), call.where, image=True)[:2], kernel, stride)
    ph, pw = pair(padding, call.source, call.where, "padding")
    return (ph, ph, pw, pw)


def _convolution(groups_at: int, transposed_at: int | None):
    def handler(chain, call):
        if transposed_at is not None and call.arg(transposed_at, False):
            raise fail(call.source, f"{call.where}: transposed convolution is not supported")
        w = _weight(call, 1)
        if w.ndim != 4:
            raise fail(call.source, f"{call.where}: only 2-D convolutions are supported, got weight {list(w.shape)}")
        stride = pair(call.arg(3, 1), call.source, call.where, "stride")
        no_dilation(call.arg(5, 1), call.source, call.where)
        pads = _torch_pads(chain, call, call.arg(4, 0), tuple(w.shape[2:]), stride)
        groups, channels = int(call.arg(groups_at, 1)), chain.shape(call.src(0), call.where, image=True)[2]
        if groups == 1:
            return chain.conv(call.src(0), call.out, w, call.arg(2), stride, pads, call.where)
        if groups != channels or w.shape[1] != 1:
            raise fail(call.source, f"{call.where}: groups {groups} is not supported (only 1, or depthwise: "
                                    f"groups = the {channels} input channels)")
        if w.shape[0] != channels:
            raise fail(call.source, f"{call.where}: depthwise channel multiplier {w.shape[0] // channels} is not "
                                    "supported (only 1)")
        chain.conv(call.src(0), call.out, w, call.arg(2), stride, pads, call.where, depthwise=True)
    return handler


def _batch_norm(chain, call):
    if call.arg(5, False):
        raise fail(call.source, f"{call.where}: batch_norm in training mode (call model.eval() before saving)")
    mean, var = call.arg(3), call.arg(4)
    if not isinstance(mean, np.ndarray) or not isinstance(var, np.ndarray):
        raise fail(call.source, f"{call.where}: batch_norm without running statistics is not supported")
    gamma, beta = call.arg(1), call.arg(2)
    gamma = np.ones_like(mean) if gamma is None else gamma
    beta = np.zeros_like(mean) if beta is None else beta
    chain.batchnorm(call.src(0), call.out, gamma, beta, mean, var, call.arg(7, 1e-5), call.where)


def _pool(op):
    def handler(chain, call):
        kernel = pair(call.arg(1), call.source, call.where, "kernel_size")
        stride = pair(call.arg(2) or kernel, call.source, call.where, "stride")  # [] means the kernel
        ph, pw = pair(call.arg(3, 0), call.source, call.where, "padding")
        if op == "max":
            no_dilation(call.arg(4, 1), call.source, call.where)
        if call.arg(5 if op == "max" else 4, False):
            raise fail(call.source, f"{call.where}: ceil_mode=True is not supported")
        if op == "avg" and call.arg(6, None) is not None:
            raise fail(call.source, f"{call.where}: divisor_override is not supported")
        chain.pool(call.src(0), call.out, op, kernel, stride, (ph, ph, pw, pw), call.where)
    return handler


def _adaptive_avg(chain, call):
    size = [int(s) for s in np.atleast_1d(call.arg(1))]
    if size not in ([1], [1, 1]):
        raise fail(call.source, f"{call.where}: adaptive average pooling to {size} is not supported (only 1x1)")
    chain.global_pool(call.src(0), call.out, call.where)


def _mean(chain, call):
    dims = sorted(int(d) % 4 for d in np.atleast_1d(call.arg(1, [])))
    if dims != [2, 3]:
        raise fail(call.source, f"{call.where}: mean over dims {dims} is not supported (only [2, 3], a global "
                                "average pool)")
    chain.global_pool(call.src(0), call.out, call.where)


def _add(chain, call):
    if call.arg(2, 1, "alpha") != 1:
        raise fail(call.source, f"{call.where}: add with alpha {call.arg(2, 1, 'alpha')} is not supported")
    if chain.has(call.src(1)):
        return chain.add(call.src(0), call.src(1), call.out, call.where)
    chain.add_bias(call.src(0), call.out, call.arg(1), call.where)


def _pad(value_at: int):
    def handler(chain, call):
        pad = [int(p) for p in call.arg(1)]
        mode = call.arg(2, "constant", "mode") if value_at == 3 else "constant"
        if len(pad) != 4 or mode != "constant" or float(call.arg(value_at, 0.0, "value") or 0.0) != 0.0:
            raise fail(call.source, f"{call.where}: only constant zero padding of height and width is supported")
        chain.zero_pad(call.src(0), call.out, (pad[2], pad[3], pad[0], pad[1]), call.where)
    return handler


def _flatten(chain, call):
    if call.arg(1, 0) != 1 or call.arg(2, -1) != -1:
        raise fail(call.source, f"{call.where}: flatten({call.arg(1)}, {call.arg(2)}) is not supported (only 1..-1)")
    chain.flatten(call.src(0), call.out, call.where, CHANNELS_FIRST)


def _reshape(chain, call):
    shape = call.arg(1) if call.known(1) else None  # x.view(x.size(0), -1) computes it
    if isinstance(shape, (list, tuple)) and len(shape) != 2:
        raise fail(call.source, f"{call.where}: reshape to {list(shape)} is not supported (only [batch, features])")
    chain.flatten(call.src(0), call.out, call.where, CHANNELS_FIRST)


def _squeeze(chain, call):
    shape = chain.shape(call.src(0), call.where)
    if shape is None or len(shape) != 1:
        raise fail(call.source, f"{call.where}: squeeze of the layer data is only supported after a global pool")
    chain.alias(call.src(0), call.out, call.where)


def _softmax(name):
    def handler(chain, call):
        if call.arg(1) not in (1, -1) or call.arg(2) is not None:
            raise fail(call.source, f"{call.where}: {name} over dim {call.arg(1)} / dtype {call.arg(2)} "
                                    "is not supported")
        chain.output(call.src(0), call.out, name, call.where)
    return handler


def _dropout(chain, call):
    if call.arg(2, False) is not False:
        raise fail(call.source, f"{call.where}: dropout in training mode")
    chain.alias(call.src(0), call.out, call.where)


def _activation(name):
    return lambda chain, call: chain.activation(call.src(0), call.out, name, call.where)


def _clip(low_at, high_at, low=None, high=None):
    def handler(chain, call):
        name = clip_activation(call.arg(low_at, low), call.arg(high_at, high), call.source, call.where)
        chain.activation(call.src(0), call.out, name, call.where)
    return handler


def _leaky(chain, call):
    chain.activation(call.src(0), call.out, check_leaky_alpha(call.arg(1, 0.01), call.source, call.where), call.where)


# aten op (in-place variants share the handler) -> handler(chain, call)
HANDLERS = {
    "aten::linear": _linear,
    "aten::conv2d": _convolution(6, None), "aten::_convolution": _convolution(8, 6),
    "aten::_convolution_mode": _convolution(6, None),  # traced padding='same'/'valid'
    "aten::batch_norm": _batch_norm,
    "aten::max_pool2d": _pool("max"), "aten::avg_pool2d": _pool("avg"),
    "aten::adaptive_avg_pool2d": _adaptive_avg, "aten::mean": _mean,
    "aten::add": _add, "aten::constant_pad_nd": _pad(2), "aten::pad": _pad(3),
    "aten::relu": _activation("relu"), "aten::relu6": _activation("relu6"),
    "aten::hardtanh": _clip(1, 2, -1.0, 1.0), "aten::clamp": _clip(1, 2),
    "aten::tanh": _activation("tanh"), "aten::sigmoid": _activation("sigmoid"), "aten::leaky_relu": _leaky,
    "aten::softmax": _softmax("softmax"), "aten::log_softmax": _softmax("log_softmax"),
    "aten::flatten": _flatten, "aten::reshape": _reshape, "aten::view": _reshape, "aten::squeeze": _squeeze,
    "aten::dropout": _dropout, "aten::feature_dropout": _dropout,
    **{op: lambda chain, call: chain.alias(call.src(0), call.out, call.where)
       for op in ("aten::contiguous", "aten::detach", "aten::clone")},
}
