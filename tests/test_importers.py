"""Importing MLPs we did not train: ONNX, Keras/SavedModel, PyTorch, TFLite -> Model.

Each format gets a network trained for a few epochs on the 8x8 digits set shipped inside
scikit-learn (a second real dataset, no download) with plain framework code, saved by the
framework itself, imported, and compared with the framework's own runtime output
(<= 1e-5) and with a description built directly from the framework's weights (identical
weights, so identical pruning). Rejections check one-line errors naming file and op.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import helpers
from pipeline import model as m
from pipeline import model_io as m_io
from pipeline.errors import PrunedgeError
from pipeline.importers import apply_output_transform, detect_format, import_model
from pipeline.labeled import load_labeled
from pipeline.prune import unit_prune, weight_prune
from pipeline.methods import prune
from pipeline.shrink import shrink
from pipeline.sparse import to_csr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
TOL = 1e-5  # float32 reassociation between runtimes
EPOCHS = 4  # a few seconds per framework; the models need only be non-trivial


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def assert_same_pruning(imported: m.Model, reference: m.Model, x: np.ndarray) -> None:
    """Identical weights give identical masks and outputs for weight and unit pruning."""
    for method in ("weight", "unit"):
        a, b = prune(imported, method, 70), prune(reference, method, 70)
        for la, lb in zip(a.layers, b.layers):
            np.testing.assert_array_equal(la.dense_weight(), lb.dense_weight())
        physical_a = shrink(a) if method == "unit" else to_csr(a)
        np.testing.assert_allclose(physical_a.forward(x), b.forward(x), atol=TOL, rtol=0)


def assert_provenance(model: m.Model, path, fmt: str) -> None:
    assert model.meta["framework"] == "imported" and model.meta["source_format"] == fmt
    assert model.meta["source"] == os.path.basename(str(path))
    assert len(model.meta["source_sha256"]) == 64
    assert model.meta["method"] == "dense" and model.meta["sparsity"] == 0.0


def fails(path, match, **kwargs):
    with pytest.raises(PrunedgeError, match=match) as e:
        import_model(path, **kwargs)
    assert "\n" not in str(e.value) and os.path.basename(str(path)) in str(e.value)
    return str(e.value)


# ---------------------------------------------------------------- ONNX

def onnx_from_model(model: m.Model, path, *, style="gemm", image_shape=None, final=None,
                    constant_node=False):
    """Hand-built ONNX graph for a description: Gemm (transB, alpha/beta) or MatMul+Add."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    ops = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "leaky_relu": "LeakyRelu", "identity": "Identity"}
    nodes, inits = [], []
    shape = ["N", *image_shape] if image_shape else ["N", model.input_dim]
    current = "x"
    if image_shape:
        nodes.append(helper.make_node("Flatten", [current], ["flat"], axis=1, name="flatten"))
        current = "flat"
    for i, layer in enumerate(model.layers):
        w, b = layer.dense_weight(), layer.bias
        out = f"z{i}"
        if style == "gemm":  # W stored transposed, scaled by 1/alpha; bias by 1/beta
            inits += [numpy_helper.from_array((w.T * 2.0).astype(np.float32), f"W{i}"),
                      numpy_helper.from_array((b * 4.0).astype(np.float32), f"B{i}")]
            nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"B{i}"], [out], transB=1,
                                          alpha=0.5, beta=0.25, name=f"fc{i}"))
        else:
            weight = numpy_helper.from_array(w, f"W{i}")
            if constant_node and i == 0:
                nodes.append(helper.make_node("Constant", [], [f"W{i}"], value=weight))
            else:
                inits.append(weight)
            inits.append(numpy_helper.from_array(b.reshape(1, -1), f"B{i}"))
            nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"m{i}"], name=f"mm{i}"))
            nodes.append(helper.make_node("Add", [f"B{i}", f"m{i}"], [out], name=f"add{i}"))  # bias first
        current = out
        attrs = {"alpha": m.LEAKY_RELU_ALPHA} if layer.activation == "leaky_relu" else {}
        nodes.append(helper.make_node(ops[layer.activation], [current], [f"a{i}"], **attrs))
        current = f"a{i}"
    if final:
        nodes.append(helper.make_node(final, [current], ["p"], axis=-1))
        current = "p"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", model.output_dim])],
                              initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def run_onnx(path, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("style, final", [("gemm", None), ("matmul", "Softmax"), ("matmul", "LogSoftmax")])
def test_onnx_round_trip_any_shape_and_activation(tmp_path, digits, style, final):
    x = digits[0][:200]
    ref = m.random_model([64, 40, 24, 16, 10], seed=3, activations=["tanh", "leaky_relu", "sigmoid", "identity"])
    path = onnx_from_model(ref, tmp_path / "mlp.onnx", style=style, image_shape=[1, 8, 8], final=final,
                           constant_node=True)
    model = import_model(path)
    assert detect_format(path) == "onnx" and model.widths == ref.widths
    assert [l.activation for l in model.layers] == ["tanh", "leaky_relu", "sigmoid", "identity"]
    assert model.meta.get("output_transform") == {None: None, "Softmax": "softmax", "LogSoftmax": "log_softmax"}[final]
    assert_provenance(model, path, "onnx")
    runtime = run_onnx(path, x.reshape(-1, 1, 8, 8))
    np.testing.assert_allclose(apply_output_transform(model.meta, model.forward(x)), runtime, atol=TOL, rtol=0)
    np.testing.assert_allclose(model.forward(x), ref.forward(x), atol=TOL, rtol=0)
    if style == "matmul":  # weights copied bit for bit (Gemm rescales by alpha/beta)
        assert_same_pruning(model, ref, x)


def test_onnx_of_a_torch_trained_mlp(tmp_path, digits):
    x, y = digits
    net = train_torch(torch_sequential([64, 48, 32, 10], "sigmoid"), x, y)
    ref = description_of_linears(net, "sigmoid")
    path = onnx_from_model(ref, tmp_path / "digits.onnx", style="matmul")
    model = import_model(path, arch="64-48-32-10:sigmoid")
    np.testing.assert_allclose(model.forward(x), torch_out(net, x), atol=TOL, rtol=0)
    np.testing.assert_allclose(run_onnx(path, x), model.forward(x), atol=TOL, rtol=0)
    assert (model.predict(x) == y).mean() > 0.5  # it learned something
    assert_same_pruning(model, ref, x)


def test_onnx_sparse_constant_weights(tmp_path, digits):
    """Weight-pruned layers stored as Constant(sparse_value) come back as the same dense weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    x = digits[0][:200]
    ref = weight_prune(m.random_model([64, 32, 10], seed=5, activations=["sigmoid", "identity"]), 90)
    w0 = ref.layers[0].weight
    flat = np.flatnonzero(w0.T)  # Gemm transB=1 stores [out, in]
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(w0.T.ravel()[flat], "W0"),
                                       numpy_helper.from_array(flat.astype(np.int64), "W0_idx"), list(w0.T.shape))
    nodes = [helper.make_node("Constant", [], ["W0"], sparse_value=sparse),
             helper.make_node("Gemm", ["x", "W0", "B0"], ["z0"], transB=1),
             helper.make_node("Sigmoid", ["z0"], ["h0"]),
             helper.make_node("Gemm", ["h0", "W1", "B1"], ["y"])]
    inits = [numpy_helper.from_array(ref.layers[0].bias, "B0"), numpy_helper.from_array(ref.layers[1].weight, "W1"),
             numpy_helper.from_array(ref.layers[1].bias, "B1")]
    graph = helper.make_graph(nodes, "sparse", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "s.onnx")
    model = import_model(tmp_path / "s.onnx")
    np.testing.assert_array_equal(model.layers[0].weight, w0)
    np.testing.assert_allclose(model.forward(x), run_onnx(tmp_path / "s.onnx", x), atol=TOL, rtol=0)


def test_onnx_from_the_torch_exporter(tmp_path, digits, torch_tanh):
    """A file from a real third-party producer (torch.onnx, TorchScript-based): Flatten + Gemm."""
    import warnings

    import torch
    x = digits[0][:200]
    net = torch.nn.Sequential(torch.nn.Flatten(), *torch_tanh, torch.nn.LogSoftmax(dim=1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 1, 8, 8),), str(tmp_path / "t.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})
    model = import_model(tmp_path / "t.onnx", arch="64-48-24-10:tanh")
    assert model.meta["output_transform"] == "log_softmax"
    np.testing.assert_allclose(apply_output_transform(model.meta, model.forward(x)),
                               torch_out(net, x.reshape(-1, 1, 8, 8)), atol=TOL, rtol=0)
    assert_same_pruning(model, description_of_linears(torch_tanh, "tanh"), x)


# ---------------------------------------------------------------- PyTorch

def torch_sequential(widths, act):
    import torch.nn as nn
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
            "leaky_relu": lambda: nn.LeakyReLU(m.LEAKY_RELU_ALPHA)}
    mods = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        mods.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            mods.append(acts[act]())
    return nn.Sequential(*mods)


def train_torch(net, x, y, epochs=EPOCHS):
    return helpers.train_torch(net, x, y, epochs)


def torch_out(net, x):
    import torch
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def description_of_linears(net, act):
    import torch.nn as nn
    linears = [mod for mod in net.modules() if isinstance(mod, nn.Linear)]
    return m.dense_model([l.weight.detach().numpy().T for l in linears],
                         [l.bias.detach().numpy() for l in linears],
                         [act] * (len(linears) - 1) + ["identity"])


@pytest.fixture(scope="module")
def torch_tanh(digits):
    return train_torch(torch_sequential([64, 48, 24, 10], "tanh"), *digits)


def test_torch_state_dict_with_arch(tmp_path, digits, torch_tanh):
    import torch
    x = digits[0]
    path = tmp_path / "digits.pt"
    torch.save(torch_tanh.state_dict(), path)
    model = import_model(path, arch="64-48-24-10:tanh")
    assert detect_format(path) == "torch-state" and model.widths == [64, 48, 24, 10]
    assert_provenance(model, path, "torch-state")
    np.testing.assert_allclose(model.forward(x), torch_out(torch_tanh, x), atol=TOL, rtol=0)
    assert_same_pruning(model, description_of_linears(torch_tanh, "tanh"), x)
    torch.save({"state_dict": torch_tanh.state_dict()}, tmp_path / "ckpt.pth")  # common nesting
    np.testing.assert_array_equal(import_model(tmp_path / "ckpt.pth", arch="64-48-24-10:tanh").forward(x),
                                  model.forward(x))


def test_torch_state_dict_rejections(tmp_path, torch_tanh):
    import torch
    path = tmp_path / "digits.pt"
    torch.save(torch_tanh.state_dict(), path)
    fails(path, "holds no activations: pass an arch string")
    fails(path, r"expects layer 1 weight \[30, 48\] \(\[out, in\]\) but '2.weight' is \[24, 48\]",
          arch="64-48-30-10:tanh")
    fails(path, "has 2 layers but the file has 3 Linear layers", arch="64-48-10:tanh")
    with pytest.raises(PrunedgeError, match="--arch: expected widths"):
        import_model(path, arch="64x48")
    with pytest.raises(PrunedgeError, match="unknown activation 'gelu'"):
        import_model(path, arch="64-48-24-10:gelu")
    torch.save(torch_tanh, tmp_path / "whole.pt")  # a pickled nn.Module: never unpickled
    fails(tmp_path / "whole.pt", "pickled Python objects .* save model.state_dict", arch="64-48-24-10:tanh")
    bn = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    torch.save(bn.state_dict(), tmp_path / "bn.pt")
    fails(tmp_path / "bn.pt", r"unsupported tensors .*'1.running_mean' \[3\] \(entry 4\)", arch="4-3-2")


def test_torchscript_custom_forward(tmp_path, digits):
    import torch
    import torch.nn.functional as F
    x, y = digits

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = torch.nn.Linear(64, 32), torch.nn.Linear(32, 16), torch.nn.Linear(16, 10)
            self.drop = torch.nn.Dropout(0.1)

        def forward(self, images):
            h = images.view(images.size(0), -1)
            h = self.drop(F.leaky_relu(self.fc1(h), 0.01))
            h = torch.sigmoid(self.fc2(h))
            return F.log_softmax(self.fc3(h), dim=1)

    net = Net()
    train_torch(net, x.reshape(-1, 1, 8, 8), y)
    path = tmp_path / "net.pt"
    torch.jit.script(net).save(str(path))
    model = import_model(path)
    assert detect_format(path) == "torchscript"
    assert [l.activation for l in model.layers] == ["leaky_relu", "sigmoid", "identity"]
    assert model.meta["output_transform"] == "log_softmax"
    expected = torch_out(net, x.reshape(-1, 1, 8, 8))
    np.testing.assert_allclose(apply_output_transform(model.meta, model.forward(x)), expected, atol=TOL, rtol=0)
    ref = m.dense_model([l.weight.detach().numpy().T for l in (net.fc1, net.fc2, net.fc3)],
                        [l.bias.detach().numpy() for l in (net.fc1, net.fc2, net.fc3)],
                        ["leaky_relu", "sigmoid", "identity"])
    assert_same_pruning(model, ref, x)


def test_torchscript_needs_the_input_size_of_a_cnn_and_rejects_other_slopes(tmp_path):
    import torch
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(72, 10))
    torch.jit.trace(conv.eval(), torch.zeros(1, 1, 8, 8)).save(str(tmp_path / "conv.pt"))
    fails(tmp_path / "conv.pt", r"TorchScript keeps no input size, which a CNN needs: pass it as --arch HxWxC")
    assert import_model(tmp_path / "conv.pt", arch="8x8x1").input_shape == (8, 8, 1)
    leaky = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LeakyReLU(0.2), torch.nn.Linear(3, 2))
    torch.jit.script(leaky).save(str(tmp_path / "leaky.pt"))
    fails(tmp_path / "leaky.pt", "leaky_relu slope 0.2 is not supported")


# ---------------------------------------------------------------- Keras / SavedModel / TFLite

def keras_digits_model(digits, layers, epochs=EPOCHS):
    import keras
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(), *layers])
    net.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x, y = digits
    net.fit(x.reshape(-1, 8, 8), y, epochs=epochs, batch_size=64, verbose=0)
    return net


def description_of_dense(net, activations):
    dense = [l for l in net.layers if type(l).__name__ == "Dense"]
    return m.dense_model([l.kernel.numpy() for l in dense], [l.bias.numpy() for l in dense], activations)


@pytest.fixture(scope="module")
def keras_mixed(digits):
    """Dense with its own activation, separate Activation/LeakyReLU/ReLU layers, softmax output."""
    import keras
    L = keras.layers
    return keras_digits_model(digits, [
        L.Dense(40, activation="tanh"),
        L.Dense(24), L.Activation("sigmoid"),
        L.Dense(20), L.LeakyReLU(negative_slope=0.01), L.Dropout(0.1),
        L.Dense(16), L.ReLU(),
        L.Dense(10, activation="softmax")])


KERAS_MIXED_ACTS = ["tanh", "sigmoid", "leaky_relu", "relu", "identity"]


def test_keras_file_round_trip(tmp_path, digits, keras_mixed):
    x = digits[0]
    path = tmp_path / "digits.keras"
    keras_mixed.save(path)
    model = import_model(path)
    assert detect_format(path) == "keras" and model.widths == [64, 40, 24, 20, 16, 10]
    assert [l.activation for l in model.layers] == KERAS_MIXED_ACTS
    assert model.meta["output_transform"] == "softmax"
    assert_provenance(model, path, "keras")
    expected = keras_mixed.predict(x.reshape(-1, 8, 8), verbose=0)
    np.testing.assert_allclose(apply_output_transform(model.meta, model.forward(x)), expected, atol=TOL, rtol=0)
    assert_same_pruning(model, description_of_dense(keras_mixed, KERAS_MIXED_ACTS), x)


def test_keras_functional_chain_and_h5(tmp_path, digits):
    import keras
    inp = keras.Input((64,))
    out = keras.layers.Dense(10)(keras.layers.Dense(20, activation="relu")(inp))
    net = keras.Model(inp, out)
    x = digits[0][:100]
    net.save(tmp_path / "f.keras")
    np.testing.assert_allclose(import_model(tmp_path / "f.keras").forward(x), net.predict(x, verbose=0), atol=TOL)
    net.save(tmp_path / "legacy.h5")
    model = import_model(tmp_path / "legacy.h5")
    assert detect_format(tmp_path / "legacy.h5") == "keras"
    np.testing.assert_allclose(model.forward(x), net.predict(x, verbose=0), atol=TOL)


def test_keras_rejects_conv_lstm_branches_and_slopes(tmp_path):
    import keras
    L = keras.layers
    conv = keras.Sequential([keras.Input((8, 8, 1)), L.SeparableConv2D(2, 3, name="conv"),
                             L.UpSampling2D(name="up"), L.Flatten(), L.Dense(10)])
    conv.save(tmp_path / "conv.keras")
    msg = fails(tmp_path / "conv.keras", "unsupported layers: ")
    assert "SeparableConv2D (layer 0 'conv'), UpSampling2D (layer 1 'up')" in msg
    lstm = keras.Sequential([keras.Input((8, 8)), L.LSTM(4, name="lstm"), L.Dense(10)])
    lstm.save(tmp_path / "lstm.keras")
    fails(tmp_path / "lstm.keras", r"unsupported layers: LSTM \(layer 0 'lstm'\)")
    inp = keras.Input((4,))
    h = L.Dense(4)(inp)
    branch = keras.Model(inp, L.Add(name="skip")([inp, h]))
    branch.save(tmp_path / "branch.keras")
    fails(tmp_path / "branch.keras", r"Add \(layer 2 'skip'\): a residual Add of feature vectors \[4\] is not supported")
    slope = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="leaky_relu"), L.Dense(2)])
    slope.save(tmp_path / "slope.keras")
    fails(tmp_path / "slope.keras", r"Dense \(layer 0 '.*'\): leaky_relu slope 0.2 is not supported")
    elu = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="elu"), L.Dense(2)])
    elu.save(tmp_path / "elu.keras")
    fails(tmp_path / "elu.keras", "activation 'elu' is not supported")


def run_tflite(path, x):
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=str(path))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x.reshape(len(x), *inp["shape"][1:]).astype(np.float32))
    interp.invoke()
    return interp.get_tensor(out["index"])


def test_tflite_refuses_quantized_weights(tmp_path, keras_mixed):
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_mixed)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 dynamic-range weights
    (tmp_path / "q.tflite").write_bytes(converter.convert())
    fails(tmp_path / "q.tflite", r"FULLY_CONNECTED \(op \d+\): expected float weights, got int8")


@pytest.mark.parametrize("fp16", [False, True])
def test_tflite_round_trip(tmp_path, digits, keras_mixed, fp16):
    import tensorflow as tf
    x = digits[0][:300]
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_mixed)
    if fp16:  # weights stored as float16 behind DEQUANTIZE ops
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    path = tmp_path / "digits.tflite"
    path.write_bytes(converter.convert())
    model = import_model(path)
    assert detect_format(path) == "tflite"
    assert [l.activation for l in model.layers] == KERAS_MIXED_ACTS
    assert_provenance(model, path, "tflite")
    np.testing.assert_allclose(apply_output_transform(model.meta, model.forward(x)), run_tflite(path, x),
                               atol=TOL, rtol=0)
    ref = description_of_dense(keras_mixed, KERAS_MIXED_ACTS)
    if fp16:
        for a, b in zip(model.layers, ref.layers):
            np.testing.assert_array_equal(a.weight, b.weight.astype(np.float16).astype(np.float32))
    else:
        assert_same_pruning(model, ref, x)


def _tflite_fuse_tanh(raw: bytes, fused_code: int) -> bytes:
    """Fold the converter's separate TANH op into the preceding FULLY_CONNECTED (fused form)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fb
    model = fb.convert_bytearray_to_object(bytearray(raw))
    ops = model.subgraphs[0].operators
    code = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    kind = [code[max(model.operatorCodes[o.opcodeIndex].builtinCode,
                     model.operatorCodes[o.opcodeIndex].deprecatedBuiltinCode)] for o in ops]
    i = next(i for i in range(len(ops) - 1) if kind[i] == "FULLY_CONNECTED" and kind[i + 1] == "TANH")
    ops[i].builtinOptions.fusedActivationFunction = fused_code
    ops[i].outputs = ops[i + 1].outputs
    del ops[i + 1]
    return bytes(fb.convert_object_to_bytearray(model))


def test_tflite_fused_activations(tmp_path, digits, keras_mixed):
    import tensorflow as tf
    from ai_edge_litert.schema_py_generated import ActivationFunctionType as A
    x = digits[0][:300]
    raw = tf.lite.TFLiteConverter.from_keras_model(keras_mixed).convert()
    path = tmp_path / "fused.tflite"
    (tmp_path / "separate.tflite").write_bytes(raw)
    separate = import_model(tmp_path / "separate.tflite")
    # LiteRT's kernel cannot run FC+fused TANH, but the schema defines it: same model either way.
    path.write_bytes(_tflite_fuse_tanh(raw, A.TANH))
    fused = import_model(path)
    assert [l.activation for l in fused.layers] == KERAS_MIXED_ACTS
    np.testing.assert_array_equal(fused.forward(x), separate.forward(x))
    path.write_bytes(_tflite_fuse_tanh(raw, A.RELU6))  # relu6 is a description activation now
    assert [l.activation for l in import_model(path).layers] == ["relu6"] + KERAS_MIXED_ACTS[1:]
    path.write_bytes(_tflite_fuse_tanh(raw, A.RELU_N1_TO_1))
    fails(path, r"FULLY_CONNECTED \(op \d+\): fused activation RELU_N1_TO_1 is not supported")


def test_saved_model_directory(tmp_path, digits, keras_mixed):
    x = digits[0][:300]
    keras_mixed.export(str(tmp_path / "sm"), verbose=False)
    model = import_model(tmp_path / "sm")
    assert detect_format(tmp_path / "sm") == "savedmodel"
    assert_provenance(model, tmp_path / "sm", "savedmodel")
    expected = keras_mixed.predict(x.reshape(-1, 8, 8), verbose=0)
    np.testing.assert_allclose(apply_output_transform(model.meta, model.forward(x)), expected, atol=TOL, rtol=0)
    assert_same_pruning(model, description_of_dense(keras_mixed, KERAS_MIXED_ACTS), x)


def test_tflite_rejects_dilated_conv_and_skip_connections_of_vectors(tmp_path):
    import keras
    import tensorflow as tf
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, dilation_rate=2),
                             keras.layers.Flatten(), keras.layers.Dense(10)])
    (tmp_path / "conv.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(conv).convert())
    # the converter spells a dilated convolution as space-to-batch around a plain CONV_2D
    fails(tmp_path / "conv.tflite", r"unsupported ops: SPACE_TO_BATCH_ND \(op 0\), BATCH_TO_SPACE_ND \(op 2\)")
    inp = keras.Input((4,))
    skip = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Add()([inp, keras.layers.Dense(4)(inp)])))
    (tmp_path / "skip.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(skip).convert())
    fails(tmp_path / "skip.tflite", r"ADD \(op \d+\): a residual Add of feature vectors \[4\] is not supported")


# ---------------------------------------------------------------- ONNX rejections

def test_onnx_rejects_unsupported_ops_listing_every_op(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("ConvTranspose", ["x", "k"], ["c"], name="deconv1"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("LRN", ["r"], ["p"], size=3),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(np.zeros((1, 2, 3, 3), np.float32), "k"),
             numpy_helper.from_array(np.zeros((10, 200), np.float32), "w")]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=inits)
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    msg = fails(tmp_path / "model.onnx", "unsupported ops")
    assert msg == f"{tmp_path / 'model.onnx'}: unsupported ops: ConvTranspose (node 0 'deconv1'), LRN (node 2)"


def _tiny_onnx(tmp_path, nodes, inits, name="bad.onnx", width=4):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / name))
    return tmp_path / name


