"""The MLP in PyTorch: build it, convert to/from the model description, train it.

A network is an `nn.Sequential` of `nn.Linear` layers, each followed by its activation
module (none for identity). `nn.Linear.weight` is [out, in]; the description stores
[in, out], so conversion transposes. CSR layers are densified: torch runs them dense.
torch is imported inside the functions so importing this module stays cheap.
"""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import fail
from pipeline.model import LEAKY_RELU_ALPHA, Model, dense_model

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from pipeline.data import Dataset
    from pipeline.train import TrainConfig

FRAMEWORK = "torch"


def _torch():
    """Import torch; if this is the process's first import, make idle OpenMP threads sleep
    instead of spin. On a shared 2-core machine spinning made 2-thread training ~8x slower
    than 1 thread (measured 3-4 vs 21-34 steps/s); passive waiting gave 17-32 steps/s.
    An OMP_WAIT_POLICY already in the environment wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    return torch


def versions() -> dict:
    torch = _torch()
    return {"torch": torch.__version__}


def _activation_modules() -> dict:
    """Activation name -> factory of its torch module (None: no module, i.e. identity)."""
    nn = _torch().nn
    return {
        "relu": nn.ReLU,
        "identity": None,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "leaky_relu": lambda: nn.LeakyReLU(negative_slope=LEAKY_RELU_ALPHA),
    }


def build(widths, activations) -> "torch.nn.Sequential":
    """Fresh network with torch's default initialisation (seed torch before calling)."""
    nn = _torch().nn
    factories = _activation_modules()
    if len(activations) != len(widths) - 1:
        raise fail("activations", f"need {len(widths) - 1} (one per layer), got {len(activations)}")
    modules = []
    for n_in, n_out, act in zip(widths[:-1], widths[1:], activations):
        if act not in factories:
            raise fail("activation", f"unknown activation {act!r} (choose from {', '.join(factories)})")
        modules.append(nn.Linear(n_in, n_out))
        if factories[act] is not None:
            modules.append(factories[act]())
    return nn.Sequential(*modules)


def to_torch(model: Model) -> "torch.nn.Sequential":
    """A float32 torch network computing the same function as `model.forward`."""
    torch = _torch()
    net = build(model.widths, [layer.activation for layer in model.layers])
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for linear, layer in zip(linears, model.layers):
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer.dense_weight().T)))
            linear.bias.copy_(torch.from_numpy(layer.bias))
    return net.eval()


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
    names = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
    if type(module) in names:
        return names[type(module)]
    raise fail("torch module", f"unsupported layer {type(module).__name__} "
                               "(expected Linear followed by ReLU/Tanh/Sigmoid/LeakyReLU)")


def from_torch(module, meta: dict | None = None) -> Model:
    """Describe an `nn.Sequential` of Linear + activation modules (nested Sequentials allowed)."""
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise fail("torch module", f"expected nn.Sequential, got {type(module).__name__}")
    weights, biases, activations = [], [], []
    for m in _flat_modules(module):
        if isinstance(m, nn.Linear):
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


# ---------------------------------------------------------------- training

@contextlib.contextmanager
def deterministic(seed: int, threads: int | None = None):
    """Seed torch, force deterministic kernels and use every core we may run on;
    restore the previous global settings afterwards."""
    torch = _torch()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    old_threads = torch.get_num_threads()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(old_threads)


def _masks(net) -> list:
    """(parameter, mask) for every Linear weight: 1 where nonzero, 0 where pruned."""
    nn = _torch().nn
    return [(m.weight, (m.weight != 0).to(m.weight.dtype)) for m in net if isinstance(m, nn.Linear)]


def fit(data: "Dataset", *, config: "TrainConfig", seed: int, init: Model | None = None,
        masked: bool = False, progress: bool = True) -> tuple[Model, dict]:
    """Train with Adam on cross-entropy of the logits. Starts from `init` (or a fresh
    network of `config`'s shape); with `masked`, weights that are zero in `init` stay zero.
    Returns the trained description (empty meta) and the per-epoch curves."""
    torch = _torch()
    from pipeline.train import run_epochs

    with deterministic(seed):
        net = to_torch(init) if init is not None else build(
            config.widths(data.x_train.shape[1], data.n_classes), config.activations())
        masks = _masks(net) if masked else []
        for param, mask in masks:  # pruned weights get no gradient, so Adam's state stays 0 there
            param.register_hook(lambda grad, mask=mask: grad * mask)
        optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, eps=config.adam_eps)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
            net.train()
            xb, yb = torch.from_numpy(x), torch.from_numpy(y)
            optimizer.zero_grad(set_to_none=True)
            logits = net(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for param, mask in masks:  # exact zeros, whatever the optimizer did
                    param.mul_(mask)
            return float(loss.detach()) * len(y), int((logits.argmax(1) == yb).sum())

        def evaluate(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
            net.eval()
            with torch.no_grad():
                logits = net(torch.from_numpy(x))
                yb = torch.from_numpy(y)
                return float(loss_fn(logits, yb)), int((logits.argmax(1) == yb).sum()) / len(y)

        def set_lr(lr: float) -> None:
            for group in optimizer.param_groups:
                group["lr"] = lr

        curves = run_epochs(FRAMEWORK, data, config=config, seed=seed, step=step,
                            evaluate=evaluate, set_lr=set_lr, progress=progress)
        return from_torch(net.eval()), curves
