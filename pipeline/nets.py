"""The built-in networks, defined once for both frameworks as model descriptions with initial weights.

`mlp` is the challenge's 784-1000-1000-500-200-10 ReLU MLP (each framework initialises it its own
default way, as it always has, from TrainConfig.hidden). `cnn` is a small MobileNetV2-style net
for 28x28x1 images: two 3x3 conv + max-pool stages, inverted-residual blocks (1x1 expand, 3x3
depthwise, 1x1 project, residual Add when shapes match) and a classifier; BatchNorm after every
conv. The 1x1 convs hold ~80% of the weights. ~8 M multiply-adds per image: one epoch is ~1 min
on 2 cores, where a stride-1 stem followed by blocks at 28x28 costs several times that for no
better accuracy (measured while choosing). Its initial weights come from a seeded numpy
generator, so PyTorch and TensorFlow start from the very same network.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.layers import Add, BatchNorm, Conv2D, Dense, DepthwiseConv2D, GlobalAvgPool, Pool2D
from pipeline.model import Model, validate

INPUT_SHAPE = (28, 28, 1)


@dataclass(frozen=True, kw_only=True)
class Block:
    expand: int  # channels after the 1x1 expansion
    out: int  # channels after the 1x1 projection
    stride: int = 1  # of the depthwise conv


@dataclass(frozen=True, kw_only=True)
class CnnSpec:
    stem: int | tuple = (32, 64)  # channels of the 3x3 convs before the blocks
    stem_stride: int = 1
    stem_pool: bool = True  # a 2x2 max-pool after each stem conv
    blocks: tuple = (Block(expand=192, out=96), Block(expand=288, out=96))
    head: int = 0  # channels of a 1x1 conv before the global average (0: none)
    classes: int = 10
    activation: str = "relu"

    def stem_widths(self) -> tuple:
        return (self.stem,) if isinstance(self.stem, int) else tuple(self.stem)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Symmetric padding for a kxk conv: (k-1)/2 each side at stride 1; at stride 2 the same pads,
    written out so torch and TF compute the same windows."""
    p = (kernel - 1) // 2
    return p, p


class _Builder:
    def __init__(self, rng: np.random.Generator, shape: tuple):
        self.rng, self.layers, self.shape = rng, [], shape

    def he(self, shape, fan_in: int) -> np.ndarray:
        return (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def add(self, layer) -> int:
        self.layers.append(layer)
        self.shape = layer.out_shape(self.shape) if not isinstance(layer, Add) else self.shape
        return len(self.layers) - 1

    def bn(self, channels: int, activation: str) -> int:
        ones, zeros = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        return self.add(BatchNorm(ones, zeros, zeros.copy(), ones.copy(), eps=1e-3, activation=activation))

    def conv(self, out: int, kernel: int, stride: int, activation: str) -> int:
        cin = self.shape[2]
        pads = _same_pads(self.shape[0], kernel, stride) + _same_pads(self.shape[1], kernel, stride)
        self.add(Conv2D(self.he((out, cin, kernel, kernel), cin * kernel * kernel), np.zeros(out, np.float32),
                        stride=(stride, stride), pads=pads if kernel > 1 else (0, 0, 0, 0), activation="identity"))
        return self.bn(out, activation)

    def depthwise(self, stride: int, activation: str) -> int:
        c = self.shape[2]
        self.add(DepthwiseConv2D(self.he((c, 1, 3, 3), 9), np.zeros(c, np.float32), stride=(stride, stride),
                                 pads=(1, 1, 1, 1), activation="identity"))
        return self.bn(c, activation)


def cnn(seed: int = 0, spec: CnnSpec = CnnSpec()) -> Model:
    """The built-in CNN with He-initialised convs (BatchNorm at identity), validated."""
    b = _Builder(np.random.default_rng(seed), INPUT_SHAPE)
    for width in spec.stem_widths():
        last = b.conv(width, 3, spec.stem_stride, spec.activation)
        if spec.stem_pool:
            last = b.add(Pool2D("max", (2, 2), (2, 2)))
    for block in spec.blocks:
        start, cin = last, b.shape[2]
        b.conv(block.expand, 1, 1, spec.activation)
        b.depthwise(block.stride, spec.activation)
        last = b.conv(block.out, 1, 1, "identity")
        if block.stride == 1 and cin == block.out:
            last = b.add(Add(inputs=(start, last)))
    if spec.head:
        b.conv(spec.head, 1, 1, spec.activation)
    b.add(GlobalAvgPool())
    fan_in = b.shape[0]
    b.add(Dense(b.he((fan_in, spec.classes), fan_in) / np.float32(2.0), np.zeros(spec.classes, np.float32),
                activation="identity"))
    return validate(Model(tuple(b.layers), {"net": "cnn", "framework": "random", "seed": seed}, INPUT_SHAPE))
