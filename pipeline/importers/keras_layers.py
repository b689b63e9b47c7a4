"""Keras class name -> handler(layer, chain, where, srcs, out): one row per supported layer.

Keras is channels-last like the description: kernels [kh, kw, in, out] become [out, in, kh, kw],
'same' padding puts the odd pixel after (bottom/right), Flatten is channels-last. A layer's
own `activation` goes onto the layer it belongs to.
"""
from __future__ import annotations

import numpy as np

from pipeline.errors import fail
from pipeline.importers.common import check_leaky_alpha, no_dilation, pair, tf_padding

# Keras activation names -> prunedge names (softmax/log_softmax become the output transform).
KERAS_ACTIVATIONS = {"linear": "identity", "relu": "relu", "relu6": "relu6", "tanh": "tanh",
                     "sigmoid": "sigmoid", "softmax": "softmax", "log_softmax": "log_softmax"}
INFERENCE_IDENTITY = {"InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
                      "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity"}
KERAS_LEAKY_DEFAULT = 0.2  # keras.activations.leaky_relu's own default slope


def _activation_name(fn, chain, where: str) -> str:
    import keras
    name = keras.activations.serialize(fn)
    name = name if isinstance(name, str) else str(name.get("config", name))
    if name == "leaky_relu":  # the function form carries its default slope, 0.2
        return check_leaky_alpha(KERAS_LEAKY_DEFAULT, chain.source, where)
    if name not in KERAS_ACTIVATIONS:
        raise fail(chain.source, f"{where}: activation {name!r} is not supported "
                                 f"(supported: {', '.join(KERAS_ACTIVATIONS)}, LeakyReLU(0.01))")
    return KERAS_ACTIVATIONS[name]


def _own_activation(layer, chain, where, out) -> None:
    chain.activation(out, out, _activation_name(layer.activation, chain, where), where)


def _np(variable) -> np.ndarray:
    return np.asarray(variable.numpy())


def _bias(layer):
    return _np(layer.bias) if getattr(layer, "use_bias", True) and layer.bias is not None else None


def _channels_last(layer, chain, where) -> dict:
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise fail(chain.source, f"{where}: data_format {cfg['data_format']!r} is not supported (only channels_last)")
    return cfg


def _dense(layer, chain, where, srcs, out):
    if getattr(layer, "quantization_mode", None):
        raise fail(chain.source, f"{where}: quantized Dense ({layer.quantization_mode}) is not supported")
    chain.linear(srcs[0], out, _np(layer.kernel), _bias(layer), where)  # Keras kernels are already [in, out]
    _own_activation(layer, chain, where, out)


def _window(layer, chain, where, srcs, kernel):
    cfg = _channels_last(layer, chain, where)
    no_dilation(cfg.get("dilation_rate", 1), chain.source, where)
    stride = pair(cfg.get("strides") or kernel, chain.source, where, "strides")
    size = chain.shape(srcs[0], where, image=True)[:2]
    return stride, tf_padding(cfg.get("padding", "valid"), size, kernel, stride, chain.source, where)


def _conv(layer, chain, where, srcs, out):
    kernel = _np(layer.kernel)  # [kh, kw, in / groups, out]
    if int(layer.get_config().get("groups", 1)) != 1:
        raise fail(chain.source, f"{where}: groups {layer.get_config()['groups']} is not supported (only 1; "
                                 "use DepthwiseConv2D for depthwise)")
    stride, pads = _window(layer, chain, where, srcs, kernel.shape[:2])
    chain.conv(srcs[0], out, kernel.transpose(3, 2, 0, 1), _bias(layer), stride, pads, where)
    _own_activation(layer, chain, where, out)


def _depthwise(layer, chain, where, srcs, out):
    kernel = _np(layer.kernel)  # [kh, kw, c, multiplier]
    if kernel.shape[3] != 1:
        raise fail(chain.source, f"{where}: depth_multiplier {kernel.shape[3]} is not supported (only 1)")
    stride, pads = _window(layer, chain, where, srcs, kernel.shape[:2])
    chain.conv(srcs[0], out, kernel.transpose(2, 3, 0, 1), _bias(layer), stride, pads, where, depthwise=True)
    _own_activation(layer, chain, where, out)


