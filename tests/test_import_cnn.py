"""Importing CNNs we did not build: ONNX, Keras/SavedModel, TorchScript, torch.export, TFLite.

Each format gets the same small network written with plain framework code: a stride-2 3x3
stem (conv, BatchNorm, ReLU) and a MobileNetV2-style residual block (1x1 conv, BN, ReLU6, 3x3
depthwise, BN, ReLU6, 1x1 conv, BN, Add), then max pool / global pool and a dense layer. Its
BatchNorm statistics are random (as after training), so folding them wrong would show. The
imported description is compared with the framework's own runtime on 3-channel images whose
sizes make 'same' padding asymmetric (12x12 at stride 2), with TOL below: float32 sums taken in
another order (and BatchNorm folded in float64) differ by ~1e-7 relative; 1e-5 leaves room.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from pipeline.importers import apply_output_transform, detect_format, import_model
from pipeline.layers import Add, Conv2D, DepthwiseConv2D, Flatten
from pipeline.methods import prune
from pipeline.shrink import shrink

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
TOL = 1e-5  # relative to the largest output: float32 reassociation + float64 BatchNorm folding
H, W, C = 12, 12, 3  # even size, stride 2: 'same' pads one pixel after (TF/ONNX SAME_UPPER rule)
KINDS = ["conv2d", "conv2d", "depthwise2d", "conv2d", "add"]  # stem, then the block


@pytest.fixture(scope="module")
def images():
    """[n, h, w, c] channels-last, as the description takes them."""
    return np.random.default_rng(0).random((24, H, W, C), dtype=np.float32)


def assert_close(got, want):
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL * float(np.abs(want).max()))


def assert_cnn(model, *, flatten: str | None, folded: int = 4, layout: str = "nchw"):
    """The block came in as description layers: BatchNorm folded, depthwise kept, Add wired."""
    kinds = [layer.kind for layer in model.layers]
    assert "batchnorm" not in kinds and model.meta.get("batchnorm_folded") == folded
    assert model.input_shape == (H, W, C) and model.meta["source_input_layout"] == layout
    assert sum(isinstance(l, DepthwiseConv2D) for l in model.layers) == 1
    adds = [l for l in model.layers if isinstance(l, Add)]
    assert len(adds) == 1 and len(set(adds[0].inputs)) == 2
    assert {l.activation for l in model.layers if isinstance(l, (Conv2D, DepthwiseConv2D))} >= {"relu6"}
    assert next(l for l in model.layers if isinstance(l, Conv2D)).stride == (2, 2)
    flat = [l.layout for l in model.layers if isinstance(l, Flatten)]
    assert flat == ([flatten] if flatten else [])


def assert_unit_prunable(model, x):
    """Filter pruning works on the imported description: shrunk = masked, with fewer channels."""
    masked = prune(model, "unit", 50)
    small = shrink(masked)
    assert_close(small.forward(x), masked.forward(x))
    assert small.n_params < model.n_params


# ---------------------------------------------------------------- PyTorch (TorchScript, torch.export, ONNX)

def torch_net(head: str = "flatten"):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c, hidden):
            super().__init__()
            self.expand = nn.Sequential(nn.Conv2d(c, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
            self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
                                    nn.BatchNorm2d(hidden), nn.ReLU6())
            self.project = nn.Sequential(nn.Conv2d(hidden, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return x + self.project(self.dw(self.expand(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(C, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.block = Block(8, 16)
            self.head = head
            self.fc = nn.Linear(8 * 3 * 3 if head == "flatten" else 8, 10)

        def forward(self, x):
            x = self.block(self.stem(x))
            if self.head == "flatten":
                return self.fc(torch.flatten(nn.functional.max_pool2d(x, 2), 1))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    net, rng = Net(), np.random.default_rng(0)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                tensors = (mod.weight, mod.bias, mod.running_mean, mod.running_var)
                for t, v in zip(tensors, bn_stats(len(mod.weight), rng)):
                    t.copy_(torch.from_numpy(v))
    return net.eval()


def bn_stats(c: int, rng) -> list[np.ndarray]:
    """gamma, beta, mean, var like a trained network's (far from the 1, 0, 0, 1 of a fresh one)."""
    return [rng.uniform(0.5, 1.5, c).astype(np.float32), rng.uniform(-0.3, 0.3, c).astype(np.float32),
            rng.uniform(-0.5, 0.5, c).astype(np.float32), rng.uniform(0.5, 2.0, c).astype(np.float32)]


def torch_out(net, x_nhwc):
    import torch
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))).numpy()


@pytest.mark.parametrize("how", ["trace", "script"])
def test_torchscript_cnn(tmp_path, images, how):
    import torch
    net, path = torch_net(), tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace(net, torch.zeros(1, C, H, W)) if how == "trace" else torch.jit.script(net)
    scripted.save(str(path))
    model = import_model(path, arch=f"{H}x{W}x{C}")
    assert detect_format(path) == "torchscript"
    assert [l.kind for l in model.layers][:5] == KINDS and model.layers[1].activation == "relu6"
    assert_cnn(model, flatten="channels_first")
    assert_close(model.forward(images), torch_out(net, images))


