"""Deploy bundle sources: which file (default choice), which class names (never assumed), which
input shape (an imported model's own), and the runner table predict.py shares with export.runtimes.

Uses the helpers of tests/test_bundle.py (small descriptions exported by the real exporters).
"""
from __future__ import annotations

import ast
import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle import build as B
from bundle.template import TEMPLATE_DIR, load_template_predict
from bundle import choose, describe
from export.runtimes import RUNTIMES
from pipeline.data import CLASS_NAMES, FILES, IMAGE_MAGIC, data_dir, read_idx
from pipeline.errors import PrunedgeError
from pipeline.model import Model, random_model
from test_bundle import (B_COLUMNS, LOGIT_ATOL, WIDTHS, assert_one_line_error, export_kdir, manifest_of,
                         run_script, small_cnn)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.ascontiguousarray(read_idx(data_dir() / FILES["test"][0], IMAGE_MAGIC)[:40])


def test_test_cnn_sees_the_layout(images):
    """test_bundle's parity test would catch a wrong feed: swapping h and w moves the logits far."""
    x, model = images.astype(np.float32) / 255, small_cnn(framework="torch")
    right, swapped = model.forward(x[..., None]), model.forward(x.transpose(0, 2, 1)[..., None])
    assert np.abs(right - swapped).max() > 100 * LOGIT_ATOL


# ---------------------------------------------------------------- imports and tables

ALLOWED_THIRD_PARTY = {"numpy", "onnxruntime", "ai_edge_litert", "openvino", "ncnn", "predict"}


@pytest.mark.parametrize("script", ["predict.py", "bench_device.py"])
def test_bundle_scripts_import_only_numpy_runtime_stdlib(script):
    tree = ast.parse((TEMPLATE_DIR / script).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports do not work in a flat bundle"
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "__import__", "import_module"):
            pytest.fail(f"{script}: dynamic import at line {node.lineno}")
    bad = {r for r in roots if r not in sys.stdlib_module_names and r not in ALLOWED_THIRD_PARTY}
    assert not bad, f"{script} imports {bad}"
    assert "numpy" in roots


def test_every_shipped_runtime_has_a_predict_runner():
    """export.runtimes names predict.py runners; each takes its row's delegate, layouts and files."""
    pred = load_template_predict()
    named = {r.runner for r in RUNTIMES.values() if r.runner}
    assert named <= set(pred.RUNNERS), "a runtime row names a runner predict.py lacks"
    for row in choose.shippable_runtimes().values():
        runner = pred.RUNNERS[row.runner]
        assert row.delegate in runner.delegates, row.name
        assert set(runner.layouts) <= set(pred.LAYOUTS) and "features" in runner.layouts
        assert row.imports[0].split(".")[0] == runner.module, row.name  # what the row's loader imports
        for fmt in row.formats:
            assert choose.bundle_formats()[fmt].suffix.endswith(runner.suffixes[0]), (row.name, fmt)


def test_a_runtime_without_a_runner_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    """A runtime row whose predict.py runner is not written yet is no --runtime or --format choice."""
    from bundle.__main__ import main as bundle_main
    monkeypatch.delitem(load_template_predict().RUNNERS, "ncnn")
    for argv in (["--runtime", "ncnn"], ["--format", "ncnn"]):
        assert bundle_main([*argv, "--model", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "ncnn" in err[0], err


def test_a_pair_file_kind_is_bundled_as_two_files(tmp_path, monkeypatch):
    """A kind the export writes as two files (NCNN .param + .bin): both are found, listed and checked."""
    pred = load_template_predict()
    pair = pred.Runner(open=None, suffixes=(".param", ".bin"), layouts=("features", "nchw"), delegates=(None,),
                       module="ncnn")
    param = tmp_path / "model.ncnn.param"
    param.write_text("p")
    with pytest.raises(PrunedgeError, match="model.ncnn.bin: missing"):
        B.model_files(param, "ncnn", pair)
    (tmp_path / "model.ncnn.bin").write_bytes(b"b")
    assert B.model_files(param, "ncnn", pair) == (param, tmp_path / "model.ncnn.bin")
    with pytest.raises(PrunedgeError, match="runner takes 1 file"):
        B.model_files(param, "ncnn", pred.RUNNERS["onnx"])
    monkeypatch.setitem(pred.RUNNERS, "pair", pair)
    files = {n: {"sha256": "0" * 64, "bytes": 1} for n in ("model.ncnn.param", "model.ncnn.bin", "classes.txt")}
    manifest = {"model": {"files": ["model.ncnn.param", "model.ncnn.bin"], "runner": "pair", "delegate": None},
                "input": {"layout": "nchw", "sample_shape": [2, 2, 1], "accepts": [[2, 2, 1], [4]]},
                "output": {"classes_file": "classes.txt", "n_classes": 2}, "selftest": None, "files": files}
    pred.check_consistency(manifest)
    manifest["model"]["files"] = ["model.ncnn.param"]
    with pytest.raises(pred.BundleError, match="2 file"):
        pred.check_consistency(manifest)


def test_openvino_runs_the_onnx_file_in_a_bundle(tmp_path, images):
    """A second runner for one file format: the ONNX file of a CNN on OpenVINO, fed NCHW."""
    model = small_cnn(framework="torch")
    kdir = export_kdir(model, tmp_path / "export" / "cnn-torch" / "dense" / "k00", formats=("onnx",))
    path = B.make_bundle(kdir, fmt="onnx", runtime="openvino", out_root=tmp_path / "out",
                         export_root=tmp_path / "export", bench_root=tmp_path / "nb")
    assert manifest_of(path)["model"]["runner"] == "openvino" and manifest_of(path)["input"]["layout"] == "nchw"
    assert [r.split("==")[0] for r in (path / "requirements.txt").read_text().split()] == ["numpy", "openvino"]
    np.save(tmp_path / "x.npy", images)
    proc = run_script(path, "predict.py", tmp_path / "x.npy", "--logits", tmp_path / "l.npy", "-q")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "l.npy"), model.forward(images[..., None].astype(np.float32) / 255),
                               rtol=1e-4, atol=LOGIT_ATOL)
    assert run_script(path, "predict.py", "--selftest").returncode == 0


