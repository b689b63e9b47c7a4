"""Issue 7 end to end: a network we did not train goes through `python -m export run --model`.

Four MLPs of different shapes with non-ReLU activations are built and trained with plain
framework code on scikit-learn's 8x8 digits (shipped with the package, no download), saved
by the framework in each import format (ONNX, Keras .keras, PyTorch state_dict + --arch,
TFLite), then pruned (weight, unit), shrunk, exported (ONNX, TFLite) and verified by the
real CLI in a subprocess. Checked: exit 0, the k-dirs, the unit-k90 widths the pruning
counts give, every manifest entry passed, and the dense k00 files score what the original
file scores in its own framework/runtime on the same test split.

A CNN takes the same road: a MobileNetV2-style network (stride-2 stem, residual block with a
depthwise conv, BatchNorm, ReLU6) trained a few steps on a 28x28x1 slice of real Fashion-MNIST,
written by torch.onnx, filter-pruned (unit k50), shrunk, exported and verified.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import helpers
from pipeline.labeled import load_split
from pipeline.model import LEAKY_RELU_ALPHA
from pipeline.model_io import load
from pipeline.prune import count_to_remove

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 6  # ~95% on digits for every shape below; a few seconds per model
METHODS, LEVELS, FORMATS = ("weight", "unit"), (0, 50, 90), ("onnx", "tflite")
ACC_TOL = 0.005  # the k00 files are the same float32 network: only near-ties may flip


def kname(k: int) -> str:
    return f"k{k:02d}"


# ---------------------------------------------------------------- data

def write_digits(path: Path) -> Path:
    """sklearn's digits as the .npz a user would hand over: x float32 [n, 64] in [0, 1], y int."""
    from sklearn.datasets import load_digits
    d = load_digits()
    np.savez(path, x=(d.data / 16.0).astype(np.float32), y=d.target.astype(np.int64))
    return path


# ---------------------------------------------------------------- plain framework code

def torch_mlp(widths, act):
    import torch
    acts = {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
            "leaky_relu": lambda: torch.nn.LeakyReLU(LEAKY_RELU_ALPHA)}
    mods = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        mods += [torch.nn.Linear(a, b)] + ([acts[act]()] if i < len(widths) - 2 else [])
    return torch.nn.Sequential(*mods)


def train_torch(net, x, y, epochs=EPOCHS):
    return helpers.train_torch(net, x, y, epochs)


def train_keras(layers, x, y, *, logits=False, epochs=EPOCHS):
    import keras
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((64,)), *layers])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    net.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    net.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return net


def build_onnx(split, path: Path):
    """64-48-24-10 tanh with a LogSoftmax output, written by torch's own ONNX exporter."""
    import warnings

    import torch
    net = torch.nn.Sequential(*train_torch(torch_mlp([64, 48, 24, 10], "tanh"), split.x_train, split.y_train),
                              torch.nn.LogSoftmax(dim=1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 64),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0], None


def build_keras(split, path: Path, widths=(40, 24)):
    """Dense(sigmoid) then Dense + LeakyReLU(0.01) layer, softmax output, saved as .keras."""
    import keras
    L = keras.layers
    net = train_keras([L.Dense(widths[0], activation="sigmoid"), L.Dense(widths[1]),
                       L.LeakyReLU(negative_slope=LEAKY_RELU_ALPHA), L.Dense(10, activation="softmax")],
                      split.x_train, split.y_train)
    net.save(path)
    return lambda x: np.asarray(net(x)), None


def build_torch_state(split, path: Path):
    """64-32-16-10 tanh: a bare state_dict, so the CLI needs --arch."""
    import torch
    net = train_torch(torch_mlp([64, 32, 16, 10], "tanh"), split.x_train, split.y_train)
    torch.save(net.state_dict(), path)

    def run(x):
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()
    return run, "64-32-16-10:tanh"


def build_tflite(split, path: Path):
    """A Keras 64-32-10 sigmoid network (logits out) converted by TensorFlow's own TFLite converter."""
    import keras
    import tensorflow as tf
    net = train_keras([keras.layers.Dense(32, activation="sigmoid"), keras.layers.Dense(10)],
                      split.x_train, split.y_train, logits=True)
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(net).convert())
    from ai_edge_litert.interpreter import Interpreter

    def run(x):
        interp = Interpreter(model_path=str(path))
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        interp.resize_tensor_input(inp["index"], [len(x), 64])
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"])
    return run, None


