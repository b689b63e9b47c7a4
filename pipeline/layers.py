"""The layer kinds of the model description, each with its numpy forward pass and output shape.

Tensors are channels-last: features [n, f], images [n, h, w, c]. A convolution kernel is stored
as torch and ONNX store it, [out, in, kh, kw], or, when weight-pruned, as a SciPy CSR matrix
[out, in*kh*kw] (the im2col layout of `pipeline.ops.conv2d`). Padding is always explicit
(top, bottom, left, right), so 'same' never means two things. `inputs` names the layers a
layer reads (indices into the model, -1 = the model input); empty means the layer before it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar

import numpy as np
import scipy.sparse as sp

from pipeline import ops


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(x.dtype, copy=False)


def _leaky_relu(x: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    return np.where(x >= 0, x, x * np.float32(alpha)).astype(x.dtype, copy=False)


# Activation name -> elementwise numpy function. Every exporter/importer maps these names.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0),
    "identity": lambda x: x,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "leaky_relu": _leaky_relu,
    "relu6": lambda x: np.clip(x, 0, 6),
}
LEAKY_RELU_ALPHA = 0.01
ZERO_AT_ZERO = frozenset({"relu", "identity", "tanh", "leaky_relu", "relu6"})  # act(0) == 0


@dataclass(frozen=True)
class Dense:
    """y = act(x @ W + b), W [in, out] (ndarray or CSR)."""
    weight: np.ndarray | sp.csr_array
    bias: np.ndarray
    activation: str = "relu"
    inputs: tuple = ()
    kind: ClassVar[str] = "dense"
    ATTRS: ClassVar[tuple] = ("activation",)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.weight)

    @property
    def nnz(self) -> int:
        return int(self.weight.nnz) if self.is_sparse else int(np.count_nonzero(self.weight))

    @property
    def n_weights(self) -> int:
        return int(np.prod(self.weight.shape))

    def dense_weight(self) -> np.ndarray:
        return self.weight.toarray() if self.is_sparse else self.weight

    def out_shape(self, shape: tuple) -> tuple:
        return (self.weight.shape[1],)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x @ self.weight, dtype=np.float32) + self.bias
        return ACTIVATIONS[self.activation](z)


def _pair(value) -> tuple[int, int]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value), int(value))


@dataclass(frozen=True)
class Conv2D:
    """Convolution (groups 1, dilation 1); `kernel` is (kh, kw), needed when the weight is CSR."""
    weight: np.ndarray | sp.csr_array  # [out, in, kh, kw] or CSR [out, in*kh*kw]
    bias: np.ndarray
    kernel: tuple = ()
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)  # top, bottom, left, right
    activation: str = "relu"
    inputs: tuple = ()
    kind: ClassVar[str] = "conv2d"
    ATTRS: ClassVar[tuple] = ("kernel", "stride", "pads", "activation")

    def __post_init__(self):
        kernel = self.kernel or (tuple(self.weight.shape[2:]) if self.weight.ndim == 4 else ())
        object.__setattr__(self, "kernel", tuple(int(k) for k in kernel))
        object.__setattr__(self, "stride", _pair(self.stride))
        object.__setattr__(self, "pads", tuple(int(p) for p in self.pads))

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.weight)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) if self.weight.ndim == 4 else int(self.weight.shape[1]) // int(np.prod(self.kernel))

    @property
    def shape(self) -> tuple:
        return (self.out_channels, self.in_channels, *self.kernel)

    @property
    def nnz(self) -> int:
        return int(self.weight.nnz) if self.is_sparse else int(np.count_nonzero(self.weight))

    @property
    def n_weights(self) -> int:
        return int(np.prod(self.shape))

    def dense_weight(self) -> np.ndarray:
        return self.weight.toarray().reshape(self.shape) if self.is_sparse else self.weight

    def matrix(self):
        """The [out, in*kh*kw] kernel matrix: CSR as stored, or a view of the dense kernel."""
        return self.weight if self.is_sparse else self.weight.reshape(self.out_channels, -1)

    def out_shape(self, shape: tuple) -> tuple:
        h, w, _ = shape
        return (ops.out_size(h, self.kernel[0], self.stride[0], *self.pads[:2]),
                ops.out_size(w, self.kernel[1], self.stride[1], *self.pads[2:]), self.out_channels)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = ops.conv2d(x, self.matrix(), self.bias, self.kernel, self.stride, self.pads)
        return ACTIVATIONS[self.activation](z)


@dataclass(frozen=True)
class DepthwiseConv2D:
    """One kh x kw filter per channel (channel multiplier 1): weight [c, 1, kh, kw]."""
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)
    activation: str = "relu"
    inputs: tuple = ()
    kind: ClassVar[str] = "depthwise2d"
    ATTRS: ClassVar[tuple] = ("stride", "pads", "activation")
    is_sparse: ClassVar[bool] = False

    def __post_init__(self):
        object.__setattr__(self, "stride", _pair(self.stride))
        object.__setattr__(self, "pads", tuple(int(p) for p in self.pads))

    @property
    def kernel(self) -> tuple:
        return tuple(self.weight.shape[2:])

    @property
    def shape(self) -> tuple:
        return tuple(self.weight.shape)

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.weight))

    @property
    def n_weights(self) -> int:
        return int(self.weight.size)

    def dense_weight(self) -> np.ndarray:
        return self.weight

    def out_shape(self, shape: tuple) -> tuple:
        h, w, c = shape
        return (ops.out_size(h, self.kernel[0], self.stride[0], *self.pads[:2]),
                ops.out_size(w, self.kernel[1], self.stride[1], *self.pads[2:]), c)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ACTIVATIONS[self.activation](ops.depthwise_conv2d(x, self.weight, self.bias, self.stride, self.pads))


@dataclass(frozen=True)
class BatchNorm:
    """Inference-time batch normalization over the last axis; folded away before pruning/export."""
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = 1e-3
    activation: str = "identity"
    inputs: tuple = ()
    kind: ClassVar[str] = "batchnorm"
    ATTRS: ClassVar[tuple] = ("eps", "activation")

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """(s, t) with bn(x) = x * s + t, in float64 for folding."""
        s = self.gamma.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + self.eps)
        return s, self.beta.astype(np.float64) - self.mean.astype(np.float64) * s

    def out_shape(self, shape: tuple) -> tuple:
        return shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        s, t = self.scale_shift()
        return ACTIVATIONS[self.activation]((x * s.astype(np.float32) + t.astype(np.float32)).astype(np.float32))


@dataclass(frozen=True)
class Pool2D:
    """Max or average pooling; an average pool may not pad (runtimes disagree on what it counts)."""
    op: str = "max"
    size: tuple = (2, 2)
    stride: tuple = (2, 2)
    pads: tuple = (0, 0, 0, 0)
    inputs: tuple = ()
    kind: ClassVar[str] = "pool2d"
    ATTRS: ClassVar[tuple] = ("op", "size", "stride", "pads")
    OPS: ClassVar[dict] = {"max": ops.max_pool, "avg": ops.avg_pool}

    def __post_init__(self):
        object.__setattr__(self, "size", _pair(self.size))
        object.__setattr__(self, "stride", _pair(self.stride))
        object.__setattr__(self, "pads", tuple(int(p) for p in self.pads))

    def out_shape(self, shape: tuple) -> tuple:
        h, w, c = shape
        return (ops.out_size(h, self.size[0], self.stride[0], *self.pads[:2]),
                ops.out_size(w, self.size[1], self.stride[1], *self.pads[2:]), c)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.OPS[self.op](x, self.size, self.stride, self.pads)


@dataclass(frozen=True)
class GlobalAvgPool:
    """[n, h, w, c] -> [n, c]."""
    inputs: tuple = ()
    kind: ClassVar[str] = "global_avg_pool"
    ATTRS: ClassVar[tuple] = ()

    def out_shape(self, shape: tuple) -> tuple:
        return (shape[2],)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ops.global_avg_pool(x)


@dataclass(frozen=True)
class Flatten:
    """[n, h, w, c] -> [n, h*w*c]; `layout` records the feature order the next layer was trained on."""
    layout: str = "channels_last"
    inputs: tuple = ()
    kind: ClassVar[str] = "flatten"
    ATTRS: ClassVar[tuple] = ("layout",)
    LAYOUTS: ClassVar[tuple] = ("channels_last", "channels_first")

    def out_shape(self, shape: tuple) -> tuple:
        return (int(np.prod(shape)),)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ops.flatten(x, self.layout)


@dataclass(frozen=True)
class Add:
    """act(a + b) of two tensors of one shape (a residual connection)."""
    inputs: tuple = field(default=())
    activation: str = "identity"
    kind: ClassVar[str] = "add"
    ATTRS: ClassVar[tuple] = ("activation",)

    def out_shape(self, *shapes) -> tuple:
        return shapes[0]

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ACTIVATIONS[self.activation](a + b)


# kind name (as saved) -> class. One row per layer kind.
KINDS = {cls.kind: cls for cls in (Dense, Conv2D, DepthwiseConv2D, BatchNorm, Pool2D, GlobalAvgPool, Flatten, Add)}
WEIGHTED = (Dense, Conv2D, DepthwiseConv2D)  # layers with weight, bias and activation
Layer = Dense | Conv2D | DepthwiseConv2D | BatchNorm | Pool2D | GlobalAvgPool | Flatten | Add


def array_fields(layer) -> list[str]:
    """Names of the array fields (weights, biases, BatchNorm statistics) of a layer or layer kind."""
    skip = {"inputs", *layer.ATTRS}
    return [f.name for f in fields(layer) if f.name not in skip]