def test_torch_export_program_without_unpickling(tmp_path, images, monkeypatch):
    import pickle

    import torch
    net, path = torch_net("mean"), tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(1, C, H, W),)), str(path))

    def refuse(*args, **kwargs):
        raise AssertionError("the importer must not unpickle")
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.export, "load", refuse)
    model = import_model(path)
    monkeypatch.undo()
    assert detect_format(path) == "torch-export"
    assert_cnn(model, flatten=None)
    assert [l.kind for l in model.layers][-2:] == ["global_avg_pool", "dense"]
    assert_close(model.forward(images), torch_out(net, images))
    assert_unit_prunable(model, images)


def test_onnx_from_the_torch_exporter(tmp_path, images):
    """torch.onnx folds BatchNorm itself and writes ReLU6 as Clip(0, 6): same network either way."""
    import torch
    net, path = torch_net(), tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, C, H, W),), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
    model = import_model(path, arch=f"{H}x{W}x{C}")
    assert_cnn(model, flatten="channels_first", folded=None)
    expected = torch_out(net, images)
    assert_close(model.forward(images), expected)
    assert_close(run_onnx(path, images.transpose(0, 3, 1, 2)), expected)
    assert_unit_prunable(model, images)


def torch_idioms():
    """padding='same' with an even kernel, relu(max_pool(conv)), F.pad, hardtanh(0, 6), avg pool,
    adaptive pool, log_softmax: what PyTorch code writes, in every form the exporters spell it."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Idioms(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.fc = nn.Conv2d(C, 4, 2, padding="same"), nn.Conv2d(4, 6, 3), nn.Linear(6, 5)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            h = F.relu(F.max_pool2d(self.c1(x), 2))
            h = F.avg_pool2d(F.hardtanh(self.c2(F.pad(h, (1, 0, 1, 0))), 0.0, 6.0), 2)
            return F.log_softmax(self.fc(self.pool(h).flatten(1)), dim=1)
    torch.manual_seed(1)
    return Idioms().eval()


@pytest.mark.parametrize("form", ["trace", "script", "export", "onnx"])
def test_torch_idioms_in_every_form(tmp_path, images, form):
    import torch
    net, x = torch_idioms(), torch.zeros(1, C, H, W)
    path = tmp_path / {"export": "net.pt2", "onnx": "net.onnx"}.get(form, "net.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if form == "export":
            torch.export.save(torch.export.export(net, (x,)), str(path))
        elif form == "onnx":  # F.pad's pads come as a Concat/Transpose/Cast chain of constants: folded
            torch.onnx.export(net, (x,), str(path), dynamo=False)
        else:
            (torch.jit.trace(net, x) if form == "trace" else torch.jit.script(net)).save(str(path))
    model = import_model(path, arch=f"{H}x{W}x{C}")
    assert [(l.kind, getattr(l, "activation", None)) for l in model.layers][:3] == [
        ("conv2d", "relu"), ("pool2d", None), ("conv2d", "relu6")]
    assert model.layers[0].pads == (0, 1, 0, 1) and model.layers[2].pads == (1, 0, 1, 0)
    assert_close(apply_output_transform(model.meta, model.forward(images)), torch_out(net, images))


# ---------------------------------------------------------------- ONNX by hand

def run_onnx(path, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x)})[0]


def onnx_cnn(path, stem_pad: dict, *, opset: int = 17):
    """Stem conv (stride 2, `stem_pad` attributes) -> BN -> Relu; block with Clip(0, 6), depthwise
    group=16, Add; MaxPool; Flatten; Gemm. Weights random, BatchNorm statistics random."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(1)
    inits, nodes = {}, []

    def conv(name, x, out, shape, **attrs):
        inits[f"{name}_w"] = rng.normal(0, 0.4, shape).astype(np.float32)
        nodes.append(helper.make_node("Conv", [x, f"{name}_w"], [out], name=name, **attrs))

    def bn(name, x, out, c):
        for key, v in zip("gbmv", bn_stats(c, rng)):
            inits[f"{name}_{key}"] = v
        nodes.append(helper.make_node("BatchNormalization", [x] + [f"{name}_{k}" for k in "gbmv"], [out],
                                      name=name, epsilon=1e-3))

    def relu6(x, out):
        nodes.append(helper.make_node("Clip", [x, "zero", "six"], [out]))
    inits.update(zero=np.array(0, np.float32), six=np.array(6, np.float32))
    conv("stem", "x", "s", (8, C, 3, 3), strides=[2, 2], **stem_pad)
    bn("bn0", "s", "sb", 8)
    nodes.append(helper.make_node("Relu", ["sb"], ["s1"]))
    conv("expand", "s1", "e", (16, 8, 1, 1))
    bn("bn1", "e", "eb", 16)
    relu6("eb", "e1")
    conv("dw", "e1", "d", (16, 1, 3, 3), group=16, pads=[1, 1, 1, 1])
    bn("bn2", "d", "db", 16)
    relu6("db", "d1")
    conv("project", "d1", "p", (8, 16, 1, 1))
    bn("bn3", "p", "pb", 8)
    nodes += [helper.make_node("Add", ["s1", "pb"], ["r"], name="residual"),
              helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Flatten", ["m"], ["f"]),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1)]
    inits.update(fc_w=rng.normal(0, 0.2, (10, 72)).astype(np.float32), fc_b=rng.normal(0, 0.1, 10).astype(np.float32))
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, W])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("stem_pad, pads", [
    ({"auto_pad": "SAME_UPPER"}, (0, 1, 0, 1)),  # odd pixel after
    ({"auto_pad": "SAME_LOWER"}, (1, 0, 1, 0)),  # odd pixel before
    ({"pads": [1, 0, 0, 1]}, (1, 0, 0, 1)),  # ONNX order [top, left, bottom, right]
])
def test_onnx_cnn_with_batchnorm_residual_and_padding_rules(tmp_path, images, stem_pad, pads):
    path = onnx_cnn(tmp_path / "cnn.onnx", stem_pad)
    model = import_model(path)
    assert model.layers[0].pads == pads and [l.kind for l in model.layers][:5] == KINDS
    assert_cnn(model, flatten="channels_first")
    assert_close(model.forward(images), run_onnx(path, images.transpose(0, 3, 1, 2)))
    assert_unit_prunable(model, images)