def test_onnx_structural_rejections(tmp_path):
    from onnx import helper
    w = {"W": np.ones((4, 3), np.float32), "W2": np.ones((3, 3), np.float32)}
    skip = _tiny_onnx(tmp_path, [helper.make_node("MatMul", ["x", "W"], ["h"]),
                                 helper.make_node("MatMul", ["h", "W2"], ["h2"]),
                                 helper.make_node("Add", ["h", "h2"], ["y"], name="skip")], w, "skip.onnx")
    fails(skip, "Add \\(node 2 'skip'\\): a residual Add of feature vectors \\[3\\] is not supported")
    leaky = _tiny_onnx(tmp_path, [helper.make_node("MatMul", ["x", "W"], ["h"]),
                                  helper.make_node("LeakyRelu", ["h"], ["y"], alpha=0.3)], w, "leaky.onnx")
    fails(leaky, "LeakyRelu \\(node 1\\): leaky_relu slope 0.3 is not supported")
    weights_as_input = _tiny_onnx(tmp_path, [helper.make_node("MatMul", ["x", "V"], ["y"])], {}, "input.onnx")
    fails(weights_as_input, "'V' is not a constant initializer")
    wide = _tiny_onnx(tmp_path, [helper.make_node("MatMul", ["x", "W"], ["y"])], w, "wide.onnx", width=5)
    fails(wide, "input has 5 features but the first layer takes 4")
    ok = _tiny_onnx(tmp_path, [helper.make_node("MatMul", ["x", "W"], ["y"])], w, "ok.onnx")
    fails(ok, "arch 4-5-3:relu does not match the file's layer widths 4-3", arch="4-5-3")
    assert import_model(ok, arch="4-3").widths == [4, 3]


