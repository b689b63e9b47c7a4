"""The NCNN runner of bundle_template/predict.py: every layer type the exporter writes, float32
exactly (ncnn's fp16/bf16 defaults off), and a .bin that must hold exactly the weights its .param
declares (ncnn reads weights from memory without bounds and reports no status).

Bundle contents, parity with the numpy reference, self-test, tampering and bench_device.py for NCNN
bundles of an MLP and a CNN are in tests/test_bundle.py (parametrized over every format).
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bundle import build as B
from bundle.template import load_template_predict
from export import ncnn_format
from pipeline.errors import PrunedgeError
from pipeline.layers import Add, Conv2D, Dense, DepthwiseConv2D, GlobalAvgPool, Pool2D
from pipeline.model import Model, random_model, validate
from test_bundle import LOGIT_ATOL, assert_one_line_error, export_kdir, run_script

FP16_TAG = bytes.fromhex("476b3001")  # ncnn's tag for fp16 weights (0x01306B47, little-endian)


def every_layer_cnn(seed: int = 1) -> Model:
    """A residual block (Split, BinaryOp, ReLU), average pooling, a leaky depthwise conv, global
    pooling and a tanh Dense (a separate TanH layer): every ncnn layer type export.ncnn_format writes."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return rng.normal(0, 0.5, shape).astype(np.float32)
    layers = (Conv2D(w(4, 2, 3, 3), w(4), pads=(1, 1, 1, 1)),
              Conv2D(w(4, 4, 3, 3), w(4), pads=(1, 1, 1, 1), activation="identity"),
              Add(inputs=(0, 1), activation="relu"), Pool2D(op="avg"),
              DepthwiseConv2D(w(4, 1, 3, 3), w(4), pads=(1, 1, 1, 1), activation="leaky_relu"), GlobalAvgPool(),
              Dense(w(4, 6), w(6), activation="tanh"), Dense(w(6, 3), w(3), activation="identity"))
    return validate(Model(layers, {"net": "cnn"}, (8, 6, 2)))


def test_runner_knows_every_layer_type_the_exporter_writes():
    """predict.py sizes the .bin from the .param's layer types: the exporter writes none it lacks."""
    tree = ast.parse(Path(ncnn_format.__file__).read_text(encoding="utf-8"))
    written = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and re.fullmatch("[A-Z][A-Za-z]+", n.value)}  # the layer type names are its only CamelCase strings
    pred = load_template_predict()
    assert {"Input", "InnerProduct", "Convolution", "Split"} <= written
    assert written <= set(pred.NCNN_WEIGHTED) | set(pred.NCNN_UNWEIGHTED)


def test_runner_is_float32_exactly_on_every_layer_type():
    pred = load_template_predict()
    model = every_layer_cnn()
    session = pred.NcnnSession(list(ncnn_format.build(model)), 1, None)
    opt = session.net.opt
    assert {"use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage",
            "use_vulkan_compute"} <= set(session.OFF)
    assert not any(getattr(opt, name) for name in session.OFF) and opt.lightmode and opt.num_threads == 1
    assert session.io_spec()["input"]["shape"] == [None, 2, 8, 6] and session.io_spec()["output"]["shape"] == [None, 3]
    x = np.random.default_rng(0).random((6, 8, 6, 2), dtype=np.float32)
    np.testing.assert_allclose(session(x.transpose(0, 3, 1, 2)), model.forward(x), rtol=1e-4, atol=LOGIT_ATOL)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path]:
    """(k-dir with model.npz + the NCNN pair of a small MLP, its bundle)."""
    root = tmp_path_factory.mktemp("export")
    mlp = random_model([784, 16, 10], seed=4, method="dense", sparsity=0.0, physical="dense")
    kdir = export_kdir(mlp.with_layers(mlp.layers, framework="torch"), root / "torch" / "dense" / "k00",
                       formats=("ncnn",))
    return kdir, B.make_bundle(kdir, fmt="ncnn", out_root=root / "out", export_root=root, bench_root=root / "nb")


@pytest.mark.parametrize("defect,words", [("short", "declares"), ("long", "declares"),
                                          ("fp16", "not tagged float32")])
def test_bin_must_hold_exactly_the_declared_float32_weights(made, tmp_path, defect, words):
    """A .bin that does not fit its .param is refused by the build and, in a bundle whose hashes
    were rewritten to match it, by predict.py in one line: never run on memory past its end."""
    kdir, bundle = made
    good = (kdir / "model.ncnn.bin").read_bytes()
    bad = {"short": good[:-4], "long": good + bytes(4), "fp16": FP16_TAG + good[4:]}[defect]
    copy = Path(shutil.copytree(kdir, tmp_path / "torch" / "dense" / "k00"))
    (copy / "model.ncnn.bin").write_bytes(bad)
    with pytest.raises(PrunedgeError, match=f"ncnn could not run it.*{words}"):
        B.make_bundle(copy, fmt="ncnn", out_root=tmp_path / "out", export_root=tmp_path, bench_root=tmp_path / "nb")
    path = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    (path / "model.ncnn.bin").write_bytes(bad)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["model.ncnn.bin"] = {"sha256": hashlib.sha256(bad).hexdigest(), "bytes": len(bad)}
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert run_script(path, "predict.py", "--verify-only").returncode == 0  # the hashes fit: only the sizes do not
    assert_one_line_error(run_script(path, "predict.py", "--selftest"), "model.ncnn.param", words)