def test_onnx_activation_after_a_max_pool_moves_onto_the_conv(tmp_path, images):
    """relu(maxpool(conv(x))), the classic torch MNIST net, is maxpool(relu(conv(x))) exactly."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(3)
    inits = {"k": rng.normal(0, 0.5, (4, C, 3, 3)), "kb": rng.normal(0, 0.5, 4), "fc": rng.normal(0, 0.3, (10, 100))}
    nodes = [helper.make_node("Conv", ["x", "k", "kb"], ["c"]),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["p"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, W])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    model = import_model(tmp_path / "m.onnx")
    kinds = [(l.kind, getattr(l, "activation", None)) for l in model.layers]
    assert kinds[:2] == [("conv2d", "relu"), ("pool2d", None)]
    assert_close(model.forward(images), run_onnx(tmp_path / "m.onnx", images.transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------- Keras, SavedModel, TFLite

def keras_net(*, zero_pad: bool = False):
    """Functional Keras: 'same' stride-2 stem (or ZeroPadding2D + 'valid', as MobileNetV2 writes it)."""
    import keras
    L = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((H, W, C))
    x = L.ZeroPadding2D(((0, 1), (0, 1)))(inp) if zero_pad else inp
    x = L.Conv2D(8, 3, strides=2, padding="valid" if zero_pad else "same", name="stem")(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    h = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(16, 1, use_bias=False)(x)))
    h = L.ReLU(6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", use_bias=False)(h)))
    h = L.BatchNormalization()(L.Conv2D(8, 1, use_bias=False)(h))
    x = L.Add(name="residual")([x, h])
    x = L.Flatten()(L.MaxPooling2D(2)(x))
    net = keras.Model(inp, L.Dense(10, activation="softmax")(x))
    rng = np.random.default_rng(0)
    for layer in net.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights(bn_stats(layer.moving_mean.shape[0], rng))
    return net


@pytest.mark.parametrize("zero_pad", [False, True])
def test_keras_functional_cnn(tmp_path, images, zero_pad):
    net, path = keras_net(zero_pad=zero_pad), tmp_path / "net.keras"
    net.save(path)
    model = import_model(path)
    assert model.layers[0].pads == (0, 1, 0, 1) and model.meta["output_transform"] == "softmax"
    assert_cnn(model, flatten="channels_last", layout="nhwc")
    assert_close(apply_output_transform(model.meta, model.forward(images)), net.predict(images, verbose=0))
    assert_unit_prunable(model, images)


def run_tflite(path, x):
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=str(path))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return interp.get_tensor(out["index"])


def test_tflite_and_saved_model_cnn(tmp_path, images):
    """The converter folds BatchNorm and fuses ReLU6 into the convolutions (RELU6 fused code)."""
    import tensorflow as tf
    net = keras_net()
    path = tmp_path / "net.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(net).convert())
    model = import_model(path)
    assert detect_format(path) == "tflite"
    assert_cnn(model, flatten="channels_last", folded=None, layout="nhwc")
    got = apply_output_transform(model.meta, model.forward(images))
    assert_close(got, run_tflite(path, images))
    assert_close(got, net.predict(images, verbose=0))
    net.export(str(tmp_path / "sm"), verbose=False)
    saved = import_model(tmp_path / "sm")
    assert_close(apply_output_transform(saved.meta, saved.forward(images)), got)
