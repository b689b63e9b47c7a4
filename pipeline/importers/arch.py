"""Architecture strings: `784-300-100-10:relu` for an MLP, `28x28x1` for a CNN's input.

A PyTorch state_dict holds tensors but not the activations between them, so the user says
them with the MLP form. A TorchScript file does not store its input's size, which a CNN needs
(the first Flatten's width depends on it), so the user gives it as HxWxC, channels-last like
the description (a 3-channel 32x32 image is 32x32x3). For every other format either string
is an optional cross-check.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pipeline.errors import fail
from pipeline.model import ACTIVATIONS, Model

_ARCH = re.compile(r"^(\d+(?:-\d+)+)(?::([a-z_0-9]+))?$")
_IMAGE = re.compile(r"^(\d+)x(\d+)x(\d+)$")
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


@dataclass(frozen=True)
class ImageArch:
    shape: tuple[int, int, int]  # (h, w, c) of one input image

    def __str__(self) -> str:
        return "x".join(map(str, self.shape))


def parse_arch(text: str) -> Arch | ImageArch:
    """`784-300-100-10:relu` -> Arch((784, 300, 100, 10), "relu"); `28x28x1` -> ImageArch((28, 28, 1))."""
    text = str(text).strip()
    image = _IMAGE.match(text)
    if image:
        shape = tuple(int(v) for v in image.groups())
        if min(shape) < 1:
            raise fail("--arch", f"image sizes must be positive, got {text!r}")
        return ImageArch(shape)
    match = _ARCH.match(text)
    if not match:
        raise fail("--arch", f"expected widths and hidden activation like 784-300-100-10:relu, or a CNN's "
                             f"input as HxWxC like 28x28x1, got {text!r}")
    widths = tuple(int(w) for w in match.group(1).split("-"))
    hidden = match.group(2) or DEFAULT_HIDDEN
    if min(widths) < 1:
        raise fail("--arch", f"layer widths must be positive, got {text!r}")
    if hidden not in ACTIVATIONS:
        raise fail("--arch", f"unknown activation {hidden!r} (choose from {', '.join(ACTIVATIONS)})")
    return Arch(widths, hidden)


def check_against(model: Model, arch: Arch | ImageArch, source) -> None:
    """Refuse an imported model whose widths, hidden activations or input shape differ from `arch`."""
    if isinstance(arch, ImageArch):
        flat_match = len(model.input_shape) == 1 and model.input_dim == int(np.prod(arch.shape))
        if tuple(model.input_shape) != arch.shape and not flat_match:
            raise fail(source, f"arch {arch} does not match the file's input "
                               f"{'x'.join(map(str, model.input_shape))} (HxWxC)")
        return
    if not model.is_mlp:
        raise fail(source, f"arch {arch} describes a fully connected chain but the file holds a CNN "
                           f"(give its input as HxWxC, e.g. 28x28x1, or leave --arch out)")
    if tuple(model.widths) != arch.widths:
        raise fail(source, f"arch {arch} does not match the file's layer widths "
                           f"{'-'.join(map(str, model.widths))}")
    hidden = [layer.activation for layer in model.layers[:-1]]
    if any(a != arch.hidden for a in hidden):
        raise fail(source, f"arch {arch} does not match the file's hidden activations {hidden}")
