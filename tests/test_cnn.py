"""Convolutional networks through the description: converters, BatchNorm folding, filter pruning
with coupled channels, conv CSR, block pruning of 1x1 convs, every export format in its runtime.

Tolerances: float32 kernels only reorder sums. A conv output sums in*kh*kw products (at most 288
here), so runtime logits differ from numpy by ~1e-6; FP32 (1e-4) holds with two orders of margin.
Removing channels that output exactly 0 (or a constant folded into the readers' biases) changes
only summation order: shrunk vs masked <= 1e-5.
"""
from dataclasses import replace

import numpy as np
import pytest

from helpers import real_test_slice
from pipeline import channels
from pipeline.checks import FP32, compare
from pipeline.errors import PrunedgeError
from pipeline.fold import fold_batchnorm
from pipeline.layers import Add, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Flatten, Pool2D
from pipeline.methods import physical, prune
from pipeline.model import Model, validate
from pipeline.nets import Block, CnnSpec, cnn
from pipeline.prune import count_to_remove

SPEC = CnnSpec(stem=8, blocks=(Block(expand=16, out=8), Block(expand=32, out=16, stride=2),
                               Block(expand=32, out=16)), head=24)
SHRINK_ATOL = 1e-5


def _randomize_bn(model: Model, seed: int = 1) -> Model:
    rng = np.random.default_rng(seed)
    u = lambda a, lo, hi: rng.uniform(lo, hi, a.shape).astype(np.float32)  # noqa: E731
    return model.with_layers([replace(l, gamma=u(l.gamma, .5, 1.5), beta=u(l.beta, -.2, .2), mean=u(l.mean, -.2, .2),
                                      var=u(l.var, .5, 2.)) if isinstance(l, BatchNorm) else l for l in model.layers])


@pytest.fixture(scope="module")
def with_bn():
    return _randomize_bn(cnn(0, SPEC))


@pytest.fixture(scope="module")
def folded(with_bn):
    return fold_batchnorm(with_bn).with_layers(fold_batchnorm(with_bn).layers, method="dense", sparsity=0.0)


@pytest.fixture(scope="module")
def x():
    return real_test_slice(64)


def test_fold_is_exact_and_recorded(with_bn, folded, x):
    assert not any(isinstance(l, BatchNorm) for l in folded.layers)
    assert folded.meta["batchnorm_folded"] == sum(isinstance(l, BatchNorm) for l in with_bn.layers)
    np.testing.assert_allclose(folded.forward(x), with_bn.forward(x), atol=SHRINK_ATOL)


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_framework_converters_match_numpy(framework, with_bn, x):
    ref = with_bn.forward(x)
    if framework == "torch":
        import torch
        from pipeline.torch_net import from_torch, to_torch
        net = to_torch(with_bn)
        with torch.no_grad():
            y = net(torch.from_numpy(x)).numpy()
        back = from_torch(net)
    else:
        from pipeline.keras_net import from_keras, to_keras
        net = to_keras(with_bn)
        y = np.asarray(net(x, training=False))
        back = from_keras(net, template=with_bn)
    assert compare(ref, y, FP32)["status"] == "passed"
    np.testing.assert_array_equal(back.forward(x), ref)


def test_residual_add_is_one_group_pruned_on_both_sides(folded):
    joined = [g for g in channels.groups(folded) if len(g.producers) == 2]
    assert joined, "the stem and the first block's projection meet in an Add"
    masked = prune(folded, "unit", 50)
    for g in joined:
        zero = [np.flatnonzero(~masked.layers[i].dense_weight().reshape(g.size, -1).any(axis=1)) for i in g.producers]
        np.testing.assert_array_equal(zero[0], zero[1])
        assert len(zero[0]) == min(count_to_remove(g.size, 50), g.size - 1)


@pytest.mark.parametrize("k", [25, 50, 75, 90])
def test_filter_pruning_shrinks_exactly(folded, x, k):
    masked = prune(folded, "unit", k)
    shrunk = physical(masked)
    assert shrunk.meta["physical"] == "shrunk" and shrunk.n_params < folded.n_params
    for g in channels.groups(folded):
        if g.prunable:
            kept = shrunk.shapes()[g.producers[0]][-1]
            assert kept == g.size - min(count_to_remove(g.size, k), g.size - 1)
    np.testing.assert_allclose(shrunk.forward(x), masked.forward(x), atol=SHRINK_ATOL)


