"""Keras `.keras`/`.h5` files and TensorFlow SavedModel directories -> layers.

Keras files are loaded with `safe_mode=True` (no Lambda bytecode) and walked layer by
layer: Dense (+ its activation), Activation/ReLU/LeakyReLU/Softmax layers, InputLayer,
Flatten/Reshape at the input, Dropout-like layers (identity at inference). Nested
Sequential/Functional models are walked recursively; every model must be a single chain.
A SavedModel holds graphs, not layers, so it is converted to TFLite in memory (fp32,
no optimisation: the weights are copied bit for bit) and read by the TFLite importer.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.errors import fail
from pipeline.importers.chain import Chain, check_leaky_alpha

# Keras activation names -> prunedge names (softmax/log_softmax become the output transform).
KERAS_ACTIVATIONS = {"linear": "identity", "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid",
                     "softmax": "softmax", "log_softmax": "log_softmax"}
INFERENCE_IDENTITY = {"InputLayer", "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout",
                      "AlphaDropout", "ActivityRegularization", "Identity"}
KERAS_LEAKY_DEFAULT = 0.2  # keras.activations.leaky_relu's own default slope


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _activation_name(fn, chain: Chain, where: str) -> str:
    import keras
    name = keras.activations.serialize(fn)
    name = name if isinstance(name, str) else str(name.get("config", name))
    if name == "leaky_relu":  # the function form carries its default slope, 0.2
        return check_leaky_alpha(KERAS_LEAKY_DEFAULT, chain.source, where)
    if name not in KERAS_ACTIVATIONS:
        raise fail(chain.source, f"{where}: activation {name!r} is not supported "
                                 f"(supported: {', '.join(KERAS_ACTIVATIONS)}, LeakyReLU(0.01))")
    return KERAS_ACTIVATIONS[name]


def _dense(layer, chain, where):
    if getattr(layer, "quantization_mode", None):
        raise fail(chain.source, f"{where}: quantized Dense ({layer.quantization_mode}) is not supported")
    shape = _input_shape(layer)
    if shape is not None and len(shape) != 2:
        raise fail(chain.source, f"{where}: Dense on a {len(shape)}-D input {list(shape)} is not "
                                 "supported (flatten to [batch, features] first)")
    kernel = np.asarray(layer.kernel.numpy())
    bias = np.asarray(layer.bias.numpy()) if layer.use_bias else None
    chain.linear(kernel, bias, where)  # Keras kernels are already [in, out]
    chain.activation(_activation_name(layer.activation, chain, where), where)


def _activation_layer(layer, chain, where):
    chain.activation(_activation_name(layer.activation, chain, where), where)


def _relu_layer(layer, chain, where):
    cfg = layer.get_config()
    if cfg.get("max_value") is not None or float(cfg.get("threshold", 0.0)) != 0.0:
        raise fail(chain.source, f"{where}: ReLU with max_value/threshold is not supported")
    slope = float(cfg.get("negative_slope", 0.0))
    chain.activation("relu" if slope == 0.0 else check_leaky_alpha(slope, chain.source, where), where)


def _leaky_layer(layer, chain, where):
    cfg = layer.get_config()
    slope = cfg.get("negative_slope", cfg.get("alpha", KERAS_LEAKY_DEFAULT))
    chain.activation(check_leaky_alpha(slope, chain.source, where), where)


def _softmax_layer(layer, chain, where):
    axis = layer.get_config().get("axis", -1)
    if axis not in (-1, 1, [-1], [1]):
        raise fail(chain.source, f"{where}: Softmax over axis {axis} is not supported")
    chain.output("softmax", where)


def _reshape_layer(layer, chain, where):
    target = layer.get_config().get("target_shape")
    if target is not None and len(target) != 1:
        raise fail(chain.source, f"{where}: Reshape to {list(target)} is not supported "
                                 "(only to [features] at the input)")
    chain.flatten(where)


# Keras class name -> handler(layer, chain, where).
HANDLERS = {
    "Dense": _dense,
    "Activation": _activation_layer,
    "ReLU": _relu_layer,
    "LeakyReLU": _leaky_layer,
    "Softmax": _softmax_layer,
    "Flatten": lambda layer, chain, where: chain.flatten(where),
    "Reshape": _reshape_layer,
    **{name: lambda layer, chain, where: None for name in INFERENCE_IDENTITY},
}


def _input_shape(layer):
    try:
        return tuple(layer.input.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def _flat_layers(model, prefix=""):
    """(position, layer) of every leaf layer, nested models expanded, in chain order."""
    import keras
    out = []
    for i, layer in enumerate(model.layers):
        pos = f"{prefix}{i}"
        if isinstance(layer, keras.Model):
            out.extend(_flat_layers(layer, prefix=f"{pos}."))
        else:
            out.append((pos, layer))
    return out


def _check_single_chain(model, source) -> None:
    """Functional models must be a straight line: each layer fed only by the one before."""
    import keras
    if isinstance(model, keras.Sequential) or not hasattr(model, "inputs"):
        return
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise fail(source, f"expected one input and one output, got {len(model.inputs)} and {len(model.outputs)}")
    previous = None
    for i, layer in enumerate(model.layers):
        if type(layer).__name__ == "InputLayer":
            previous = layer
            continue
        try:
            feeds_from = layer.input
        except (AttributeError, ValueError, RuntimeError):
            feeds_from = None
        if previous is not None and (isinstance(feeds_from, (list, tuple)) or feeds_from is not previous.output):
            raise fail(source, f"layer {i} '{layer.name}': not fed by the previous layer alone "
                               "(branches, merges and shared layers are not supported)")
        previous = layer
    if previous is not None and model.outputs[0] is not previous.output:
        raise fail(source, "the model output is not the last layer's output")


def _walk(model, source: str):
    import keras
    _check_single_chain(model, source)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _check_single_chain(layer, source)
    leaves = _flat_layers(model)
    unsupported = [f"{type(l).__name__} (layer {pos} '{l.name}')" for pos, l in leaves
                   if type(l).__name__ not in HANDLERS]
    if unsupported:
        raise fail(source, f"unsupported layers: {', '.join(unsupported)}")
    chain = Chain(source)
    for pos, layer in leaves:
        HANDLERS[type(layer).__name__](layer, chain, f"{type(layer).__name__} (layer {pos} '{layer.name}')")
    return chain.result()


def load(path: Path, arch=None):
    """(weights, biases, activations, meta) from a .keras (or legacy .h5) file."""
    _quiet_tf()
    import keras
    try:
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as e:  # zip/h5/deserialisation errors come in many types
        raise fail(path, f"corrupt or unreadable Keras file ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0][:200]})") from None
    return _walk(model, str(path))


def load_saved_model(path: Path, arch=None):
    """(weights, biases, activations, meta) from a SavedModel dir, via an in-memory TFLite."""
    _quiet_tf()
    import tensorflow as tf
    from pipeline.importers import tflite_import
    try:
        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(path)).convert()
    except Exception as e:  # the converter raises ConverterError, OSError, ValueError...
        raise fail(path, f"cannot read SavedModel ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0][:200]})") from None
    return tflite_import.parse(bytes(flatbuffer), str(path))
