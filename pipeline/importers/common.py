"""Small rules every importer shares: float weights, the leaky slope, output transforms, padding.

Padding is turned into the description's explicit (top, bottom, left, right) here, once per
framework convention: TensorFlow/Keras/TFLite 'same' and ONNX SAME_UPPER put the odd pixel after
(bottom/right), ONNX SAME_LOWER before; PyTorch's padding='same' (stride 1) puts it after too.
"""
from __future__ import annotations

import numpy as np

from pipeline.errors import fail
from pipeline.layers import LEAKY_RELU_ALPHA


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


def clip_activation(low, high, source, where: str) -> str:
    """Clip(0, 6) / hardtanh(0, 6) is relu6 and Clip(0, none) is relu; other bounds are refused."""
    def bound(v):
        v = None if v is None else float(np.asarray(v).reshape(()))
        return None if v is None or abs(v) >= 1e30 else v  # FLT_MAX / inf: no bound
    name = {(0.0, 6.0): "relu6", (0.0, None): "relu"}.get((bound(low), bound(high)))
    if name is None:
        raise fail(source, f"{where}: clip to [{bound(low)}, {bound(high)}] is not supported "
                           "(only [0, 6] = ReLU6 or [0, inf) = ReLU)")
    return name


def float_array(value, source, where: str) -> np.ndarray:
    """A constant as contiguous float32, refusing integer/quantized tensors instead of casting them."""
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise fail(source, f"{where}: expected float weights, got {arr.dtype} "
                           "(quantized models are not supported: import the float model)")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise fail(source, f"{where}: weights contain NaN or infinite values")
    return arr


def as_bias(source, bias, width: int, where: str) -> np.ndarray:
    """A bias as float32 [width]: None is zeros, a scalar or [1, width] broadcasts."""
    if bias is None:
        return np.zeros(width, np.float32)
    b = float_array(bias, source, where)
    if b.size == 1:
        return np.full(width, b.reshape(()), np.float32)
    if b.size != width or b.ndim not in (1, 2) or (b.ndim == 2 and b.shape[0] != 1):
        raise fail(source, f"{where}: bias shape {list(b.shape)} does not broadcast to the layer's {width} outputs")
    return b.reshape(width)


def pair(value, source, where: str, what: str) -> tuple[int, int]:
    """(a, b) from an int or a 1- or 2-element sequence; anything else names the attribute."""
    values = [int(v) for v in np.atleast_1d(np.asarray(value)).ravel()]
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise fail(source, f"{where}: {what} {values} is not 2-D (only 2-D images are supported)")
    return values[0], values[1]


def no_dilation(dilation, source, where: str) -> None:
    if any(int(d) != 1 for d in np.atleast_1d(np.asarray(dilation)).ravel()):
        raise fail(source, f"{where}: dilation {[int(d) for d in np.atleast_1d(dilation)]} is not supported (only 1)")


def same_pads(size: tuple, kernel: tuple, stride: tuple, *, odd_after: bool = True) -> tuple[int, int, int, int]:
    """'same' padding of an [h, w] input as (top, bottom, left, right): output ceil(size / stride)."""
    out = []
    for n, k, s in zip(size, kernel, stride):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        small, big = total // 2, total - total // 2
        out += [small, big] if odd_after else [big, small]
    return tuple(out)


def tf_padding(name: str, size, kernel, stride, source, where: str) -> tuple[int, int, int, int]:
    """Keras/TFLite 'valid' or 'same' (odd pixel after) as explicit pads."""
    name = str(name).lower()
    if name not in ("valid", "same"):
        raise fail(source, f"{where}: padding {name!r} is not supported (only 'valid' or 'same')")
    return (0, 0, 0, 0) if name == "valid" else same_pads(tuple(size), tuple(kernel), tuple(stride))
