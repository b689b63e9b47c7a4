"""The built-in networks, defined once for both frameworks as model descriptions with initial weights.

`mlp` is the challenge's 784-1000-1000-500-200-10 ReLU MLP (each framework initialises it its own
default way, as it always has, from TrainConfig.hidden). `cnn` is a small MobileNetV2-style net
for 28x28x1 images: a stem conv, inverted-residual blocks (1x1 expand, 3x3 depthwise, 1x1
project, residual Add when shapes match) and a classifier; BatchNorm after every conv. Its
initial weights come from a seeded numpy generator, so PyTorch and TensorFlow start from the
very same network.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.layers import Add, BatchNorm, Conv2D, Dense, DepthwiseConv2D, GlobalAvgPool
from pipeline.model import Model, validate

INPUT_SHAPE = (28, 28, 1)


@dataclass(frozen=True, kw_only=True)
class Block:
    expand: int  # channels after the 1x1 expansion
    out: int  # channels after the 1x1 projection
    stride: int = 1  # of the depthwise conv


@dataclass(frozen=True, kw_only=True)
class CnnSpec:
    stem: int = 32  # channels of the 3x3 stem conv
    stem_stride: int = 1
    blocks: tuple = (Block(expand=64, out=32), Block(expand=128, out=64, stride=2),
                     Block(expand=256, out=64), Block(expand=256, out=128, stride=2),
                     Block(expand=512, out=128))
    head: int = 256  # 1x1 conv before the global average
    classes: int = 10
    activation: str = "relu6"


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
    last = b.conv(spec.stem, 3, spec.stem_stride, spec.activation)
    for block in spec.blocks:
        start, cin = last, b.shape[2]
        b.conv(block.expand, 1, 1, spec.activation)
        b.depthwise(block.stride, spec.activation)
        last = b.conv(block.out, 1, 1, "identity")
        if block.stride == 1 and cin == block.out:
            last = b.add(Add(inputs=(start, last)))
    b.conv(spec.head, 1, 1, spec.activation)
    b.add(GlobalAvgPool())
    fan_in = b.shape[0]
    b.add(Dense(b.he((fan_in, spec.classes), fan_in) / np.float32(2.0), np.zeros(spec.classes, np.float32),
                activation="identity"))
    return validate(Model(tuple(b.layers), {"net": "cnn", "framework": "random", "seed": seed}, INPUT_SHAPE))