# name -> (file name, builder, widths of the imported model)
CASES = {
    "onnx": ("digits_tanh.onnx", build_onnx, (64, 48, 24, 10)),
    "keras": ("digits_sig_leaky.keras", build_keras, (64, 40, 24, 10)),
    "torch-state": ("digits_tanh.pt", build_torch_state, (64, 32, 16, 10)),
    "tflite": ("digits_sigmoid.tflite", build_tflite, (64, 32, 10)),
}


def run_export(model: Path, data: Path, root: Path, arch: str | None = None):
    cmd = [sys.executable, "-m", "export", "run", "--model", str(model), "--data", str(data),
           "--methods", ",".join(METHODS), "--levels", ",".join(map(str, LEVELS)),
           "--formats", ",".join(FORMATS), "--root", str(root), "--jobs", "1"]
    if arch:
        cmd += ["--arch", arch]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- the test

@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = write_digits(tmp_path_factory.mktemp("data") / "digits.npz")
    return path, load_split(path)


@pytest.mark.parametrize("case", list(CASES))
def test_foreign_mlp_is_pruned_shrunk_exported_and_verified(case, digits, tmp_path):
    data, split = digits
    file_name, build, widths = CASES[case]
    model_path = tmp_path / file_name
    original, arch = build(split, model_path)
    original_acc = float(np.mean(np.argmax(original(split.x_test), axis=1) == split.y_test))
    assert original_acc > 0.85, "the foreign network should be trained, not random"

    root = tmp_path / "art"
    proc = run_export(model_path, data, root, arch)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stem, n_files = model_path.stem, len(METHODS) * len(LEVELS) * (1 + len(FORMATS))
    assert f"{n_files} files: {n_files} passed, 0 failed" in proc.stdout, proc.stdout[-2000:]
    assert f"\n{stem} " in proc.stdout and "\nimported " not in proc.stdout  # the table names the model

    base = root / "export" / stem
    for method in METHODS:
        for k in LEVELS:
            assert (base / method / kname(k) / "model.npz").is_file(), f"{method}/{kname(k)} missing"
    assert load(base / "weight" / kname(0) / "model.npz").widths == list(widths)

    # unit k90: round(90%) of each hidden layer's units removed (at least one kept), then shrunk
    expected = [widths[0]] + [n - min(count_to_remove(n, 90), n - 1) for n in widths[1:-1]] + [widths[-1]]
    shrunk = load(base / "unit" / kname(90) / "model.npz")
    assert shrunk.widths == expected and shrunk.meta["physical"] == "shrunk"

    manifest = json.loads((root / "export" / "manifest.json").read_text())
    assert manifest["config"]["n_test"] == len(split.y_test)
    entries = [e for e in manifest["files"] if e["path"].startswith(f"{stem}/")]
    got = {(e["method"], e["sparsity"], e["format"]) for e in entries}
    want = {(m, float(k), f) for m in METHODS for k in LEVELS for f in ("npz", "onnx", "tflite")}
    assert got == want
    failed = [(e["path"], e["verify"]["reason"]) for e in entries if e["verify"]["status"] != "passed"]
    assert not failed
    for e in entries:
        if e["format"] != "npz" and e["sparsity"] == 0.0:
            assert abs(e["accuracy"] - original_acc) <= ACC_TOL, (e["path"], e["accuracy"], original_acc)


# ---------------------------------------------------------------- a CNN from torch.onnx

CNN_EPOCHS = 2  # ~78% on the 1600-image slice: trained, not random, in a few seconds


def torch_cnn():
    """Stem conv (stride 2) + BN + ReLU, a residual block (1x1, BN, ReLU6, depthwise 3x3, BN, ReLU6,
    1x1, BN, Add), conv + BN + ReLU, max pool, flatten (channels-first), dense."""
    from torch import nn

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU6(),
                                      nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c, bias=False),
                                      nn.BatchNorm2d(2 * c), nn.ReLU6(),
                                      nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return x + self.body(x)
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), Residual(8),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 7 * 7, 10))


