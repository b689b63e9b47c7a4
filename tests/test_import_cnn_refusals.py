"""What the CNN importers refuse, each with one line naming the file, the op and its position.

Dilation other than 1, groups other than 1 or depthwise, a depth multiplier other than 1, a
padded average pool, unsupported ops, branches that do not join in a residual Add of two
tensors of one shape (a concat, an add of two shapes, a tensor read from before its
activation), a CNN state_dict, and a TorchScript CNN without its input size.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from pipeline.errors import PrunedgeError
from pipeline.importers import import_model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def fails(path, match, **kwargs) -> str:
    with pytest.raises(PrunedgeError, match=match) as e:
        import_model(path, **kwargs)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{path}: ")
    return str(e.value)


# ---------------------------------------------------------------- ONNX

def onnx_file(path, nodes, inits: dict, *, shape=(2, 6, 6), out_width=4):
    """A graph on x [N, C, H, W] ending in Flatten -> Gemm(W_fc) so that every refusal is mid-graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_width])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def conv_head(x: str, features: int):
    from onnx import helper
    return [helper.make_node("Flatten", [x], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)], \
        {"fc": np.zeros((4, features))}


@pytest.mark.parametrize("channels, weight, attrs, match", [
    (2, (4, 2, 3, 3), {"dilations": [2, 2]}, r"Conv \(node 0 'c'\): dilation \[2, 2\] is not supported \(only 1\)"),
    (4, (4, 2, 3, 3), {"group": 2}, r"Conv \(node 0 'c'\): group 2 is not supported \(only 1, or depthwise: "
                                    r"group = the 4 input channels\)"),
    (2, (4, 1, 3, 3), {"group": 2}, r"Conv \(node 0 'c'\): depthwise channel multiplier 2 is not supported"),
], ids=["dilation", "groups", "multiplier"])
def test_onnx_refuses_dilation_groups_and_multipliers(tmp_path, channels, weight, attrs, match):
    from onnx import helper
    head, fc = conv_head("c", 4 * 16)
    node = helper.make_node("Conv", ["x", "k"], ["c"], name="c", **attrs)
    fails(onnx_file(tmp_path / "m.onnx", [node, *head], {"k": np.zeros(weight), **fc}, shape=(channels, 6, 6)), match)


def test_onnx_refuses_padded_average_pool_and_unsupported_ops(tmp_path):
    from onnx import helper
    head, fc = conv_head("p", 2 * 9)
    pool = helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])
    fails(onnx_file(tmp_path / "avg.onnx", [pool, *head], fc),
          r"AveragePool \(node 0\): padded average pooling \(pads \[0, 1, 0, 1\]\) is not supported")
    same = helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")
    import_model(onnx_file(tmp_path / "same.onnx", [same, *head], fc))  # 6x6 by 2: SAME adds nothing
    head, fc = conv_head("u", 2 * 144)
    resize = helper.make_node("Resize", ["x", "", "scales"], ["u"], name="up")
    msg = fails(onnx_file(tmp_path / "resize.onnx", [resize, *head], {"scales": [1, 1, 2, 2], **fc}),
                "unsupported ops")
    assert msg.endswith("unsupported ops: Resize (node 0 'up')")


