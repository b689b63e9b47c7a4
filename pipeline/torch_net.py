"""The model description as a PyTorch module, and back.

A fully connected chain becomes an `nn.Sequential` of `nn.Linear` + activation modules (what
training has always built, so its initialisation and results are unchanged). Any other model
becomes a `GraphNet` that runs one module per description layer in order, NCHW inside: it takes
the description's channels-last input, and its Flatten reproduces the recorded feature order.
torch is imported inside the functions so importing this module stays cheap.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import fail
from pipeline.layers import LEAKY_RELU_ALPHA
from pipeline.model import Model, dense_model

if TYPE_CHECKING:  # pragma: no cover
    import torch

FRAMEWORK = "torch"
BN_MOMENTUM = 0.1  # torch's convention (= Keras momentum 0.9): the running averages follow training


def _torch():
    """Import torch; if this is the process's first import, make idle OpenMP threads sleep
    instead of spin. On a shared 2-core machine spinning made 2-thread training ~8x slower
    than 1 thread (measured 3-4 vs 21-34 steps/s); passive waiting gave 17-32 steps/s.
    An OMP_WAIT_POLICY already in the environment wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    return torch


def versions() -> dict:
    return {"torch": _torch().__version__}


def activation_module(name: str):
    """A fresh module for an activation name (None: identity)."""
    nn = _torch().nn
    factories = {"relu": nn.ReLU, "identity": None, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu6": nn.ReLU6,
                 "leaky_relu": lambda: nn.LeakyReLU(negative_slope=LEAKY_RELU_ALPHA)}
    if name not in factories:
        raise fail("activation", f"unknown activation {name!r} (choose from {', '.join(factories)})")
    return factories[name]() if factories[name] is not None else None


def build(widths, activations) -> "torch.nn.Sequential":
    """Fresh MLP with torch's default initialisation (seed torch before calling)."""
    nn = _torch().nn
    if len(activations) != len(widths) - 1:
        raise fail("activations", f"need {len(widths) - 1} (one per layer), got {len(activations)}")
    modules = []
    for n_in, n_out, act in zip(widths[:-1], widths[1:], activations):
        module = activation_module(act)
        modules += [nn.Linear(n_in, n_out)] + ([module] if module is not None else [])
    return nn.Sequential(*modules)


def _copy(param, value: np.ndarray) -> None:
    torch = _torch()
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def to_torch(model: Model):
    """A float32 torch module computing the same function as `model.forward` (CSR densified)."""
    if model.is_mlp:
        nn = _torch().nn
        net = build(model.widths, [layer.activation for layer in model.layers])
        for linear, layer in zip([m for m in net if isinstance(m, nn.Linear)], model.layers):
            _copy(linear.weight, layer.dense_weight().T)
            _copy(linear.bias, layer.bias)
        return net.eval()
    from pipeline.torch_graph import GraphNet
    return GraphNet(model).eval()


def from_torch(module, meta: dict | None = None) -> Model:
    """Describe an `nn.Sequential` MLP or a `GraphNet` (BatchNorm layers kept, see pipeline.fold)."""
    torch = _torch()
    from pipeline.torch_graph import GraphNet
    if isinstance(module, GraphNet):
        return module.describe(meta)
    if not isinstance(module, torch.nn.Sequential):
        raise fail("torch module", f"expected nn.Sequential or GraphNet, got {type(module).__name__}")
    return _from_sequential(module, meta)


def _flat_modules(module):
    nn = _torch().nn
    if isinstance(module, nn.Sequential):
        for child in module:
            yield from _flat_modules(child)
    else:
        yield module


def _activation_name(module) -> str | None:
    """Name of a torch activation module; None for modules that change nothing."""
    nn = _torch().nn
    if isinstance(module, (nn.Identity, nn.Flatten, nn.Dropout)):
        return None
    if isinstance(module, nn.LeakyReLU):
        if not np.isclose(module.negative_slope, LEAKY_RELU_ALPHA):
            raise fail("torch module", f"LeakyReLU slope {module.negative_slope} is not the "
                                       f"supported {LEAKY_RELU_ALPHA}")
        return "leaky_relu"
    names = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU6: "relu6"}
    if type(module) in names:
        return names[type(module)]
    raise fail("torch module", f"unsupported layer {type(module).__name__} "
                               "(expected Linear followed by ReLU/ReLU6/Tanh/Sigmoid/LeakyReLU)")


def _from_sequential(module, meta) -> Model:
    torch = _torch()
    weights, biases, activations = [], [], []
    for m in _flat_modules(module):
        if isinstance(m, torch.nn.Linear):
            weights.append(m.weight.detach().cpu().to(torch.float32).numpy().T)
            bias = m.bias if m.bias is not None else torch.zeros(m.out_features)
            biases.append(bias.detach().cpu().to(torch.float32).numpy())
            activations.append("identity")
            continue
        name = _activation_name(m)
        if name is None:
            continue
        if not activations or activations[-1] != "identity":
            raise fail("torch module", f"{type(m).__name__} must directly follow a Linear layer")
        activations[-1] = name
    if not weights:
        raise fail("torch module", "no Linear layers")
    return dense_model(weights, biases, activations, **(meta or {}))

