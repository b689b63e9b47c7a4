"""The model description as a Keras 3 model (TensorFlow backend), and back.

A fully connected chain is a `keras.Sequential` of `Dense` layers (what training has always built);
relu/relu6/tanh/sigmoid/identity are fused into the Dense layer, leaky_relu is a separate
`LeakyReLU` layer because Keras' built-in leaky_relu uses another slope. Any other model is a
functional model built by `pipeline.keras_graph` (channels-last like the description).
keras/tensorflow are imported inside the functions.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import fail
from pipeline.model import LEAKY_RELU_ALPHA, Model, dense_model

if TYPE_CHECKING:  # pragma: no cover
    import keras
    from pipeline.data import Dataset
    from pipeline.train import TrainConfig

FRAMEWORK = "tf"
BN_MOMENTUM = 0.9  # Keras' convention for torch's momentum 0.1: both follow training alike
# Keras activation-function name (Dense or Activation layer) -> description name.
KERAS_NAMES = {"relu": "relu", "linear": "identity", "tanh": "tanh", "sigmoid": "sigmoid", "relu6": "relu6"}
# Description name -> (activation fused into Dense, whether a LeakyReLU layer follows).
DENSE_ACTIVATIONS = {"relu": ("relu", False), "identity": ("linear", False), "tanh": ("tanh", False),
                     "sigmoid": ("sigmoid", False), "relu6": ("relu6", False), "leaky_relu": ("linear", True)}
SKIPPED_LAYERS = ("InputLayer", "Flatten", "Dropout")  # change nothing at inference


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of logs
    import keras
    if keras.config.backend() != "tensorflow":
        raise fail("KERAS_BACKEND", f"must be 'tensorflow', got {keras.config.backend()!r}")
    return keras


def versions() -> dict:
    keras = _keras()
    import tensorflow as tf
    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def build(widths, activations) -> "keras.Sequential":
    """Fresh network with Keras' default initialisation (seed Keras before calling)."""
    keras = _keras()
    if len(activations) != len(widths) - 1:
        raise fail("activations", f"need {len(widths) - 1} (one per layer), got {len(activations)}")
    layers = [keras.Input(shape=(widths[0],), dtype="float32", name="input")]
    for i, (n_out, act) in enumerate(zip(widths[1:], activations)):
        if act not in DENSE_ACTIVATIONS:
            raise fail("activation", f"unknown activation {act!r} (choose from {', '.join(DENSE_ACTIVATIONS)})")
        fused, leaky = DENSE_ACTIVATIONS[act]
        layers.append(keras.layers.Dense(n_out, activation=fused, name=f"fc{i}"))
        if leaky:
            layers.append(keras.layers.LeakyReLU(negative_slope=LEAKY_RELU_ALPHA, name=f"fc{i}_leaky_relu"))
    return keras.Sequential(layers, name="prunedge_mlp")


def to_keras(model: Model):
    """A float32 Keras network computing the same function as `model.forward` (flat input)."""
    if not model.is_mlp:
        from pipeline.keras_graph import to_functional
        return to_functional(model)
    keras = _keras()
    net = build(model.widths, [layer.activation for layer in model.layers])
    dense = [layer for layer in net.layers if isinstance(layer, keras.layers.Dense)]
    for target, layer in zip(dense, model.layers):
        target.set_weights([np.asarray(layer.dense_weight(), dtype=np.float32), layer.bias])
    return net


def _activation_layer_name(layer) -> str | None:
    """Description name of a standalone Keras activation layer."""
    kind = type(layer).__name__
    if kind == "LeakyReLU":
        if not np.isclose(layer.negative_slope, LEAKY_RELU_ALPHA):
            raise fail("keras model", f"LeakyReLU slope {layer.negative_slope} is not the "
                                      f"supported {LEAKY_RELU_ALPHA}")
        return "leaky_relu"
    if kind == "ReLU" and layer.max_value is None and layer.negative_slope == 0 and layer.threshold == 0:
        return "relu"
    if kind == "Activation" and layer.activation.__name__ in KERAS_NAMES:
        return KERAS_NAMES[layer.activation.__name__]
    raise fail("keras model", f"unsupported layer {kind} {layer.name!r} "
                              "(expected Dense with relu/linear/tanh/sigmoid, or LeakyReLU)")


def from_keras(keras_model, meta: dict | None = None, template: Model | None = None) -> Model:
    """Describe a chain of Dense layers (plus optional activation layers) as a Model; a functional
    model built by `to_keras(template)` is read back layer by layer."""
    if template is not None and not template.is_mlp:
        from pipeline.keras_graph import describe
        return describe(keras_model, template, meta)
    keras = _keras()
    weights, biases, activations = [], [], []
    for layer in keras_model.layers:
        if type(layer).__name__ in SKIPPED_LAYERS:
            continue
        if isinstance(layer, keras.layers.Dense):
            params = layer.get_weights()
            kernel = np.asarray(params[0], dtype=np.float32)
            bias = params[1] if layer.use_bias else np.zeros(kernel.shape[1])
            act = layer.activation.__name__
            if act not in KERAS_NAMES:
                raise fail("keras model", f"Dense layer {layer.name!r} has unsupported activation {act!r}")
            weights.append(kernel)
            biases.append(np.asarray(bias, dtype=np.float32))
            activations.append(KERAS_NAMES[act])
            continue
        name = _activation_layer_name(layer)
        if not activations or activations[-1] != "identity":
            raise fail("keras model", f"activation layer {layer.name!r} must follow a linear Dense layer")
        activations[-1] = name
    if not weights:
        raise fail("keras model", "no Dense layers")
    return dense_model(weights, biases, activations, **(meta or {}))
