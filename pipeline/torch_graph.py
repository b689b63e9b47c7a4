"""`GraphNet`: any model description as one torch module (NCHW inside), for training and fine-tuning.

One submodule per description layer, run in order with the description's wiring. Padding is
explicit and may be asymmetric (F.pad before an unpadded conv), so the module computes exactly
the description's function. `describe()` reads the trained weights back.
"""
from __future__ import annotations

import numpy as np

from pipeline.layers import Add, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Flatten, GlobalAvgPool, Pool2D
from pipeline.model import Model, validate
from pipeline.torch_net import BN_MOMENTUM, _copy, _torch, activation_module

torch = _torch()
nn, F = torch.nn, torch.nn.functional


def _act(name: str):
    return activation_module(name) or nn.Identity()


def _pad(x, pads, value: float = 0.0):
    top, bottom, left, right = pads
    return F.pad(x, (left, right, top, bottom), value=value) if any(pads) else x


class _Conv(nn.Module):
    def __init__(self, layer, depthwise: bool):
        super().__init__()
        out_ch = layer.weight.shape[0]
        in_ch = out_ch if depthwise else layer.in_channels
        self.pads, self.act = layer.pads, _act(layer.activation)
        self.conv = nn.Conv2d(in_ch, out_ch, layer.kernel, stride=layer.stride, groups=out_ch if depthwise else 1)
        _copy(self.conv.weight, layer.dense_weight())
        _copy(self.conv.bias, layer.bias)

    def forward(self, x):
        return self.act(self.conv(_pad(x, self.pads)))


class _Dense(nn.Module):
    def __init__(self, layer: Dense):
        super().__init__()
        self.linear, self.act = nn.Linear(*layer.shape), _act(layer.activation)
        _copy(self.linear.weight, layer.dense_weight().T)
        _copy(self.linear.bias, layer.bias)

    def forward(self, x):
        return self.act(self.linear(x))


class _BatchNorm(nn.Module):
    def __init__(self, layer: BatchNorm, image: bool):
        super().__init__()
        cls = nn.BatchNorm2d if image else nn.BatchNorm1d
        self.bn, self.act = cls(len(layer.gamma), eps=layer.eps, momentum=BN_MOMENTUM), _act(layer.activation)
        for name, value in (("weight", layer.gamma), ("bias", layer.beta), ("running_mean", layer.mean),
                            ("running_var", layer.var)):
            _copy(getattr(self.bn, name), value)

    def forward(self, x):
        return self.act(self.bn(x))


class _Fn(nn.Module):
    """A parameter-free layer: pooling, global average, flatten, add."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.act = _act(getattr(layer, "activation", "identity"))

    def forward(self, *xs):
        layer = self.layer
        if isinstance(layer, Pool2D):
            if layer.op == "max":
                return F.max_pool2d(_pad(xs[0], layer.pads, -float("inf")), layer.size, layer.stride)
            return F.avg_pool2d(xs[0], layer.size, layer.stride)
        if isinstance(layer, GlobalAvgPool):
            return xs[0].mean(dim=(2, 3))
        if isinstance(layer, Flatten):
            x = xs[0] if xs[0].dim() == 2 or layer.layout == "channels_first" else xs[0].permute(0, 2, 3, 1)
            return x.flatten(1)
        return self.act(xs[0] + xs[1])


class GraphNet(nn.Module):
    """The description as a module; forward takes [n, *input_shape] (channels-last) or flat input."""

    def __init__(self, model: Model):
        super().__init__()
        validate(model)
        self.template = model  # layer kinds, wiring and attributes; weights live in the submodules
        shapes = [model.input_shape] + model.shapes()
        self.sources = [model.sources(i) for i in range(len(model.layers))]
        mods = []
        for i, layer in enumerate(model.layers):
            image = len(shapes[self.sources[i][0] + 1]) == 3
            mods.append(_Dense(layer) if isinstance(layer, Dense) else
                        _Conv(layer, isinstance(layer, DepthwiseConv2D)) if isinstance(layer, (Conv2D, DepthwiseConv2D)) else
                        _BatchNorm(layer, image) if isinstance(layer, BatchNorm) else _Fn(layer))
        self.mods = nn.ModuleList(mods)

    def forward(self, x):
        shape = self.template.input_shape
        x = x.reshape(len(x), *shape)
        if len(shape) == 3:
            x = x.permute(0, 3, 1, 2)
        values = {-1: x}
        for i, mod in enumerate(self.mods):
            values[i] = mod(*[values[j] for j in self.sources[i]])
        return values[len(self.mods) - 1]

    def describe(self, meta: dict | None = None) -> Model:
        """The description with this module's current weights and BatchNorm statistics."""
        from dataclasses import replace
        layers = []
        for layer, mod in zip(self.template.layers, self.mods):
            if isinstance(mod, _Dense):
                layer = replace(layer, weight=_np(mod.linear.weight).T.copy(), bias=_np(mod.linear.bias))
            elif isinstance(mod, _Conv):
                layer = replace(layer, weight=_np(mod.conv.weight), bias=_np(mod.conv.bias))
            elif isinstance(mod, _BatchNorm):
                bn = mod.bn
                layer = replace(layer, gamma=_np(bn.weight), beta=_np(bn.bias), mean=_np(bn.running_mean),
                                var=_np(bn.running_var))
            layers.append(layer)
        model = Model(tuple(layers), dict(meta or {}), self.template.input_shape)
        return validate(model)


def _np(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())