# ---------------------------------------------------------------- corrupt files and data

@pytest.fixture(scope="module")
def good_files(tmp_path_factory, keras_mixed, torch_tanh):
    import tensorflow as tf
    import torch
    d = tmp_path_factory.mktemp("good")
    onnx_from_model(m.random_model([64, 8, 10], seed=1), d / "m.onnx")
    keras_mixed.save(d / "m.keras")
    torch.save(torch_tanh.state_dict(), d / "m.pt")
    torch.jit.script(torch_tanh).save(str(d / "ts.pt"))
    (d / "m.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_mixed).convert())
    return d


def _damage(raw: bytes, how: str) -> bytes:
    if how == "truncated":
        return raw[: len(raw) // 2]
    if how == "garbage":
        return np.random.default_rng(0).bytes(2048)
    mid = len(raw) // 2  # bitflip: only zip formats carry checksums that can catch it
    return raw[:mid] + bytes(b ^ 0xFF for b in raw[mid:mid + 16]) + raw[mid + 16:]


@pytest.mark.parametrize("name, damage", [(n, d) for n in ("m.onnx", "m.keras", "m.pt", "ts.pt", "m.tflite")
                                          for d in ("truncated", "garbage")]
                         + [(n, "bitflip") for n in ("m.keras", "m.pt", "ts.pt")])
def test_corrupt_files_give_one_line_naming_the_file(tmp_path, good_files, name, damage):
    bad = tmp_path / name
    bad.write_bytes(_damage((good_files / name).read_bytes(), damage))
    msg = fails(bad, "corrupt|truncated", arch="64-48-24-10:tanh")
    assert msg.startswith(f"{bad}: ") and len(msg) < 300


def test_unknown_empty_and_missing_inputs(tmp_path):
    (tmp_path / "model.bin2").write_bytes(b"hello world")
    fails(tmp_path / "model.bin2", "unknown model format")
    (tmp_path / "empty.onnx").write_bytes(b"")
    fails(tmp_path / "empty.onnx", "empty file")
    fails(tmp_path / "missing.onnx", "model file not found")
    (tmp_path / "dir").mkdir()
    fails(tmp_path / "dir", "not a TensorFlow SavedModel")


def test_data_checked_against_the_imported_model(tmp_path, good_files, digits):
    model = import_model(good_files / "m.pt", arch="64-48-24-10:tanh")
    x, y = digits
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    xs, ys = load_labeled(tmp_path / "ok.npz", input_dim=model.input_dim, n_classes=model.output_dim)
    assert (model.predict(xs) == ys).mean() > 0.5
    np.savez(tmp_path / "wide.npz", x=np.zeros((4, 784), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(PrunedgeError, match="784 features per example but the model takes 64"):
        load_labeled(tmp_path / "wide.npz", input_dim=model.input_dim)
    np.savez(tmp_path / "range.npz", x=x[:4], y=np.array([0, 1, 10, 2]))
    with pytest.raises(PrunedgeError, match="label 10 at example 2 is out of range"):
        load_labeled(tmp_path / "range.npz", n_classes=model.output_dim)
    np.savez(tmp_path / "nan.npz", x=np.full((4, 64), np.nan, np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(PrunedgeError, match="NaN"):
        load_labeled(tmp_path / "nan.npz", input_dim=model.input_dim)


# ---------------------------------------------------------------- every activation through every stage

@pytest.mark.parametrize("k", [50, 90, 99])
@pytest.mark.parametrize("activation", sorted(m.ACTIVATIONS))
def test_every_activation_survives_unit_shrink_and_csr(digits, activation, k):
    x = digits[0][:300]
    model = m.random_model([64, 48, 32, 24, 10], seed=11, activations=[activation] * 3 + ["identity"])
    model = model.with_layers([m.Dense(l.weight, (l.bias + 0.7).astype(np.float32), l.activation)
                               for l in model.layers])  # act(bias) far from 0: a missing fold would show
    masked = unit_prune(model, k)
    small = shrink(masked)
    assert small.widths[1:-1] < model.widths[1:-1]
    assert [l.activation for l in small.layers] == [l.activation for l in model.layers]
    assert np.abs(small.forward(x) - masked.forward(x)).max() <= TOL
    wmasked = weight_prune(model, k)
    csr = to_csr(wmasked)
    assert all(l.is_sparse for l in csr.layers[:-1])
    assert np.abs(csr.forward(x) - wmasked.forward(x)).max() <= TOL


def test_mixed_activations_of_an_imported_model_survive_every_stage(good_files, digits):
    x = digits[0][:300]
    model = import_model(good_files / "m.keras")
    for k in (50, 90):
        masked = unit_prune(model, k)
        np.testing.assert_allclose(shrink(masked).forward(x), masked.forward(x), atol=TOL, rtol=0)
        wmasked = weight_prune(model, k)
        np.testing.assert_allclose(to_csr(wmasked).forward(x), wmasked.forward(x), atol=TOL, rtol=0)
    path = m_io.save(shrink(unit_prune(model, 50)), good_files / "shrunk.npz")  # meta survives save/load
    assert m_io.load(path).meta["output_transform"] == "softmax"


def test_cli_summarises_scores_and_writes(tmp_path, good_files, digits, capsys):
    from pipeline.importers.__main__ import main
    np.savez(tmp_path / "d.npz", x=digits[0], y=digits[1])
    out = tmp_path / "imported.npz"
    assert main([str(good_files / "m.pt"), "--arch", "64-48-24-10:tanh", "--data", str(tmp_path / "d.npz"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "format: torch-state  widths: 64-48-24-10  activations: tanh, tanh, identity" in printed
    assert "accuracy: " in printed and m_io.load(out).meta["source_format"] == "torch-state"
    assert main([str(good_files / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "arch string" in err
