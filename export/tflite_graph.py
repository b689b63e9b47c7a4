"""The description as a TensorFlow function (channels-last, like TFLite), for the one TFLite converter.

Each layer becomes the TF ops TFLite fuses into one kernel where it can: conv/depthwise with 'SAME'
or 'VALID' padding when the explicit pads are exactly that (else an explicit PAD), matmul + bias +
activation for FULLY_CONNECTED, reduce_mean for the global average, reshape (after a transpose for
channels-first features) for Flatten.
"""
from __future__ import annotations

import numpy as np

from pipeline.layers import (LEAKY_RELU_ALPHA, Add, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Flatten,
                             GlobalAvgPool, Pool2D)


def activations(tf) -> dict:
    return {"relu": tf.nn.relu, "identity": lambda z: z, "tanh": tf.math.tanh, "sigmoid": tf.math.sigmoid,
            "relu6": tf.nn.relu6, "leaky_relu": lambda z: tf.nn.leaky_relu(z, alpha=LEAKY_RELU_ALPHA)}


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF's 'SAME' padding along one axis: (before, after), the extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def padding(tf, x, pads, kernel, stride, value: float = 0.0):
    """(input, padding string): 'VALID', 'SAME' when the pads equal TF's, else an explicit pad first."""
    if not any(pads):
        return x, "VALID"
    h, w = int(x.shape[1]), int(x.shape[2])
    if pads == same_pads(h, kernel[0], stride[0]) + same_pads(w, kernel[1], stride[1]) and value == 0.0:
        return x, "SAME"
    top, bottom, left, right = pads
    return tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=value), "VALID"


def _dense(tf, layer, x):
    return tf.matmul(x, tf.constant(layer.dense_weight())) + tf.constant(layer.bias)


def _conv(tf, layer, x):
    x, pad = padding(tf, x, layer.pads, layer.kernel, layer.stride)
    kernel = tf.constant(np.ascontiguousarray(layer.dense_weight().transpose(2, 3, 1, 0)))  # OIHW -> HWIO
    return tf.nn.conv2d(x, kernel, strides=[1, *layer.stride, 1], padding=pad) + tf.constant(layer.bias)


def _depthwise(tf, layer, x):
    x, pad = padding(tf, x, layer.pads, layer.kernel, layer.stride)
    kernel = tf.constant(np.ascontiguousarray(layer.weight.transpose(2, 3, 0, 1)))  # -> [kh, kw, c, 1]
    return tf.nn.depthwise_conv2d(x, kernel, strides=[1, *layer.stride, 1], padding=pad) + tf.constant(layer.bias)


def _batchnorm(tf, layer, x):
    s, t = layer.scale_shift()
    return x * tf.constant(s.astype(np.float32)) + tf.constant(t.astype(np.float32))


def _pool(tf, layer, x):
    x, pad = padding(tf, x, layer.pads, layer.size, layer.stride, value=-np.inf if layer.op == "max" else 0.0)
    fn = tf.nn.max_pool2d if layer.op == "max" else tf.nn.avg_pool2d
    return fn(x, ksize=list(layer.size), strides=list(layer.stride), padding=pad)


def _flatten(tf, layer, x):
    if layer.layout == "channels_first":
        x = tf.transpose(x, [0, 3, 1, 2])
    return tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])


OPS = {Dense: _dense, Conv2D: _conv, DepthwiseConv2D: _depthwise, BatchNorm: _batchnorm, Pool2D: _pool,
       GlobalAvgPool: lambda tf, layer, x: tf.reduce_mean(x, axis=[1, 2]), Flatten: _flatten}


def forward(tf, model, x):
    """The model's logits as TF ops on x [batch, *input_shape]."""
    acts = activations(tf)
    values = {-1: x}
    for i, layer in enumerate(model.layers):
        xs = [values[j] for j in model.sources(i)]
        z = xs[0] + xs[1] if isinstance(layer, Add) else OPS[type(layer)](tf, layer, xs[0])
        values[i] = acts[getattr(layer, "activation", "identity")](z)
    return values[len(model.layers) - 1]