# ---------------------------------------------------------------- class names and imported shapes

def _imported_bundle(tmp_path, model: Model, *, data=None, config_data=None) -> Path:
    root = tmp_path / "export"
    kdir = export_kdir(model, root / "mine" / "dense" / "k00", formats=("onnx",))
    if config_data is not None:
        (root / "manifest.json").write_text(json.dumps({"config": {"data": str(config_data)}, "files": []}))
    return B.make_bundle(kdir, fmt="onnx", out_root=tmp_path / "out", export_root=root,
                         bench_root=tmp_path / "no-bench", data=data)


def _imported_mlp(classes: int = 3) -> Model:
    m = random_model([784, 16, classes], seed=4, method="dense", sparsity=0.0, physical="dense")
    return m.with_layers(m.layers, framework="imported", source="mine.onnx")


@pytest.mark.parametrize("source", ["none", "option", "export-config", "idx-dir"])
def test_imported_model_class_names(tmp_path, images, source):
    """3 classes: never Fashion-MNIST names; the labeled data's names when it carries them."""
    names = ["cat", "dog", "bird"]
    npz = tmp_path / "labeled.npz"
    np.savez(npz, x=images[:30], y=np.arange(30) % 3, class_names=np.array(names))
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    (idx_dir / describe.CLASS_NAMES_FILE).write_text("\n".join(names) + "\n")
    kwargs = {"none": {}, "option": {"data": npz}, "export-config": {"config_data": npz},
              "idx-dir": {"data": idx_dir}}[source]
    path = _imported_bundle(tmp_path, _imported_mlp(), **kwargs)
    want = ["0", "1", "2"] if source == "none" else names
    assert (path / "classes.txt").read_text().splitlines() == want
    assert manifest_of(path)["measured"]["accuracy"] is None  # no labels of its own data here
    np.save(tmp_path / "x.npy", images[:20])
    proc = run_script(path, "predict.py", tmp_path / "x.npy")
    assert proc.returncode == 0, proc.stderr
    printed = {line.split("\t")[2] for line in proc.stdout.splitlines()}
    assert printed <= set(want) and not printed & set(CLASS_NAMES)


def test_class_names_that_do_not_fit_are_refused(tmp_path, images):
    npz = tmp_path / "labeled.npz"
    np.savez(npz, x=images[:4], y=np.zeros(4, int), class_names=np.array(["a", "b"]))
    with pytest.raises(PrunedgeError, match="2 class names for a model with 3 classes"):
        _imported_bundle(tmp_path, _imported_mlp(), data=npz)


def test_random_and_imported_models_get_indices_not_fashion_names(tmp_path):
    m = random_model(WIDTHS, seed=1, method="dense", sparsity=0.0, physical="dense")  # framework "random"
    path = _imported_bundle(tmp_path, m)
    assert (path / "classes.txt").read_text().split() == [str(i) for i in range(10)]


