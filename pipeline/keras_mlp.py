"""The MLP in Keras 3 (TensorFlow backend): build it, convert to/from the description, train it.

A network is a `keras.Sequential` of `Dense` layers; relu/tanh/sigmoid/identity are fused
into the Dense layer (TFLite keeps them fused), leaky_relu is a separate `LeakyReLU` layer
because Keras' built-in leaky_relu uses another slope. Dense kernels are [in, out] like the
description. keras/tensorflow are imported inside the functions.
"""
from __future__ import annotations

import contextlib
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
# Keras activation-function name (Dense or Activation layer) -> description name.
KERAS_NAMES = {"relu": "relu", "linear": "identity", "tanh": "tanh", "sigmoid": "sigmoid"}
# Description name -> (activation fused into Dense, whether a LeakyReLU layer follows).
DENSE_ACTIVATIONS = {"relu": ("relu", False), "identity": ("linear", False), "tanh": ("tanh", False),
                     "sigmoid": ("sigmoid", False), "leaky_relu": ("linear", True)}
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


def to_keras(model: Model) -> "keras.Sequential":
    """A float32 Keras network computing the same function as `model.forward`."""
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


def from_keras(keras_model, meta: dict | None = None) -> Model:
    """Describe a chain of Dense layers (plus optional activation layers) as a Model."""
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


# ---------------------------------------------------------------- training

@contextlib.contextmanager
def deterministic(seed: int):
    """Seed Python, numpy and TF and make TF ops deterministic; switch op determinism off
    again afterwards if it was off, so later TF work in the process is not constrained."""
    keras = _keras()
    import tensorflow as tf
    try:  # the switch-off and the query are only in TF's private config module
        from tensorflow.python.framework import config as tf_config
        was_on = tf_config.is_op_determinism_enabled()
    except (ImportError, AttributeError):
        tf_config, was_on = None, True
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            tf_config.disable_op_determinism()


def fit(data: "Dataset", *, config: "TrainConfig", seed: int, init: Model | None = None,
        masked: bool = False, progress: bool = True) -> tuple[Model, dict]:
    """Train with Adam on cross-entropy of the logits. Starts from `init` (or a fresh
    network of `config`'s shape); with `masked`, weights that are zero in `init` stay zero.
    Returns the trained description (empty meta) and the per-epoch curves."""
    with deterministic(seed):
        return _fit(data, config=config, seed=seed, init=init, masked=masked, progress=progress)


def _fit(data, *, config, seed, init, masked, progress) -> tuple[Model, dict]:
    keras = _keras()
    import tensorflow as tf
    from pipeline.train import run_epochs

    net = to_keras(init) if init is not None else build(
        config.widths(data.x_train.shape[1], data.n_classes), config.activations())
    variables = net.trainable_variables
    kernels = {id(layer.kernel): layer.kernel for layer in net.layers if isinstance(layer, keras.layers.Dense)}
    # One mask per variable (None: not masked); pruned weights get no gradient, and are
    # re-zeroed after each step so they stay exactly 0.
    masks = [tf.constant((v.numpy() != 0).astype(np.float32)) if masked and id(v) in kernels else None
             for v in variables]
    optimizer = keras.optimizers.Adam(learning_rate=config.lr, epsilon=config.adam_eps)
    optimizer.build(variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    signature = [tf.TensorSpec([None, data.x_train.shape[1]], tf.float32), tf.TensorSpec([None], tf.int64)]

    @tf.function(input_signature=signature)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = net(x, training=True)
            loss = loss_fn(y, logits)
        grads = tape.gradient(loss, variables)
        grads = [g if m is None else g * m for g, m in zip(grads, masks)]
        optimizer.apply_gradients(zip(grads, variables))
        for v, m in zip(variables, masks):
            if m is not None:
                v.assign(v * m)
        return loss, tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1), y), tf.int32))

    @tf.function(input_signature=signature)
    def eval_step(x, y):
        logits = net(x, training=False)
        return loss_fn(y, logits), tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1), y), tf.int32))

    def step(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        loss, correct = train_step(x, y)
        return float(loss) * len(y), int(correct)

    def evaluate(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        loss, correct = eval_step(x, y)
        return float(loss), int(correct) / len(y)

    def set_lr(lr: float) -> None:
        optimizer.learning_rate.assign(lr)

    curves = run_epochs(FRAMEWORK, data, config=config, seed=seed, step=step,
                        evaluate=evaluate, set_lr=set_lr, progress=progress)
    return from_keras(net), curves
