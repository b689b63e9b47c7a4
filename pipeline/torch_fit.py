"""Train a description in PyTorch: fresh (an MLP of `config`'s widths, or `init`) or masked fine-tuning.

Both frameworks run the same loop (`pipeline.train.run_epochs`) over the same batches; this module
only supplies torch's step, evaluation and learning-rate setter.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from pipeline.gradual import check_hooks
from pipeline.model import Model
from pipeline.torch_net import FRAMEWORK, _torch, build, from_torch, to_torch, versions  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.data import Dataset
    from pipeline.train import TrainConfig

EVAL_CHUNK = 1000  # validation images per forward pass: bounded memory for CNN activations


@contextlib.contextmanager
def deterministic(seed: int, threads: int | None = None):
    """Seed torch, force deterministic kernels and use every core we may run on (or what
    OMP_NUM_THREADS says, e.g. in a worker process); restore the previous global settings afterwards."""
    torch = _torch()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    old_threads = torch.get_num_threads()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or len(os.sched_getaffinity(0)))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(old_threads)


def masks(net) -> list:
    """(parameter, mask) pairs that keep pruned entries at exactly 0: every Linear/Conv weight, and
    the biases of convolutions (a filter pruned with its bias must keep outputting exactly 0)."""
    nn = _torch().nn
    out = []
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            out.append((m.weight, (m.weight != 0).to(m.weight.dtype)))
            if isinstance(m, nn.Conv2d) and m.bias is not None and bool((m.bias == 0).any()):
                out.append((m.bias, (m.bias != 0).to(m.bias.dtype)))
    return out


def fit(data: "Dataset", *, config: "TrainConfig", seed: int, init: Model | None = None,
        masked: bool = False, progress: bool = True, remask: Mapping[int, Callable[[Model], Model]] | None = None,
        lr_at: Callable[[int], float] | None = None) -> tuple[Model, dict]:
    """Train with Adam on cross-entropy of the logits. Starts from `init` (or a fresh MLP of
    `config`'s widths); with `masked`, entries that are zero in `init` stay zero (see `masks`).
    `remask` (with `masked`): before batch t (0-based, counted over all epochs) with an entry, the
    current weights go through remask[t] and its zeros become the masks (gradual pruning).
    `lr_at(t)` replaces `config.schedule`'s rate for batch t.
    Returns the trained description (empty meta, BatchNorm unfolded) and the per-epoch curves."""
    torch = _torch()
    from pipeline.augment import augment
    from pipeline.train import run_epochs

    remask = check_hooks(masked, remask)

    with deterministic(seed):
        net = to_torch(init) if init is not None else build(
            config.widths(data.x_train.shape[1], data.n_classes), config.activations())
        fixed = masks(net) if masked else []
        for param, mask in fixed:  # pruned entries get no gradient, so Adam's state stays 0 there
            param.register_hook(lambda grad, mask=mask: grad * mask)
        optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, eps=config.adam_eps,
                                     weight_decay=config.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        rng = np.random.default_rng(seed + 1)  # augmentation draws, apart from the batch order

        steps = itertools.count()

        def set_lr(lr: float) -> None:
            for group in optimizer.param_groups:
                group["lr"] = lr

        def step(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
            t = next(steps)
            if lr_at is not None:
                set_lr(lr_at(t))
            if t in remask:
                _remask(net, fixed, remask[t])
            net.train()
            xb, yb = torch.from_numpy(augment(x, config.augment, rng)), torch.from_numpy(y)
            optimizer.zero_grad(set_to_none=True)
            logits = net(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for param, mask in fixed:  # exact zeros, whatever the optimizer did
                    param.mul_(mask)
            return float(loss.detach()) * len(y), int((logits.argmax(1) == yb).sum())

        curves = run_epochs(FRAMEWORK, data, config=config, seed=seed, step=step,
                            evaluate=functools.partial(_evaluate, net, loss_fn), set_lr=set_lr, progress=progress)
        return from_torch(net.eval()), curves


def _evaluate(net, loss_fn, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean loss and accuracy over (x, y), EVAL_CHUNK images per forward pass."""
    torch = _torch()
    net.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), EVAL_CHUNK):
            logits, yb = net(torch.from_numpy(x[i:i + EVAL_CHUNK])), torch.from_numpy(y[i:i + EVAL_CHUNK])
            loss_sum += float(loss_fn(logits, yb)) * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
    return loss_sum / len(y), correct / len(y)


def _remask(net, fixed: list, prune) -> None:
    """Prune the current weights with `prune` (Model -> Model) and mask its zeros from now on."""
    torch = _torch()
    pruned = prune(from_torch(net.eval()))
    with torch.no_grad():
        net.load_state_dict(to_torch(pruned).state_dict())  # copies in place: the optimizer keeps its tensors
        for param, mask in fixed:
            mask.copy_((param != 0).to(mask.dtype))