def test_onnx_refuses_branches_other_than_a_residual_add(tmp_path):
    from onnx import helper
    k = {"k": np.ones((2, 2, 1, 1)), "k3": np.ones((2, 2, 3, 3))}
    head, fc = conv_head("cat", 4 * 36)
    concat = [helper.make_node("Conv", ["x", "k"], ["a"]), helper.make_node("Conv", ["x", "k"], ["b"]),
              helper.make_node("Concat", ["a", "b"], ["cat"], axis=1, name="join")]
    fails(onnx_file(tmp_path / "concat.onnx", [*concat, *head], {**k, **fc}),
          r"unsupported ops: Concat \(node 2 'join'\)$")
    head, fc = conv_head("s", 2 * 36)
    shapes = [helper.make_node("Conv", ["x", "k3"], ["a"], pads=[1, 1, 1, 1]),
              helper.make_node("Conv", ["x", "k3"], ["b"]),
              helper.make_node("Add", ["a", "b"], ["s"], name="sum")]
    fails(onnx_file(tmp_path / "shapes.onnx", [*shapes, *head], {**k, **fc}),
          r"Add \(node 2 'sum'\): adds shapes \[6, 6, 2\] and \[4, 4, 2\]: only a residual Add")
    stale = [helper.make_node("Conv", ["x", "k"], ["a"], name="c0"), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Add", ["r", "a"], ["s"], name="sum")]
    fails(onnx_file(tmp_path / "stale.onnx", [*stale, *head], {**k, **fc}),
          r"Add \(node 2 'sum'\): reads the output of Conv \(node 0 'c0'\) from before its activation relu")
    unused = [helper.make_node("Conv", ["x", "k"], ["a"], name="c0"),
              helper.make_node("Conv", ["x", "k"], ["s"], name="c1")]
    fails(onnx_file(tmp_path / "unused.onnx", [*unused, *head], {**k, **fc}),
          r"Conv \(node 0 'c0'\): its output is never used \(branches may only join in a residual Add\)")


# ---------------------------------------------------------------- Keras and TFLite

def keras_model(*layers, shape=(6, 6, 2)):
    import keras
    return keras.Sequential([keras.Input(shape), *layers, keras.layers.Flatten(), keras.layers.Dense(4)])


def test_keras_and_tflite_refuse_multipliers_dilation_groups_and_padded_average_pools(tmp_path):
    import keras
    import tensorflow as tf
    L = keras.layers
    cases = [  # (layers, Keras refusal, TFLite refusal or None when the converter rewrites the op)
        ([L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")],
         r"DepthwiseConv2D \(layer 0 'dw'\): depth_multiplier 2 is not supported \(only 1\)",
         r"DEPTHWISE_CONV_2D \(op 0\): depth multiplier 2 is not supported \(only 1\)"),
        ([L.Conv2D(2, 3, dilation_rate=2, name="c")], r"Conv2D \(layer 0 'c'\): dilation \[2, 2\] is not supported",
         r"unsupported ops: SPACE_TO_BATCH_ND \(op 0\), BATCH_TO_SPACE_ND \(op 2\)"),
        ([L.Conv2D(4, 3, groups=2, name="c")], r"Conv2D \(layer 0 'c'\): groups 2 is not supported", None),
        ([L.AveragePooling2D(2, strides=2, padding="same", name="p")],
         r"AveragePooling2D \(layer 0 'p'\): padded average pooling \(pads \[0, 1, 0, 1\]\)",
         r"AVERAGE_POOL_2D \(op 0\): padded average pooling \(pads \[0, 1, 0, 1\]\)"),
    ]
    for i, (layers, keras_match, tflite_match) in enumerate(cases):
        net = keras_model(*layers, shape=(5, 5, 2))
        net.save(tmp_path / f"m{i}.keras")
        fails(tmp_path / f"m{i}.keras", keras_match)
        if tflite_match:
            (tmp_path / f"m{i}.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(net).convert())
            fails(tmp_path / f"m{i}.tflite", tflite_match)


def test_keras_and_tflite_refuse_concat_branches(tmp_path):
    import keras
    import tensorflow as tf
    L = keras.layers
    inp = keras.Input((6, 6, 2))
    a, b = L.Conv2D(2, 1)(inp), L.Conv2D(2, 1)(inp)
    net = keras.Model(inp, L.Dense(4)(L.Flatten()(L.Concatenate(name="cat")([a, b]))))
    net.save(tmp_path / "cat.keras")
    fails(tmp_path / "cat.keras", r"unsupported layers: Concatenate \(layer 3 'cat'\)")
    (tmp_path / "cat.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(net).convert())
    fails(tmp_path / "cat.tflite", r"CONCATENATION \(op \d+\): CONCATENATION on the layer data is not supported")


# ---------------------------------------------------------------- PyTorch

def test_torch_refusals(tmp_path):
    import torch
    from torch import nn
    def save(net, name, how="trace"):
        net = nn.Sequential(*net, nn.Flatten(), nn.LazyLinear(4)).eval()
        net(torch.zeros(1, 2, 6, 6))  # materialise the lazy layer
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if how == "trace":
                torch.jit.trace(net, torch.zeros(1, 2, 6, 6)).save(str(tmp_path / name))
            else:
                torch.export.save(torch.export.export(net, (torch.zeros(1, 2, 6, 6),)), str(tmp_path / name))
        return tmp_path / name

    fails(save([nn.Conv2d(2, 2, 3)], "plain.pt"), "TorchScript keeps no input size.*--arch HxWxC")
    fails(save([nn.Conv2d(2, 2, 3, dilation=2)], "dil.pt"), r"aten::_convolution \(node \d+\): dilation \[2, 2\]",
          arch="6x6x2")
    fails(save([nn.Conv2d(2, 4, 3, groups=2)], "groups.pt2", "export"),
          r"aten::conv2d \(node 0 'conv2d'\): depthwise channel multiplier 2 is not supported")
    fails(save([nn.AvgPool2d(2, padding=1)], "avg.pt2", "export"),
          r"aten::avg_pool2d \(node 0 'avg_pool2d'\): padded average pooling")
    fails(save([nn.Upsample(scale_factor=2)], "up.pt2", "export"), r"unsupported ops: aten::upsample_nearest2d")
    torch.save(nn.Sequential(nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2)).state_dict(), tmp_path / "cnn.pt")
    fails(tmp_path / "cnn.pt", r"a CNN state_dict \('0.weight' \[2, 2, 3, 3\]\) holds no strides, padding, pooling "
                               r"or wiring.*save a TorchScript")
    fails(tmp_path / "cnn.pt", "a CNN state_dict", arch="6x6x2")
