"""PyTorch -> layers: state_dicts of Linear layers (+ an arch string) and TorchScript files.

A state_dict is read with `torch.load(weights_only=True)` (no arbitrary unpickling); it
holds no activations, so the caller's arch string (`784-300-100-10:relu`) supplies them
and is checked tensor by tensor. A CNN's state_dict is refused: its strides, padding,
pooling, flatten and residual wiring live only in the Python class, which we never run;
TorchScript, torch.export (.pt2) and ONNX files carry them. A TorchScript file is frozen
(weights become constants, dropout and control flow on `training` fold away; BatchNorm is
kept, to be folded by `pipeline.fold`) and its graph walked op by op through
`aten_ops.HANDLERS`. TorchScript keeps no input size, so a CNN needs `--arch HxWxC`.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

from pipeline.errors import fail
from pipeline.importers.aten_ops import HANDLERS
from pipeline.importers.arch import ImageArch
from pipeline.importers.chain import Chain

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
    state = _read_state_dict(path)
    conv = next((f"'{k}' {list(t.shape)}" for k, t in state.items() if t.ndim == 4), None)
    if conv or isinstance(arch, ImageArch):
        raise fail(path, f"a CNN state_dict ({conv or 'with an image input'}) holds no strides, padding, "
                         "pooling or wiring, which live in Python code we never run: save a TorchScript "
                         "(torch.jit.trace/script) or torch.export (.pt2) program, or export ONNX")
    if arch is None:
        raise fail(path, "a PyTorch state_dict holds no activations: pass an arch string "
                         "like 784-300-100-10:relu (widths, hidden activation)")
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
    chain = Chain(str(path), "x", (arch.widths[0],))
    src = "x"
    for n, (prefix, entry) in enumerate(linears.items()):
        wkey, w = entry["weight"]
        want = [arch.widths[n + 1], arch.widths[n]]
        if list(w.shape) != want:
            raise fail(path, f"arch {arch} expects layer {n} weight {want} ([out, in]) "
                                  f"but '{wkey}' is {list(w.shape)}")
        bias = entry["bias"][1].detach().numpy() if "bias" in entry else None
        chain.linear(src, prefix, w.detach().float().numpy().T, bias, f"layer {n} '{prefix}'")
        chain.activation(prefix, prefix, arch.activations[n], f"layer {n} '{prefix}'")
        src = prefix
    return chain.result(src)


# ---------------------------------------------------------------- TorchScript

CONVOLUTIONS = {"aten::conv2d", "aten::_convolution", "aten::_convolution_mode"}


def _kind(node) -> str:
    kind = node.kind()
    in_place = kind.startswith("aten::") and kind.endswith("_") and not kind.endswith("__")
    return kind[:-1] if in_place else kind


class _ScriptCall:
    """One TorchScript node as `aten_ops` handlers see it (arguments are positional)."""

    def __init__(self, node, consts: dict, source: str, where: str):
        self.ins, self.consts, self.source, self.where = list(node.inputs()), consts, source, where
        self.out = list(node.outputs())[0].unique()

    def src(self, k: int):
        return self.ins[k].unique() if k < len(self.ins) else None

    def known(self, k: int) -> bool:
        """Is argument k a constant (not computed at run time, like a view's size)?"""
        return k >= len(self.ins) or self.ins[k].unique() in self.consts

    def arg(self, k: int, default=None, name: str | None = None):
        if k >= len(self.ins):
            return default
        if not self.known(k):
            raise fail(self.source, f"{self.where}: argument {k} is computed at run time, not stored")
        value = self.consts[self.ins[k].unique()]
        return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def _frozen_graph(path: Path):
    import torch
    try:
        with warnings.catch_warnings():  # torch.jit is deprecated upstream but still the reader
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
            # optimize_numerics=False keeps BatchNorm, so pipeline.fold folds it (in float64, recorded)
            return torch.jit.freeze(module.eval(), optimize_numerics=False).graph
    except Exception as e:  # RuntimeError for bad archives, many others for odd modules
        raise fail(path, f"corrupt or unsupported TorchScript file ({type(e).__name__}: {_first_line(e)})") from None


def _reads_data(nodes, source_value) -> list[bool]:
    """Per node: does it read the layer data? (Sizes are not data: aten::size only reads the shape.)"""
    data, out = {source_value.unique()}, []
    for n in nodes:
        reads = _kind(n) != "aten::size" and any(v.unique() in data for v in n.inputs())
        data.update(o.unique() for o in n.outputs() if reads)
        out.append(reads)
    return out


def load_torchscript(path: Path, arch=None):
    """`chain.Described` from a TorchScript (torch.jit.save) archive. Nodes that do not read the data
    (constants, sizes, shape checks that raise) are skipped; a value they compute that a layer needs
    (a weight, a stride) is refused as computed at run time."""
    graph = _frozen_graph(path)
    nodes = list(graph.nodes())
    graph_inputs, outputs = list(graph.inputs()), list(graph.outputs())
    if len(graph_inputs) != 2 or len(outputs) != 1:
        raise fail(path, f"expected forward(self, x) with one output, got "
                              f"{len(graph_inputs) - 1} inputs and {len(outputs)} outputs")
    reads = _reads_data(nodes, graph_inputs[1])
    unsupported = [f"{_kind(n)} (node {i})" for i, (n, r) in enumerate(zip(nodes, reads))
                   if r and _kind(n) not in HANDLERS]
    if unsupported:
        raise fail(path, f"unsupported ops: {', '.join(unsupported)}")
    image = isinstance(arch, ImageArch)
    if not image and any(_kind(n) in CONVOLUTIONS for n in nodes):
        raise fail(path, "TorchScript keeps no input size, which a CNN needs: pass it as --arch HxWxC "
                         "(channels last, e.g. 28x28x1)")
    h, w, c = arch.shape if image else (None, None, None)
    chain = Chain(str(path), graph_inputs[1].unique(), arch.shape if image else None, [c, h, w] if image else None,
                  layout="nchw")
    consts = _constants(nodes)
    for i, (node, r) in enumerate(zip(nodes, reads)):
        if r:
            HANDLERS[_kind(node)](chain, _ScriptCall(node, consts, str(path), f"{_kind(node)} (node {i})"))
    return chain.result(outputs[0].unique())


def _constants(nodes) -> dict:
    consts = {}
    for n in nodes:
        if n.kind() == "prim::Constant":
            consts[n.output().unique()] = n.output().toIValue()
        elif n.kind() == "prim::ListConstruct" and all(i.unique() in consts for i in n.inputs()):
            consts[n.output().unique()] = [consts[i.unique()] for i in n.inputs()]
    return consts
