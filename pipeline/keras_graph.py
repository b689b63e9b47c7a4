"""Any model description as a functional Keras model (channels-last, like the description), and back.

Layer i of the description is the Keras layer named `L<i>` (plus `L<i>_pad` / `L<i>_act` helpers
where Keras needs a separate layer for asymmetric padding or an activation), so `describe` can
read trained weights back by name. The model takes flat input [n, features] and reshapes it.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from pipeline.errors import fail
from pipeline.keras_net import BN_MOMENTUM, DENSE_ACTIVATIONS, _keras
from pipeline.layers import (LEAKY_RELU_ALPHA, Add, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Flatten,
                             GlobalAvgPool, Pool2D)
from pipeline.model import Model, validate


def _activate(keras, x, name: str, label: str):
    fused, leaky = DENSE_ACTIVATIONS[name]
    if leaky:
        return keras.layers.LeakyReLU(negative_slope=LEAKY_RELU_ALPHA, name=f"{label}_act")(x)
    return x if fused == "linear" else keras.layers.Activation(fused, name=f"{label}_act")(x)


def _padded(keras, x, pads, label: str):
    top, bottom, left, right = pads
    return keras.layers.ZeroPadding2D(((top, bottom), (left, right)), name=f"{label}_pad")(x) if any(pads) else x


def _apply(keras, i: int, layer, xs):
    label, x = f"L{i}", xs[0]
    if isinstance(layer, Dense):
        out = keras.layers.Dense(layer.shape[1], name=label)(x)
    elif isinstance(layer, Conv2D):
        out = keras.layers.Conv2D(layer.out_channels, layer.kernel, strides=layer.stride, padding="valid",
                                  name=label)(_padded(keras, x, layer.pads, label))
    elif isinstance(layer, DepthwiseConv2D):
        out = keras.layers.DepthwiseConv2D(layer.kernel, strides=layer.stride, padding="valid",
                                           name=label)(_padded(keras, x, layer.pads, label))
    elif isinstance(layer, BatchNorm):
        out = keras.layers.BatchNormalization(epsilon=layer.eps, momentum=BN_MOMENTUM, name=label)(x)
    elif isinstance(layer, Pool2D):
        if any(layer.pads):
            raise fail(label, "padded pooling cannot be trained in Keras (fine-tune in torch)")
        cls = keras.layers.MaxPooling2D if layer.op == "max" else keras.layers.AveragePooling2D
        return cls(layer.size, strides=layer.stride, padding="valid", name=label)(x)
    elif isinstance(layer, GlobalAvgPool):
        return keras.layers.GlobalAveragePooling2D(name=label)(x)
    elif isinstance(layer, Flatten):
        if layer.layout == "channels_first" and len(x.shape) == 4:
            x = keras.layers.Permute((3, 1, 2), name=f"{label}_pad")(x)
        return keras.layers.Flatten(name=label)(x)
    else:
        out = keras.layers.Add(name=label)(list(xs))
    return _activate(keras, out, layer.activation, label)


def to_functional(model: Model):
    """A functional Keras model computing `model.forward` from flat input, weights copied in."""
    keras = _keras()
    validate(model)
    inp = keras.Input(shape=(model.input_dim,), dtype="float32", name="input")
    values = {-1: keras.layers.Reshape(model.input_shape, name="input_shape")(inp)}
    for i, layer in enumerate(model.layers):
        values[i] = _apply(keras, i, layer, [values[j] for j in model.sources(i)])
    net = keras.Model(inp, values[len(model.layers) - 1], name="prunedge_net")
    for i, layer in enumerate(model.layers):
        weights = _to_keras_weights(layer)
        if weights is not None:
            net.get_layer(f"L{i}").set_weights(weights)
    return net


def _to_keras_weights(layer):
    if isinstance(layer, Dense):
        return [np.asarray(layer.dense_weight(), np.float32), layer.bias]
    if isinstance(layer, Conv2D):
        return [layer.dense_weight().transpose(2, 3, 1, 0), layer.bias]  # OIHW -> HWIO
    if isinstance(layer, DepthwiseConv2D):
        return [layer.weight.transpose(2, 3, 0, 1), layer.bias]  # [c, 1, kh, kw] -> [kh, kw, c, 1]
    if isinstance(layer, BatchNorm):
        return [layer.gamma, layer.beta, layer.mean, layer.var]
    return None


def describe(net, template: Model, meta: dict | None = None) -> Model:
    """`template` with the trained weights of the functional model `to_functional(template)` built."""
    layers = []
    for i, layer in enumerate(template.layers):
        if isinstance(layer, (Dense, Conv2D, DepthwiseConv2D, BatchNorm)):
            w = [np.ascontiguousarray(a, dtype=np.float32) for a in net.get_layer(f"L{i}").get_weights()]
            if isinstance(layer, Dense):
                layer = replace(layer, weight=w[0], bias=w[1])
            elif isinstance(layer, Conv2D):
                layer = replace(layer, weight=np.ascontiguousarray(w[0].transpose(3, 2, 0, 1)), bias=w[1])
            elif isinstance(layer, DepthwiseConv2D):
                layer = replace(layer, weight=np.ascontiguousarray(w[0].transpose(2, 3, 0, 1)), bias=w[1])
            else:
                layer = replace(layer, gamma=w[0], beta=w[1], mean=w[2], var=w[3])
        layers.append(layer)
    return validate(Model(tuple(layers), dict(meta or {}), template.input_shape))
