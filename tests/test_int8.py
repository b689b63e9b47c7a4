"""Full-integer TFLite files: int8 inside, float32 logits, and the calibration images export picks.

The int8-full recipe keeps every op int8 except the one writing the logits, which runs in float32
on its dequantized int8 input (`export.tflite_format.Recipe.float_logits`: int8 logits alone cost
the trained MLP 1.2-1.4 points of top-1 agreement). Small random models; their logits are
near-tied, so agreement is judged loosely here and at 0.99 on trained models by verification.
"""
from __future__ import annotations

import numpy as np
import pytest

from export import formats as F
from export.runners import TfliteSession, quantize
from export.tflite_format import RECIPES, Recipe, convert
from helpers import SMALL_WIDTHS, real_test_slice
from pipeline import prune, shrink, sparse
from pipeline.model import random_model

INT8_REL_L2 = 0.15  # ||y - ref|| / ||ref||: ~0.02-0.08 on these models; a broken scale or kernel is >> 0.15
MIN_AGREEMENT = 0.95  # random models have near-ties; verification asks 0.99 of trained models
FLOAT_OP_ATOL = 1e-4  # the float classifier recomputed in numpy from its int8 input: only summation order


def _models() -> dict:
    dense = random_model(SMALL_WIDTHS, seed=3)
    return {"dense": dense.with_layers(dense.layers, physical="dense"),
            "shrunk": shrink.shrink(prune.unit_prune(dense, 50)),
            "csr": sparse.to_csr(prune.weight_prune(dense, 80))}


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return real_test_slice(300)


@pytest.fixture(scope="module")
def files(tmp_path_factory, x) -> dict:
    """kind -> (model, int8-full file written by the table's exporter)."""
    out = tmp_path_factory.mktemp("int8")
    fmt = F.FORMATS["tflite-int8-full"]
    return {kind: (m, fmt.export(m, out / kind / fmt.suffix, F.ExportOptions(calibration=x[:100])))
            for kind, m in _models().items()}


def _interpreter(path, **kw):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    return Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                       **kw)


def _fc_weights(it) -> list[dict]:
    """Weight tensor details of every FULLY_CONNECTED, in graph order."""
    details = {d["index"]: d for d in it.get_tensor_details()}
    return [details[op["inputs"][1]] for op in it._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]


@pytest.mark.parametrize("kind", ["dense", "shrunk", "csr"])
def test_int8_inside_float_logits(kind, files, x):
    model, path = files[kind]
    it = _interpreter(path)
    assert np.dtype(it.get_input_details()[0]["dtype"]) == np.int8
    assert np.dtype(it.get_output_details()[0]["dtype"]) == np.float32
    weights = [np.dtype(d["dtype"]) for d in _fc_weights(it)]
    assert weights == [np.int8] * (len(SMALL_WIDTHS) - 2) + [np.float32]  # only the classifier is float
    scales = [len(d["quantization_parameters"]["scales"]) for d in _fc_weights(it)[:-1]]
    assert scales == [d["shape"][0] for d in _fc_weights(it)[:-1]]  # per-channel: one scale per unit
    ops = [op["op_name"] for op in it._get_ops_details()]
    assert ops.count("DEQUANTIZE") == 1 and "QUANTIZE" not in ops  # the int8 input is consumed as is
    ref = model.forward(x)
    for delegate in ("xnnpack", "none"):
        y = TfliteSession(path, delegate=delegate)(x)
        assert y.dtype == np.float32 and y.shape == ref.shape
        assert np.linalg.norm(y - ref) / np.linalg.norm(ref) <= INT8_REL_L2
        assert np.mean(y.argmax(1) == ref.argmax(1)) >= MIN_AGREEMENT


def test_logits_are_the_float_classifier_of_the_int8_activations(files, x):
    """Not rounded to an int8 grid: the output is exactly the float last layer applied to the
    dequantized int8 activations feeding it."""
    model, path = files["dense"]
    it = _interpreter(path, experimental_preserve_all_tensors=True)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], [len(x), *model.input_shape])
    it.allocate_tensors()
    it.set_tensor(inp["index"], quantize(x, inp))
    it.invoke()
    dequantize = next(op for op in it._get_ops_details() if op["op_name"] == "DEQUANTIZE")
    source = next(d for d in it.get_tensor_details() if d["index"] == dequantize["inputs"][0])
    scale, zero = source["quantization"]
    hidden = (it.get_tensor(source["index"]).astype(np.float32) - zero) * scale
    last = model.layers[-1]
    np.testing.assert_allclose(it.get_tensor(out["index"]), hidden @ last.dense_weight() + last.bias,
                               rtol=0, atol=FLOAT_OP_ATOL)
    assert len(np.unique(it.get_tensor(out["index"]))) > 256  # int8 logits would have at most 256 values


def test_int8_logits_recipe_still_builds(files, x):
    """float_logits=False: the plain converter path (int8 output), kept for comparisons."""
    model, _ = files["dense"]
    content = convert(model, Recipe(optimizations=("DEFAULT",), int8_full=True), F.ExportOptions(calibration=x[:100]))
    from ai_edge_litert.interpreter import Interpreter
    assert np.dtype(Interpreter(model_content=content).get_output_details()[0]["dtype"]) == np.int8
    assert RECIPES["int8-full"].float_logits


def test_same_inputs_same_bytes(files, x):
    model, path = files["csr"]
    again = convert(model, "int8-full", F.ExportOptions(calibration=x[:100]))
    assert again == path.read_bytes()


def test_cnn_classifier_runs_float(x):
    from pipeline.fold import fold_batchnorm
    from pipeline.nets import Block, CnnSpec, cnn
    net = fold_batchnorm(cnn(0, CnnSpec(stem=8, blocks=(Block(expand=16, out=8, stride=2),), head=16)))
    images = x[:64].reshape(-1, 28, 28, 1)
    content = convert(net, "int8-full", F.ExportOptions(calibration=images[:32]))
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=content)
    assert np.dtype(it.get_input_details()[0]["dtype"]) == np.int8
    assert np.dtype(it.get_output_details()[0]["dtype"]) == np.float32
    assert [np.dtype(d["dtype"]) for d in _fc_weights(it)] == [np.float32]
    assert {op["op_name"] for op in it._get_ops_details()} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN"}