def test_dense_after_flatten_loses_every_position_of_a_channel(x):
    """channels_first and channels_last features: the Dense rows of a removed channel go with it."""
    rng = np.random.default_rng(0)
    for layout in Flatten.LAYOUTS:
        layers = (Conv2D(rng.normal(0, .3, (6, 1, 3, 3)).astype(np.float32), np.full(6, .1, np.float32),
                         stride=(2, 2), pads=(1, 1, 1, 1)),
                  Pool2D("max", (2, 2), (2, 2)), Flatten(layout),
                  Dense(rng.normal(0, .1, (7 * 7 * 6, 10)).astype(np.float32), np.zeros(10, np.float32), "identity"))
        model = validate(Model(layers, {"method": "dense", "sparsity": 0.0}, (28, 28, 1)))
        masked = prune(model, "unit", 50)
        shrunk = physical(masked)
        assert shrunk.layers[0].out_channels == 3 and shrunk.layers[3].shape == (7 * 7 * 3, 10)
        np.testing.assert_allclose(shrunk.forward(x), masked.forward(x), atol=SHRINK_ATOL)


@pytest.mark.parametrize("method", ["weight", "block"])
def test_conv_csr_forward_matches_the_masked_model(folded, x, method):
    masked = prune(folded, method, 90)
    stored = physical(masked)
    sparse = [l for l in stored.layers if getattr(l, "is_sparse", False)]
    assert sparse and all(l.weight.shape[1] == l.in_channels * int(np.prod(l.kernel)) for l in sparse
                          if isinstance(l, Conv2D))
    np.testing.assert_allclose(stored.forward(x), masked.forward(x), atol=SHRINK_ATOL)


def test_block_prunes_only_pointwise_convs_along_input_channels(folded):
    masked = prune(folded, "block", 75)
    for before, after in zip(folded.layers, masked.layers):
        if isinstance(after, Conv2D) and after.kernel == (1, 1) and after is not masked.layers[-1]:
            w = after.dense_weight()[:, :, 0, 0]  # [out, in]: blocks of 4 consecutive inputs
            groups = w[:, :w.shape[1] - w.shape[1] % 4].reshape(w.shape[0], -1, 4)
            assert np.all((groups != 0).all(axis=2) | (groups == 0).all(axis=2))
        elif isinstance(after, (Conv2D, DepthwiseConv2D)):
            np.testing.assert_array_equal(after.dense_weight(), before.dense_weight())


def test_mlp_only_methods_refuse_a_cnn(folded):
    with pytest.raises(PrunedgeError, match="'lowrank' does not apply to a CNN"):
        prune(folded, "lowrank", 50)


def test_batchnorm_that_cannot_fold_is_refused():
    bn = BatchNorm(np.ones(1, np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32), np.ones(1, np.float32))
    model = Model((bn, Flatten(), Dense(np.ones((784, 2), np.float32), np.zeros(2, np.float32), "identity")),
                  {}, (28, 28, 1))
    with pytest.raises(PrunedgeError, match=r"layer 0 \(batchnorm\): can only be folded"):
        fold_batchnorm(validate(model))


def test_add_of_different_shapes_is_refused():
    conv = Conv2D(np.ones((2, 1, 1, 1), np.float32), np.zeros(2, np.float32))
    layers = (conv, Add(inputs=(-1, 0)))
    with pytest.raises(PrunedgeError, match=r"adds shapes \[28, 28, 1\] and \[28, 28, 2\]"):
        validate(Model(layers, {}, (28, 28, 1)))


@pytest.fixture(scope="module")
def cnn_kinds(folded):
    return {"dense": folded, "shrunk": physical(prune(folded, "unit", 50)), "csr": physical(prune(folded, "weight", 90))}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dense", "shrunk", "csr"])
def test_every_applicable_format_exports_and_verifies_in_its_runtime(kind, cnn_kinds, x, tmp_path):
    """Each file kind a CNN gets (ONNX: Conv, pooling, Flatten, Gemm, Add, Clip; TFLite: CONV_2D,
    DEPTHWISE_CONV_2D, MEAN, FULLY_CONNECTED, ADD), checked like export checks it."""
    from export import formats as F
    from export.verify import EvalData, verify_file
    model = cnn_kinds[kind]
    data = EvalData(x_check=x, x_test=x, y_test=model.predict(x), x_calibration=x[:32], source="t", sha256="0")
    names = [f.name for f in F.for_model(model)]
    assert {"onnx", "tflite", "tflite-fp16", "tflite-int8-dynamic", "tflite-int8-full", "onnx-int8"} <= set(names)
    assert ("onnx-sparse" in names) == (kind == "csr") and "tflite-block" not in names
    for fmt in F.for_model(model):
        path = fmt.export(model, tmp_path / fmt.suffix, F.ExportOptions(calibration=x[:32]))
        outcome = verify_file(path, fmt, model.forward(x), data)
        assert outcome.verify["status"] == "passed", (fmt.name, outcome.verify)
    ops = set(F.INSPECT["tflite"](tmp_path / "model.tflite")[0])
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED"} <= ops
