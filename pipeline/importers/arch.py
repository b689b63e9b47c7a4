"""Architecture strings like `784-300-100-10:relu`: layer widths plus the hidden activation.

A PyTorch state_dict holds tensors but not the activations between them, so the user
says them; for every other format the string is an optional cross-check.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import fail
from pipeline.model import ACTIVATIONS, Model

_ARCH = re.compile(r"^(\d+(?:-\d+)+)(?::([a-z_]+))?$")
DEFAULT_HIDDEN = "relu"  # what our own training uses, so `784-1000-10` alone means the usual MLP


@dataclass(frozen=True)
class Arch:
    widths: tuple[int, ...]
    hidden: str  # activation of every hidden layer; the output layer is identity

    @property
    def activations(self) -> list[str]:
        return [self.hidden] * (len(self.widths) - 2) + ["identity"]

    def __str__(self) -> str:
        return "-".join(map(str, self.widths)) + f":{self.hidden}"


def parse_arch(text: str) -> Arch:
    """`784-300-100-10:relu` -> Arch((784, 300, 100, 10), "relu"); activation defaults to relu."""
    match = _ARCH.match(str(text).strip())
    if not match:
        raise fail("--arch", f"expected widths and hidden activation like 784-300-100-10:relu, got {text!r}")
    widths = tuple(int(w) for w in match.group(1).split("-"))
    hidden = match.group(2) or DEFAULT_HIDDEN
    if min(widths) < 1:
        raise fail("--arch", f"layer widths must be positive, got {text!r}")
    if hidden not in ACTIVATIONS:
        raise fail("--arch", f"unknown activation {hidden!r} (choose from {', '.join(ACTIVATIONS)})")
    return Arch(widths, hidden)


def check_against(model: Model, arch: Arch, source) -> None:
    """Refuse an imported model whose widths or hidden activations differ from `arch`."""
    if tuple(model.widths) != arch.widths:
        raise fail(source, f"arch {arch} does not match the file's layer widths "
                           f"{'-'.join(map(str, model.widths))}")
    hidden = [layer.activation for layer in model.layers[:-1]]
    if any(a != arch.hidden for a in hidden):
        raise fail(source, f"arch {arch} does not match the file's hidden activations {hidden}")
