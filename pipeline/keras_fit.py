"""Train a description in Keras 3 / TensorFlow: fresh (an MLP of `config`'s widths, or `init`) or
masked fine-tuning. Both frameworks run the same loop (`pipeline.train.run_epochs`) over the same
batches; this module only supplies the TF step, evaluation and learning-rate setter.
"""
from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from pipeline.gradual import check_hooks
from pipeline.keras_net import FRAMEWORK, _keras, build, from_keras, to_keras, versions  # noqa: F401
from pipeline.model import Model

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.data import Dataset
    from pipeline.train import TrainConfig

EVAL_CHUNK = 1000  # validation images per call: bounded memory for CNN activations


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


def _masks(net, masked: bool) -> list:
    """One mask per trainable variable (None: free): pruned entries of Dense/Conv kernels stay 0,
    and so do zero biases of convolutions (a filter pruned with its bias keeps outputting 0)."""
    keras = _keras()
    import tensorflow as tf
    fixed = {}
    if masked:
        for layer in net.layers:
            convs = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
            if isinstance(layer, (keras.layers.Dense, *convs)):
                fixed[id(layer.kernel)] = True
                if isinstance(layer, convs) and layer.use_bias and (layer.bias.numpy() == 0).any():
                    fixed[id(layer.bias)] = True
    return [tf.Variable((v.numpy() != 0).astype(np.float32), trainable=False) if id(v) in fixed else None
            for v in net.trainable_variables]


def _remask(net, template: Model | None, masks: list, prune) -> None:
    """Prune the current weights with `prune` (Model -> Model) and mask its zeros from now on."""
    pruned = to_keras(prune(from_keras(net, template=template)))
    for target, value in zip(net.weights, pruned.weights):  # assign: the optimizer keeps its variables
        target.assign(value)
    for v, m in zip(net.trainable_variables, masks):
        if m is not None:
            m.assign((v.numpy() != 0).astype(np.float32))


def fit(data: "Dataset", *, config: "TrainConfig", seed: int, init: Model | None = None,
        masked: bool = False, progress: bool = True, remask: Mapping[int, Callable[[Model], Model]] | None = None,
        lr_at: Callable[[int], float] | None = None) -> tuple[Model, dict]:
    """Train with Adam on cross-entropy of the logits. Starts from `init` (or a fresh MLP of
    `config`'s widths); with `masked`, entries that are zero in `init` stay zero (see `_masks`).
    `remask` (with `masked`): before batch t (0-based, counted over all epochs) with an entry, the
    current weights go through remask[t] and its zeros become the masks (gradual pruning).
    `lr_at(t)` replaces `config.schedule`'s rate for batch t.
    Returns the trained description (empty meta, BatchNorm unfolded) and the per-epoch curves."""
    remask = check_hooks(masked, remask)
    with deterministic(seed):
        return _fit(data, config=config, seed=seed, init=init, masked=masked, progress=progress,
                    remask=remask, lr_at=lr_at)


def _fit(data, *, config, seed, init, masked, progress, remask, lr_at) -> tuple[Model, dict]:
    keras = _keras()
    import tensorflow as tf
    from pipeline.augment import augment
    from pipeline.train import run_epochs

    net = to_keras(init) if init is not None else build(
        config.widths(data.x_train.shape[1], data.n_classes), config.activations())
    variables = net.trainable_variables
    masks = _masks(net, masked)
    optimizer = keras.optimizers.Adam(learning_rate=config.lr, epsilon=config.adam_eps,
                                      weight_decay=config.weight_decay or None)
    optimizer.build(variables)
    loss_fn, train_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True), _train_loss(config, data)
    signature = [tf.TensorSpec([None, data.x_train.shape[1]], tf.float32), tf.TensorSpec([None], tf.int64)]
    rng = np.random.default_rng(seed + 1)  # augmentation draws, apart from the batch order

    @tf.function(input_signature=signature)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = net(x, training=True)
            loss = train_loss(y, logits)
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

    steps = itertools.count()

    def step(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        t = next(steps)
        if lr_at is not None:
            set_lr(lr_at(t))
        if t in remask:
            _remask(net, init, masks, remask[t])
        loss, correct = train_step(augment(x, config.augment, rng), y)
        return float(loss) * len(y), int(correct)

    def evaluate(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        loss_sum, correct = 0.0, 0
        for i in range(0, len(x), EVAL_CHUNK):
            loss, ok = eval_step(x[i:i + EVAL_CHUNK], y[i:i + EVAL_CHUNK])
            loss_sum += float(loss) * len(y[i:i + EVAL_CHUNK])
            correct += int(ok)
        return loss_sum / len(y), correct / len(y)

    def set_lr(lr: float) -> None:
        optimizer.learning_rate.assign(lr)

    curves = run_epochs(FRAMEWORK, data, config=config, seed=seed, step=step,
                        evaluate=evaluate, set_lr=set_lr, progress=progress)
    return from_keras(net, template=init), curves


def _train_loss(config: "TrainConfig", data: "Dataset"):
    """Cross-entropy of the logits; with label smoothing on one-hot targets (torch's definition:
    the smoothed mass spread over all classes, the true one included)."""
    import tensorflow as tf
    keras = _keras()
    if not config.label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
    return lambda y, logits: smoothed(tf.one_hot(y, data.n_classes), logits)
