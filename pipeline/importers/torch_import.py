"""PyTorch -> layers: state_dicts of Linear layers (+ an arch string) and TorchScript files.

A state_dict is read with `torch.load(weights_only=True)` (no arbitrary unpickling); it
holds no activations, so the caller's arch string (`784-300-100-10:relu`) supplies them
and is checked tensor by tensor. A TorchScript file is frozen (weights become constants,
dropout and control flow on `training` fold away) and its graph walked op by op.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np

from pipeline.errors import fail
from pipeline.importers.chain import Chain, check_leaky_alpha

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # common checkpoint nestings


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0][:200]


# ---------------------------------------------------------------- state_dict

def _read_state_dict(path: Path) -> dict:
    import torch
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise fail(path, "holds pickled Python objects (e.g. a whole nn.Module), which we never "
                         "unpickle: save model.state_dict() or a TorchScript file instead") from None
    except Exception as e:  # RuntimeError, EOFError, zip errors...
        raise fail(path, f"corrupt or unsupported PyTorch file ({type(e).__name__}: {_first_line(e)})") from None
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and set(obj) == {key} and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise fail(path, "not a state_dict (expected a mapping of names to tensors)")
    return obj


def load_state_dict(path: Path, arch=None):
    """Linear layers in state_dict order: `<name>.weight` [out, in] and optional `<name>.bias`."""
    if arch is None:
        raise fail(path, "a PyTorch state_dict holds no activations: pass an arch string "
                         "like 784-300-100-10:relu (widths, hidden activation)")
    state = _read_state_dict(path)
    linears: dict[str, dict] = {}
    unsupported = []
    keys = list(state)
    for i, key in enumerate(keys):
        prefix, _, leaf = key.rpartition(".")
        t = state[key]
        if leaf == "weight" and t.ndim == 2 and t.is_floating_point():
            linears.setdefault(prefix, {})["weight"] = (key, t)
        elif leaf == "bias" and t.ndim == 1 and t.is_floating_point() and prefix in linears:
            linears[prefix]["bias"] = (key, t)
        else:
            unsupported.append((i, key, list(t.shape)))
    unsupported = [f"'{k}' {shape} (entry {i})" for i, k, shape in unsupported]
    if unsupported:
        raise fail(path, f"unsupported tensors (only Linear weight/bias): {', '.join(unsupported)}")
    expected = len(arch.widths) - 1
    if len(linears) != expected:
        raise fail(path, f"arch {arch} has {expected} layers but the file has {len(linears)} "
                              f"Linear layers ({', '.join(linears) or 'none'})")
    chain = Chain(str(path))
    for n, (prefix, entry) in enumerate(linears.items()):
        wkey, w = entry["weight"]
        want = [arch.widths[n + 1], arch.widths[n]]
        if list(w.shape) != want:
            raise fail(path, f"arch {arch} expects layer {n} weight {want} ([out, in]) "
                                  f"but '{wkey}' is {list(w.shape)}")
        bias = entry["bias"][1].detach().numpy() if "bias" in entry else None
        chain.linear(w.detach().float().numpy().T, bias, f"layer {n} '{prefix}'")
        chain.activation(arch.activations[n], f"layer {n} '{prefix}'")
    return chain.result()


# ---------------------------------------------------------------- TorchScript

def _aten_activation(name):
    return lambda chain, args, where: chain.activation(name, where)


def _linear(chain, args, where):
    chain.linear(args(1).detach().numpy().T, _tensor_or_none(args(2)), where)


def _tensor_or_none(v):
    return None if v is None else v.detach().numpy()


def _leaky(chain, args, where):
    chain.activation(check_leaky_alpha(args(1, 0.01), chain.source, where), where)


def _softmax(name):
    def handler(chain, args, where):
        if args(1) not in (1, -1) or args(2) is not None:
            raise fail(chain.source, f"{where}: {name} over dim {args(1)} / dtype {args(2)} is not supported")
        chain.output(name, where)
    return handler


def _flatten(chain, args, where):
    if args(1, 1) != 1 or args(2, -1) != -1:
        raise fail(chain.source, f"{where}: flatten({args(1)}, {args(2)}) is not supported (only 1..-1)")
    chain.flatten(where)


def _reshape(chain, args, where):
    shape = args(1)
    if isinstance(shape, (list, tuple)) and len(shape) != 2:
        raise fail(chain.source, f"{where}: reshape to {list(shape)} is not supported (only [batch, features])")
    chain.flatten(where)


def _identity(chain, args, where):
    return None


# aten op (in-place variants share the handler) -> handler(chain, args, where)
HANDLERS = {
    "aten::linear": _linear,
    "aten::relu": _aten_activation("relu"), "aten::tanh": _aten_activation("tanh"),
    "aten::sigmoid": _aten_activation("sigmoid"), "aten::leaky_relu": _leaky,
    "aten::softmax": _softmax("softmax"), "aten::log_softmax": _softmax("log_softmax"),
    "aten::flatten": _flatten, "aten::reshape": _reshape, "aten::view": _reshape,
    "aten::dropout": _identity, "aten::feature_dropout": _identity, "aten::contiguous": _identity,
    "aten::detach": _identity,
}
# Ops computing sizes for a view/reshape; they never touch the data values.
SHAPE_OPS = {"prim::Constant", "prim::ListConstruct", "aten::size", "prim::NumToTensor", "aten::Int",
             "prim::TupleConstruct"}


def _kind(node) -> str:
    kind = node.kind()
    in_place = kind.startswith("aten::") and kind.endswith("_") and not kind.endswith("__")
    return kind[:-1] if in_place else kind


def load_torchscript(path: Path, arch=None):
    """(weights, biases, activations, meta) from a TorchScript (torch.jit.save) archive."""
    import torch
    try:
        with warnings.catch_warnings():  # torch.jit is deprecated upstream but still the reader
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
            frozen = torch.jit.freeze(module.eval())
    except Exception as e:  # RuntimeError for bad archives, many others for odd modules
        raise fail(path, f"corrupt or unsupported TorchScript file ({type(e).__name__}: {_first_line(e)})") from None
    graph = frozen.graph
    nodes = list(graph.nodes())
    unsupported = [f"{_kind(n)} (node {i})" for i, n in enumerate(nodes)
                   if _kind(n) not in HANDLERS and _kind(n) not in SHAPE_OPS]
    if unsupported:
        raise fail(path, f"unsupported ops: {', '.join(unsupported)}")
    graph_inputs = list(graph.inputs())
    if len(graph_inputs) != 2 or len(list(graph.outputs())) != 1:
        raise fail(path, f"expected forward(self, x) with one output, got "
                              f"{len(graph_inputs) - 1} inputs and {len(list(graph.outputs()))} outputs")
    consts = {}
    for n in nodes:
        if n.kind() == "prim::Constant":
            consts[n.output().unique()] = n.output().toIValue()
        elif n.kind() == "prim::ListConstruct" and all(i.unique() in consts for i in n.inputs()):
            consts[n.output().unique()] = [consts[i.unique()] for i in n.inputs()]
    chain = Chain(str(path))
    current = graph_inputs[1]
    for i, node in enumerate(nodes):
        kind, where = _kind(node), f"{_kind(node)} (node {i})"
        ins = list(node.inputs())
        if kind in SHAPE_OPS:
            if any(v.unique() == current.unique() for v in ins) and not (
                    kind == "aten::size" and current.unique() == graph_inputs[1].unique()):
                raise fail(path, f"{where}: {kind} on the layer data is not supported")
            continue
        if not ins or ins[0].unique() != current.unique():
            raise fail(path, f"{where}: does not continue the single chain from the input "
                             "(branches and skip connections are not supported)")

        def args(k, default=None, ins=ins):
            return consts.get(ins[k].unique(), default) if k < len(ins) else default
        if kind == "aten::linear" and not all(v.unique() in consts for v in ins[1:3]):
            raise fail(path, f"{where}: weight is computed at run time, not stored")
        if kind in ("aten::dropout", "aten::feature_dropout") and args(2) is not False:
            raise fail(path, f"{where}: dropout in training mode")
        HANDLERS[kind](chain, args, where)
        current = node.output()
    if list(graph.outputs())[0].unique() != current.unique():
        raise fail(path, "the model output is not the end of the layer chain")
    return chain.result()
