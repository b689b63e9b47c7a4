"""Which channels must be removed together: the coupling graph of unit (filter) pruning.

A *group* is one channel index space shared by several layers, what Torch-Pruning's dependency
graph computes for these layer kinds: the output channels of its producers (Dense, Conv2D), the
channel-wise layers that carry them on (depthwise conv, BatchNorm, pooling, GlobalAvgPool, and
Add, which joins the spaces of both operands into one), and the layers that read them as inputs
(a Conv2D's input channels, a Dense layer's rows, through a Flatten at every spatial position).
Removing channel c of a group edits every one of those layers at index c.

A group is *foldable* when a removed channel's constant output reaches every reader as the same
constant (no zero padding in between, one producer), so it can be folded into the readers' biases
exactly; otherwise a removed channel must output exactly 0 (its biases are removed with it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.layers import (ZERO_AT_ZERO, Add, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Flatten,
                             GlobalAvgPool, Pool2D)
from pipeline.model import Model
from pipeline.ops import flat_index

CARRIERS = (DepthwiseConv2D, BatchNorm, Pool2D, GlobalAvgPool, Add)  # keep the channel index
INPUT = -1


@dataclass(frozen=True)
class Reader:
    layer: int  # a Dense or Conv2D layer reading the group
    rows: tuple  # per channel of the group: that layer's input indices (Dense rows / conv input channels)


@dataclass(frozen=True)
class Group:
    size: int
    producers: tuple  # layers whose output channels are the group
    carriers: tuple  # channel-wise layers on the way
    readers: tuple  # Reader per reading layer
    prunable: bool  # not the model's input or output, and act(0) == 0 where it must be
    foldable: bool


def _space_ids(model: Model) -> tuple[list, int]:
    """Union-find over layer outputs: the channel space of each layer's output, and the input's."""
    parent: dict = {}

    def find(a):
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    space = []
    for i, layer in enumerate(model.layers):
        srcs = [space[j] if j >= 0 else INPUT for j in model.sources(i)]
        if isinstance(layer, (Dense, Conv2D)):
            space.append(i)
        elif isinstance(layer, Add):
            parent[find(srcs[1])] = find(srcs[0])
            space.append(srcs[0])
        else:  # carriers and Flatten keep their input's space (Flatten: spread over positions)
            space.append(srcs[0])
    return [find(s) for s in space], find(INPUT)


def groups(model: Model) -> list[Group]:
    """Every channel group that some Dense or Conv2D layer produces, in order of its first producer."""
    shapes = model.shapes()
    space, input_root = _space_ids(model)
    out = []
    for root in dict.fromkeys(space):
        members = [i for i, s in enumerate(space) if s == root]
        producers = tuple(i for i in members if isinstance(model.layers[i], (Dense, Conv2D)))
        if producers:
            out.append(_group(model, shapes, space, root, members, producers, root == input_root))
    return sorted(out, key=lambda g: g.producers[0])


def _group(model: Model, shapes, space, root, members, producers, touches_input: bool) -> Group:
    size = shapes[producers[0]][-1]
    carriers = tuple(i for i in members if isinstance(model.layers[i], CARRIERS))
    readers, foldable = [], len(producers) == 1
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, (Dense, Conv2D)):
            continue
        j = model.sources(i)[0]
        if j < 0 or space[j] != root:
            continue
        if isinstance(layer, Dense) and isinstance(model.layers[j], Flatten):
            src_shape = shapes[model.sources(j)[0]]
            rows = tuple(tuple(flat_index(src_shape, c, model.layers[j].layout)) for c in range(size))
        else:
            rows = tuple((c,) for c in range(size))
        readers.append(Reader(i, rows))
        foldable &= isinstance(layer, Dense) or not any(layer.pads)
    for i in carriers:
        c = model.layers[i]
        foldable &= isinstance(c, GlobalAvgPool) or (isinstance(c, Pool2D) and (c.op == "max" or not any(c.pads)))
    last = len(model.layers) - 1
    zero_ok = all(getattr(model.layers[i], "activation", "identity") in ZERO_AT_ZERO for i in producers + carriers)
    prunable = last not in members and not touches_input and bool(readers) and (foldable or zero_ok)
    return Group(size=size, producers=producers, carriers=carriers, readers=tuple(readers),
                 prunable=prunable, foldable=foldable)


def filter_norms(model: Model, group: Group) -> np.ndarray:
    """L2 norm of each channel's incoming weights over all the group's producers."""
    total = np.zeros(group.size, dtype=np.float64)
    for i in group.producers:
        w = model.layers[i].dense_weight().astype(np.float64)
        total += (w ** 2).sum(axis=0) if isinstance(model.layers[i], Dense) else (w ** 2).reshape(len(w), -1).sum(axis=1)
    return np.sqrt(total)
