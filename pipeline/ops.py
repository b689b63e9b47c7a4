"""Numpy kernels of the reference forward pass for image tensors (channels-last, [n, h, w, c]).

Pure functions from arrays to arrays. Convolutions run as im2col x weight matrix, the patch
columns ordered (in, kh, kw) so that the matrix is the [out, in*kh*kw] view of an [out, in, kh, kw]
kernel, dense or SciPy CSR. Batches are cut into chunks so the patch matrix stays near CHUNK_BYTES.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CHUNK_BYTES = 64 << 20  # patch matrix per chunk: big enough for BLAS, small enough for a Pi


def out_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    """Output length of a window sliding over `size` padded positions (floor, as every runtime)."""
    return (size + pad_before + pad_after - kernel) // stride + 1


def pad(x: np.ndarray, pads, value: float = 0.0) -> np.ndarray:
    """[n, h, w, c] padded by (top, bottom, left, right)."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def windows(x: np.ndarray, kernel, stride, pads, value: float = 0.0) -> np.ndarray:
    """[n, oh, ow, c, kh, kw] view of every kernel window (no copy until reshaped)."""
    kh, kw = kernel
    sh, sw = stride
    view = np.lib.stride_tricks.sliding_window_view(pad(x, pads, value), (kh, kw), axis=(1, 2))
    return view[:, ::sh, ::sw]


def _chunks(n: int, per_sample_bytes: int):
    step = max(1, CHUNK_BYTES // max(per_sample_bytes, 1))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def _pointwise(x: np.ndarray, matrix, bias: np.ndarray, stride) -> np.ndarray:
    """1x1 convolution without padding: one matrix product over every pixel (no window copies)."""
    x = x[:, ::stride[0], ::stride[1]] if stride != (1, 1) else x
    n, h, w, c = x.shape
    flat = np.ascontiguousarray(x).reshape(-1, c)
    y = np.asarray((matrix @ flat.T).T, dtype=np.float32) if sp.issparse(matrix) else flat @ matrix.T
    return (y + bias).reshape(n, h, w, -1)


def conv2d(x: np.ndarray, matrix, bias: np.ndarray, kernel, stride, pads) -> np.ndarray:
    """Convolution of [n, h, w, in] with `matrix` [out, in*kh*kw] (ndarray or CSR) plus bias."""
    if tuple(kernel) == (1, 1) and not any(pads):
        return _pointwise(x, matrix, bias, tuple(stride))
    n, h, w, c = x.shape
    kh, kw = kernel
    oh = out_size(h, kh, stride[0], pads[0], pads[1])
    ow = out_size(w, kw, stride[1], pads[2], pads[3])
    out = np.empty((n, oh, ow, matrix.shape[0]), dtype=np.float32)
    for lo, hi in _chunks(n, oh * ow * c * kh * kw * 4):
        patches = windows(x[lo:hi], kernel, stride, pads).reshape((hi - lo) * oh * ow, c * kh * kw)
        if sp.issparse(matrix):
            y = np.asarray((matrix @ patches.T).T, dtype=np.float32)
        else:
            y = patches @ matrix.T
        out[lo:hi] = y.reshape(hi - lo, oh, ow, -1)
    return out + bias


def depthwise_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride, pads) -> np.ndarray:
    """Per-channel convolution: weight [c, 1, kh, kw], one filter per input channel."""
    kh, kw = weight.shape[2:]
    xp = pad(x, pads)
    n, hp, wp, c = xp.shape
    sh, sw = stride
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    out = np.empty((n, oh, ow, c), dtype=np.float32)
    out[...] = bias
    tap = np.empty_like(out)
    for a in range(kh):
        for b in range(kw):
            np.multiply(xp[:, a:a + sh * (oh - 1) + 1:sh, b:b + sw * (ow - 1) + 1:sw, :], weight[:, 0, a, b], out=tap)
            out += tap
    return out


def max_pool(x: np.ndarray, size, stride, pads) -> np.ndarray:
    return windows(x, size, stride, pads, value=-np.inf).max(axis=(4, 5))


def avg_pool(x: np.ndarray, size, stride, pads) -> np.ndarray:
    """Average over windows that hold no padding (the description refuses padded average pools)."""
    return windows(x, size, stride, pads).mean(axis=(4, 5), dtype=np.float32)


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=(1, 2), dtype=np.float32)


def flatten(x: np.ndarray, layout: str) -> np.ndarray:
    """[n, h, w, c] -> [n, h*w*c] in (h, w, c) order (channels_last) or (c, h, w) (channels_first)."""
    if x.ndim == 2:
        return x
    if layout == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x).reshape(len(x), -1)


def flat_index(shape, channel: int, layout: str) -> np.ndarray:
    """Feature indices that `flatten` gives channel `channel` of a [h, w, c] tensor, in order."""
    h, w, c = shape
    if layout == "channels_first":
        return channel * h * w + np.arange(h * w)
    return np.arange(h * w) * c + channel