@pytest.mark.slow
def test_foreign_cnn_is_filter_pruned_shrunk_exported_and_verified(tmp_path):
    import warnings

    import torch
    from pipeline.data import load_fashion_mnist
    d = load_fashion_mnist()  # a real 28x28x1 slice, stored NCHW as a torch user has it
    data = tmp_path / "fashion.npz"
    np.savez(data, x=d.x_train[:2000].reshape(-1, 1, 28, 28), y=d.y_train[:2000].astype(np.int64))
    split = load_split(data)
    net = helpers.train_torch(torch_cnn(), split.x_train.reshape(-1, 1, 28, 28), split.y_train, CNN_EPOCHS)
    model_path = tmp_path / "fashion_cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 1, 28, 28),), str(model_path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
    import onnxruntime as ort
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    original = session.run(None, {"x": split.x_test.reshape(-1, 1, 28, 28)})[0]
    original_acc = float(np.mean(original.argmax(axis=1) == split.y_test))
    assert original_acc > 0.6, "the foreign network should be trained, not random"

    root = tmp_path / "art"
    cmd = [sys.executable, "-m", "export", "run", "--model", str(model_path), "--data", str(data), "--methods", "unit",
           "--levels", "0,50", "--formats", "onnx,tflite", "--root", str(root), "--jobs", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 files: 6 passed, 0 failed" in proc.stdout, proc.stdout[-2000:]

    base = root / "export" / model_path.stem / "unit"
    dense, pruned = load(base / kname(0) / "model.npz"), load(base / kname(50) / "model.npz")
    assert dense.input_shape == (28, 28, 1) and dense.meta["source_format"] == "onnx"
    assert [l.kind for l in dense.layers] == ["conv2d", "conv2d", "depthwise2d", "conv2d", "add", "conv2d",
                                              "pool2d", "flatten", "dense"]
    assert dense.layers[7].layout == "channels_first" and dense.layers[4].inputs == (0, 3)
    channels = [[l.shape[0] for l in m.layers if l.kind in ("conv2d", "depthwise2d")] for m in (dense, pruned)]
    assert channels[0] == [8, 16, 16, 8, 16] and all(p < d for d, p in zip(*channels)), channels
    assert pruned.meta["physical"] == "shrunk" and pruned.n_params < dense.n_params / 1.5

    manifest = json.loads((root / "export" / "manifest.json").read_text())
    entries = {(e["sparsity"], e["format"]): e for e in manifest["files"]
               if e["path"].startswith(f"{model_path.stem}/")}
    assert set(entries) == {(float(k), f) for k in (0, 50) for f in ("npz", "onnx", "tflite")}
    assert all(e["verify"]["status"] == "passed" for e in entries.values()), entries
    for fmt in ("onnx", "tflite"):
        small, big = (root / "export" / entries[(k, fmt)]["path"] for k in (50.0, 0.0))
        assert small.stat().st_size < big.stat().st_size, (fmt, small.stat().st_size, big.stat().st_size)
        assert abs(entries[(0.0, fmt)]["accuracy"] - original_acc) <= ACC_TOL


# ---------------------------------------------------------------- the CLI's refusals (in process, cheap)

@pytest.mark.parametrize("name", ["..", ".", "torch", "a/b"])
def test_name_must_be_one_plain_folder(name, tmp_path):
    from export.__main__ import import_source
    from pipeline.errors import PrunedgeError
    with pytest.raises(PrunedgeError, match="--name"):
        import_source(tmp_path / "never-read.onnx", tmp_path, name=name)
    assert not any(tmp_path.iterdir())


def test_data_with_more_classes_than_the_model_is_one_line(tmp_path, capsys):
    import torch
    torch.save(torch_mlp([64, 8, 10], "tanh").state_dict(), tmp_path / "tiny.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "twelve.npz", x=rng.random((60, 64), dtype=np.float32), y=np.arange(60) % 12)
    from export.__main__ import main
    code = main(["run", "--model", str(tmp_path / "tiny.pt"), "--arch", "64-8-10:tanh", "--data",
                 str(tmp_path / "twelve.npz"), "--methods", "weight", "--levels", "0", "--formats", "onnx",
                 "--root", str(tmp_path / "art"), "--jobs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "twelve.npz" in err[-1], err
    assert "Traceback" not in "\n".join(err)