def test_imported_image_model_takes_its_own_shape(tmp_path):
    """A 16x16 RGB CNN: accepts [n,16,16,3] or flat [n,768] (no [n,h,w]: 3 channels), fed NCHW to ONNX."""
    model = small_cnn(seed=2, input_shape=(16, 16, 3), classes=4, framework="imported")
    path = _imported_bundle(tmp_path, model)
    spec = manifest_of(path)["input"]
    assert (spec["sample_shape"], spec["layout"], spec["accepts"]) == ([16, 16, 3], "nchw", [[16, 16, 3], [768]])
    x = np.random.default_rng(0).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    proc = run_script(path, "predict.py", tmp_path / "x.npy", "--logits", tmp_path / "l.npy", "-q")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "l.npy"), model.forward(x.astype(np.float32) / 255),
                               rtol=1e-4, atol=LOGIT_ATOL)
    np.save(tmp_path / "bad.npy", x[..., 0])
    assert_one_line_error(run_script(path, "predict.py", tmp_path / "bad.npy"),
                          "[n, 16, 16, 3] or [n, 768]", "got [7, 16, 16]")
    assert run_script(path, "predict.py", "--selftest").returncode == 0


# ---------------------------------------------------------------- default choice and CLI

def _bench_csv(root: Path, rows: list[dict]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=B_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({"source": "host", "framework": "torch", "format": "onnx", "variant": "fp32",
                        "runtime": "onnxruntime", "threads": "1", "batch": "1", "status": "ok", **r})


def test_default_choice_is_fastest_within_one_point(tmp_path):
    exp = tmp_path / "export"
    for k in ("k00", "k90", "k99"):
        (exp / "torch" / "unit" / k).mkdir(parents=True)
        (exp / "torch" / "unit" / k / "model.onnx").write_bytes(b"x")
    _bench_csv(tmp_path / "bench", [
        {"method": "dense", "sparsity": "0", "artifact": "torch/unit/k00/model.onnx", "p50_us": "100", "accuracy": "0.89"},
        {"method": "unit", "sparsity": "90", "artifact": "torch/unit/k90/model.onnx", "p50_us": "20", "accuracy": "0.881"},
        {"method": "unit", "sparsity": "99", "artifact": "torch/unit/k99/model.onnx", "p50_us": "5", "accuracy": "0.70"},
        {"method": "unit", "sparsity": "90", "artifact": "torch/unit/k90/model.onnx", "p50_us": "1", "accuracy": "0.881",
         "threads": "2"},
    ])
    path, runtime = choose.choose_default("onnx", export_root=exp, bench_root=tmp_path / "bench")
    assert path == exp / "torch" / "unit" / "k90" / "model.onnx" and runtime == "onnxruntime"
    with pytest.raises(PrunedgeError, match="no default tflite artifact"):
        choose.choose_default("tflite", export_root=exp, bench_root=tmp_path / "bench")


@pytest.mark.parametrize("defect,words", [("failed", "failed verification"), ("changed", "changed since export")])
def test_refuses_failed_or_changed_export(tmp_path, defect, words):
    tree = tmp_path / "export"
    mlp = random_model(WIDTHS, seed=3, method="dense", sparsity=0.0, physical="dense")
    export_kdir(mlp.with_layers(mlp.layers, framework="torch"), tree / "torch" / "dense" / "k00", formats=("onnx",))
    entry = {"path": "torch/dense/k00/model.onnx", "variant": "fp32", "runtime": "onnxruntime",
             "sha256": hashlib.sha256((tree / "torch/dense/k00/model.onnx").read_bytes()).hexdigest(),
             "verify": {"status": "passed"}}
    if defect == "failed":
        entry["verify"] = {"status": "failed", "reason": "max_abs_diff 0.3 > 1e-4"}
    else:
        entry["sha256"] = "0" * 64
    (tree / "manifest.json").write_text(json.dumps({"config": {}, "files": [entry]}))
    with pytest.raises(PrunedgeError, match=words):
        B.make_bundle(tree / "torch" / "dense" / "k00", fmt="onnx", out_root=tmp_path / "out",
                      export_root=tree, bench_root=tmp_path / "no-bench")
    assert not (tmp_path / "out" / "torch-dense-k00-fp32-onnx").exists()


def test_bare_file_without_description_takes_its_declared_input(tmp_path):
    """No model.npz beside it: the file's own NCHW input gives the channels-last sample shape."""
    kdir = export_kdir(small_cnn(seed=3, input_shape=(12, 10, 2), classes=5), tmp_path / "k", formats=("onnx",))
    (tmp_path / "bare").mkdir()
    bare = (tmp_path / "bare" / "net.onnx")
    bare.write_bytes((kdir / "model.onnx").read_bytes())
    path = B.make_bundle(bare, fmt="onnx", out_root=tmp_path / "out", export_root=tmp_path / "none",
                         bench_root=tmp_path / "nb")
    manifest = manifest_of(path)
    assert manifest["input"]["shape"] == [None, 2, 12, 10] and manifest["input"]["layout"] == "nchw"
    assert manifest["input"]["sample_shape"] == [12, 10, 2] and manifest["input"]["source"] == "the file's declared input"
    assert path.name == "net-onnx" and (path / "classes.txt").read_text().split() == ["0", "1", "2", "3", "4"]
    assert run_script(path, "predict.py", "--selftest").returncode == 0