def _batchnorm(layer, chain, where, srcs, out):
    cfg = layer.get_config()
    rank = len(chain.shape(srcs[0], where) or ()) + 1
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if axis not in (-1, rank - 1) or cfg.get("renorm"):
        raise fail(chain.source, f"{where}: BatchNormalization over axis {axis} (or with renorm) is not "
                                 "supported (only the channel axis, -1)")
    c = int(_np(layer.moving_mean).size)
    gamma = _np(layer.gamma) if layer.scale else np.ones(c, np.float32)
    beta = _np(layer.beta) if layer.center else np.zeros(c, np.float32)
    chain.batchnorm(srcs[0], out, gamma, beta, _np(layer.moving_mean), _np(layer.moving_variance),
                    cfg.get("epsilon", 1e-3), where)


def _pool(op):
    def handler(layer, chain, where, srcs, out):
        size = pair(layer.get_config().get("pool_size", 2), chain.source, where, "pool_size")
        stride, pads = _window(layer, chain, where, srcs, size)
        chain.pool(srcs[0], out, op, size, stride, pads, where)
    return handler


def _global_pool(layer, chain, where, srcs, out):
    _channels_last(layer, chain, where)
    chain.global_pool(srcs[0], out, where)  # keepdims=True is [1, 1, c]: a following Flatten is a no-op


def _zero_padding(layer, chain, where, srcs, out):
    (top, bottom), (left, right) = (pair(p, chain.source, where, "padding")
                                    for p in _channels_last(layer, chain, where)["padding"])
    chain.zero_pad(srcs[0], out, (top, bottom, left, right), where)


def _add(layer, chain, where, srcs, out):
    if len(srcs) != 2:
        raise fail(chain.source, f"{where}: an Add of {len(srcs)} tensors is not supported (only 2, residual)")
    chain.add(srcs[0], srcs[1], out, where)


def _activation_layer(layer, chain, where, srcs, out):
    chain.activation(srcs[0], out, _activation_name(layer.activation, chain, where), where)


def _relu_layer(layer, chain, where, srcs, out):
    cfg = layer.get_config()
    cap = cfg.get("max_value")
    if cap not in (None, 6, 6.0) or float(cfg.get("threshold", 0.0)) != 0.0:
        raise fail(chain.source, f"{where}: ReLU with max_value {cap} / threshold {cfg.get('threshold')} is not "
                                 "supported (only max_value 6: relu6)")
    slope = float(cfg.get("negative_slope", 0.0))
    if cap is not None and slope:
        raise fail(chain.source, f"{where}: ReLU with both max_value and negative_slope is not supported")
    name = "relu6" if cap is not None else "relu" if slope == 0.0 else check_leaky_alpha(slope, chain.source, where)
    chain.activation(srcs[0], out, name, where)


def _leaky_layer(layer, chain, where, srcs, out):
    cfg = layer.get_config()
    slope = cfg.get("negative_slope", cfg.get("alpha", KERAS_LEAKY_DEFAULT))
    chain.activation(srcs[0], out, check_leaky_alpha(slope, chain.source, where), where)


def _softmax_layer(layer, chain, where, srcs, out):
    axis = layer.get_config().get("axis", -1)
    if axis not in (-1, 1, [-1], [1]):
        raise fail(chain.source, f"{where}: Softmax over axis {axis} is not supported")
    chain.output(srcs[0], out, "softmax", where)


def _flatten_layer(layer, chain, where, srcs, out):
    _channels_last(layer, chain, where)
    chain.flatten(srcs[0], out, where, "channels_last")


def _reshape_layer(layer, chain, where, srcs, out):
    target = layer.get_config().get("target_shape")
    if target is not None and len(target) != 1:
        raise fail(chain.source, f"{where}: Reshape to {list(target)} is not supported "
                                 "(only to [features])")
    chain.flatten(srcs[0], out, where, "channels_last")


# Keras class name -> handler(layer, chain, where, srcs, out).
HANDLERS = {
    "Dense": _dense, "Conv2D": _conv, "DepthwiseConv2D": _depthwise, "BatchNormalization": _batchnorm,
    "MaxPooling2D": _pool("max"), "AveragePooling2D": _pool("avg"), "GlobalAveragePooling2D": _global_pool,
    "ZeroPadding2D": _zero_padding, "Add": _add,
    "Activation": _activation_layer, "ReLU": _relu_layer, "LeakyReLU": _leaky_layer, "Softmax": _softmax_layer,
    "Flatten": _flatten_layer, "Reshape": _reshape_layer,
    **{name: lambda layer, chain, where, srcs, out: chain.alias(srcs[0], out, where) for name in INFERENCE_IDENTITY},
}
