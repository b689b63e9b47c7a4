"""The one place that turns a walk over foreign layers/ops into prunedge layers.

Every importer walks its file in data-flow order and calls these methods; the rules
(what may follow what, which activations exist, where a flatten or softmax may sit)
live here once, so the formats cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import fail
from pipeline.model import ACTIVATIONS, LEAKY_RELU_ALPHA



def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


# Final ops kept out of the pruned layers and recorded in meta["output_transform"]:
# they are monotone per row, so argmax (accuracy) is the same with or without them.
OUTPUT_TRANSFORMS = {
    "softmax": lambda z: np.exp(_log_softmax(z)),
    "log_softmax": _log_softmax,
}


def apply_output_transform(meta: dict, logits: np.ndarray) -> np.ndarray:
    """What the original file outputs, from `Model.forward` logits (to compare with its runtime)."""
    name = meta.get("output_transform")
    return logits if name is None else OUTPUT_TRANSFORMS[name](np.asarray(logits, np.float32))


def check_leaky_alpha(alpha: float, source, where: str) -> str:
    """Only the model's fixed slope is representable; anything else is refused by name."""
    if not np.isclose(float(alpha), LEAKY_RELU_ALPHA, rtol=1e-5, atol=0.0):
        raise fail(source, f"{where}: leaky_relu slope {float(alpha):g} is not supported "
                           f"(only {LEAKY_RELU_ALPHA} can be pruned and exported)")
    return "leaky_relu"


def float_array(value, source, where: str) -> np.ndarray:
    """A constant as float32, refusing integer/quantized tensors instead of casting them."""
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise fail(source, f"{where}: expected float weights, got {arr.dtype} "
                           "(quantized models are not supported: import the float model)")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise fail(source, f"{where}: weights contain NaN or infinite values")
    return arr


@dataclass
class Chain:
    """Accumulates fully connected layers `act(x @ W + b)` in order."""
    source: str
    weights: list = field(default_factory=list)
    biases: list = field(default_factory=list)
    activations: list = field(default_factory=list)
    output_transform: str | None = None
    flattened: bool = False
    _bias_open: bool = False  # a linear op was just added; a bias Add may still follow

    def _check_open(self, where: str, what: str) -> None:
        if self.output_transform is not None:
            raise fail(self.source, f"{where}: {what} after the final {self.output_transform} "
                                    "is not supported")

    def linear(self, weight, bias, where: str) -> None:
        """`weight` is [in, out]; `bias` [out] or None."""
        self._check_open(where, "a layer")
        w = float_array(weight, self.source, where)
        if w.ndim != 2:
            raise fail(self.source, f"{where}: weight must be 2-D, got shape {list(w.shape)}")
        if self.weights and self.weights[-1].shape[1] != w.shape[0]:
            raise fail(self.source, f"{where}: takes {w.shape[0]} inputs but the previous layer "
                                    f"gives {self.weights[-1].shape[1]}")
        b = np.zeros(w.shape[1], np.float32) if bias is None else self._as_bias(bias, w.shape[1], where)
        self.weights.append(w)
        self.biases.append(b)
        self.activations.append("identity")
        self._bias_open = True

    def add_bias(self, bias, where: str) -> None:
        """A separate `+ b` right after a linear op (MatMul + Add, TFLite FC + ADD)."""
        self._check_open(where, "an Add")
        if not self._bias_open:
            raise fail(self.source, f"{where}: an Add is only supported as the bias right after "
                                    "a MatMul/Gemm/fully connected op")
        self.biases[-1] = self.biases[-1] + self._as_bias(bias, self.weights[-1].shape[1], where)

    def _as_bias(self, bias, width: int, where: str) -> np.ndarray:
        b = float_array(bias, self.source, where)
        if b.size == 1:
            return np.full(width, b.reshape(()), np.float32)
        if b.size != width or b.ndim not in (1, 2) or (b.ndim == 2 and b.shape[0] != 1):
            raise fail(self.source, f"{where}: bias shape {list(b.shape)} does not broadcast "
                                    f"to the layer's {width} outputs")
        return b.reshape(width)

    def activation(self, name: str, where: str) -> None:
        """Attach an activation to the last layer (identity is a no-op anywhere)."""
        if name == "identity":
            return
        if name in OUTPUT_TRANSFORMS:
            return self.output(name, where)
        self._check_open(where, f"activation {name}")
        if name not in ACTIVATIONS:
            raise fail(self.source, f"{where}: activation {name!r} is not supported "
                                    f"(supported: {', '.join(ACTIVATIONS)})")
        if not self.weights:
            raise fail(self.source, f"{where}: activation {name} before the first dense layer "
                                    "is not supported")
        if self.activations[-1] != "identity":
            raise fail(self.source, f"{where}: two activations in a row "
                                    f"({self.activations[-1]} then {name}) are not supported")
        self.activations[-1] = name
        self._bias_open = False

    def flatten(self, where: str) -> None:
        """Flatten/Reshape to [batch, features]: only allowed before the first layer."""
        if self.weights:
            raise fail(self.source, f"{where}: a reshape between dense layers is not supported "
                                    "(only at the input)")
        self.flattened = True

    def output(self, name: str, where: str) -> None:
        """Softmax/LogSoftmax as the very last op: recorded in meta, not made a layer."""
        self._check_open(where, name)
        if not self.weights:
            raise fail(self.source, f"{where}: {name} before any dense layer is not supported")
        self.output_transform = name
        self._bias_open = False

    def result(self):
        """(weights, biases, activations, meta) for `pipeline.model.dense_model`."""
        if not self.weights:
            raise fail(self.source, "no dense (fully connected) layers found")
        meta = {"output_transform": self.output_transform} if self.output_transform else {}
        return self.weights, self.biases, self.activations, meta
