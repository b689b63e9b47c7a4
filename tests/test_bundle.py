"""Deploy bundle: contents and hashes, predictions vs the numpy reference, tamper refusal, imports, bench CSV.

Builds its own small model files (ONNX via onnx.helper, TFLite via the TF converter) so it does
not depend on `make export`. The bundle scripts run in a subprocess, as on a device.
"""
from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bundle import build as B
from bundle.__main__ import main as bundle_main
from pipeline.data import CLASS_NAMES, FILES, IMAGE_MAGIC, data_dir, read_idx
from pipeline.model import random_model
from pipeline.model_io import save

N_IMAGES = 200
WIDTHS = [784, 48, 24, 10]  # small but with two hidden ReLU layers like the real MLP


# ---------------------------------------------------------------- model files made here

def write_onnx(model, path: Path) -> Path:
    """MatMul + Add (+ Relu) per layer, dynamic batch: what the ONNX exporter produces in spirit."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, x = [], [], "input"
    for i, layer in enumerate(model.layers):
        inits += [numpy_helper.from_array(layer.dense_weight(), f"W{i}"), numpy_helper.from_array(layer.bias, f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"mm{i}"]), helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"])]
        x = f"z{i}"
        if layer.activation == "relu":
            nodes.append(helper.make_node("Relu", [x], [f"a{i}"]))
            x = f"a{i}"
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 784])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())
    return path


def write_tflite(model, path: Path) -> Path:
    import tensorflow as tf
    weights = [(tf.constant(l.dense_weight()), tf.constant(l.bias), l.activation) for l in model.layers]

    @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="input")])
    def forward(x):
        for w, b, act in weights:
            x = tf.matmul(x, w) + b
            if act == "relu":
                x = tf.nn.relu(x)
        return x

    converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()])
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.ascontiguousarray(read_idx(data_dir() / FILES["test"][0], IMAGE_MAGIC)[:N_IMAGES])


@pytest.fixture(scope="module")
def export_tree(tmp_path_factory):
    """artifacts/export-like tree: torch/dense/k00/{model.npz, model.onnx, model.tflite}."""
    root = tmp_path_factory.mktemp("export")
    kdir = root / "torch" / "dense" / "k00"
    kdir.mkdir(parents=True)
    model = random_model(WIDTHS, seed=3, method="dense", sparsity=0.0, physical="dense")
    model = model.with_layers(model.layers, framework="torch")
    save(model, kdir / "model.npz")
    write_onnx(model, kdir / "model.onnx")
    write_tflite(model, kdir / "model.tflite")
    return root, model


@pytest.fixture(scope="module", params=["onnx", "tflite"])
def bundle(request, export_tree, tmp_path_factory):
    root, model = export_tree
    out = tmp_path_factory.mktemp(f"bundle-{request.param}")
    path = B.make_bundle(root / "torch" / "dense" / "k00", fmt=request.param, out_root=out,
                         export_root=root, bench_root=out / "no-bench")
    return path, request.param, model


def run_script(bundle_dir: Path, script: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(bundle_dir / script), *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd or bundle_dir)


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


# ---------------------------------------------------------------- contents and hashes

def test_bundle_contents_and_hashes(bundle):
    path, fmt, _ = bundle
    manifest = json.loads((path / "manifest.json").read_text())
    model_file = "model.onnx" if fmt == "onnx" else "model.tflite"
    on_disk = {p.name for p in path.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert {model_file, "predict.py", "bench_device.py", "README.md", "requirements.txt"} <= on_disk
    for name, entry in manifest["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert manifest["model"]["file"] == model_file and manifest["model"]["artifact"] == f"torch/dense/k00/{model_file}"
    assert manifest["provenance"]["framework"] == "torch" and manifest["provenance"]["seed"] == 3
    assert manifest["input"]["shape"] == [None, 784] and manifest["input"]["dtype"] == "float32"
    assert "[0, 1]" in manifest["input"]["scaling"]
    assert manifest["output"]["shape"][-1] == 10 and manifest["output"]["classes"] == list(CLASS_NAMES)
    assert manifest["measured"]["verify"]["top1_agreement"] == 1.0
    assert manifest["measured"]["verify"]["max_abs_diff"] < 1e-4
    assert 0.0 <= manifest["measured"]["accuracy"] <= 1.0
    assert manifest["model"]["delegate"] == (None if fmt == "onnx" else "xnnpack")


def test_requirements_pin_numpy_and_one_runtime(bundle):
    path, fmt, _ = bundle
    reqs = (path / "requirements.txt").read_text().split()
    runtime = {"onnx": "onnxruntime", "tflite": "ai-edge-litert"}[fmt]
    assert [r.split("==")[0] for r in reqs] == ["numpy", runtime]
    assert all("==" in r and r.split("==")[1] for r in reqs)


def test_tarball_is_deterministic_and_matches_dir(bundle, tmp_path):
    path, fmt, _ = bundle
    tar_path = path.parent / f"{path.name}.tar.gz"
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == [path.name] + sorted(f"{path.name}/{p.name}" for p in path.iterdir())
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(B.TAR_MTIME, 0, 0, "", "")}
        for m in members[1:]:
            assert tar.extractfile(m).read() == (path.parent / m.name).read_bytes()
    again = B.write_tar_gz(path, tmp_path / "again.tar.gz", path.name)
    assert again.read_bytes() == tar_path.read_bytes()


# ---------------------------------------------------------------- predict.py

def test_predict_matches_numpy_reference(bundle, images, tmp_path):
    path, fmt, model = bundle
    np.save(tmp_path / "x.npy", images)
    proc = run_script(path, "predict.py", tmp_path / "x.npy", "--json", "--out", tmp_path / "p.npy",
                      "--logits", tmp_path / "l.npy")
    assert proc.returncode == 0, proc.stderr
    want_logits = model.forward(images.reshape(len(images), -1).astype(np.float32) / 255)
    np.testing.assert_allclose(np.load(tmp_path / "l.npy"), want_logits, rtol=1e-4, atol=1e-4)
    want = want_logits.argmax(axis=1)
    got = json.loads(proc.stdout)
    np.testing.assert_array_equal(got["classes"], want)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), want)
    assert got["names"][:3] == [CLASS_NAMES[c] for c in want[:3]]


def test_predict_input_forms_agree(bundle, images, tmp_path):
    """[n,784] float 0-1, [n,28,28] uint8 and IDX .gz/raw give the same text output."""
    path, _, _ = bundle
    np.save(tmp_path / "flat.npy", images.reshape(len(images), -1).astype(np.float32) / 255)
    np.save(tmp_path / "u8.npy", images)
    idx = gzip.decompress((data_dir() / FILES["test"][0]).read_bytes())
    header = idx[:4] + N_IMAGES.to_bytes(4, "big") + idx[8:16]  # IDX header with n = N_IMAGES
    (tmp_path / "raw-idx").write_bytes(header + idx[16:16 + N_IMAGES * 784])
    (tmp_path / "img.gz").write_bytes(gzip.compress((tmp_path / "raw-idx").read_bytes()))
    outs = [run_script(path, "predict.py", tmp_path / f) for f in ("flat.npy", "u8.npy", "raw-idx", "img.gz")]
    assert all(o.returncode == 0 for o in outs), [o.stderr for o in outs]
    assert len({o.stdout for o in outs}) == 1
    assert len(outs[0].stdout.splitlines()) == N_IMAGES


def test_selftest_and_verify_only(bundle):
    path, _, _ = bundle
    assert run_script(path, "predict.py", "--selftest").returncode == 0
    proc = run_script(path, "predict.py", "--verify-only")
    assert proc.returncode == 0 and proc.stdout.startswith("ok:")


@pytest.mark.parametrize("case,words", [
    ("missing", ["nope.npy", "not found"]),
    ("shape", ["expected shape"]),
    ("dtype", ["dtype int32"]),
    ("range", ["[0, 1]"]),
    ("pickle", ["not a plain .npy"]),
    ("idx", ["IDX"]),
])
def test_predict_bad_input_one_line_error(bundle, tmp_path, case, words):
    path, _, _ = bundle
    target = tmp_path / ("x.npy" if case != "idx" else "x.idx")
    if case == "shape":
        np.save(target, np.zeros((3, 783), np.uint8))
    elif case == "dtype":
        np.save(target, np.zeros((3, 784), np.int32))
    elif case == "range":
        np.save(target, np.full((3, 784), 255.0, np.float32))
    elif case == "pickle":
        np.save(target, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "idx":
        target.write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20)
    proc = run_script(path, "predict.py", tmp_path / "nope.npy" if case == "missing" else target)
    assert_one_line_error(proc, *words)


def test_tampered_model_is_refused(bundle, tmp_path):
    path, fmt, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    model_file = copy / json.loads((copy / "manifest.json").read_text())["model"]["file"]
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size: only the hash can catch it
    model_file.write_bytes(bytes(data))
    np.save(tmp_path / "x.npy", np.zeros((2, 784), np.uint8))
    assert_one_line_error(run_script(copy, "predict.py", tmp_path / "x.npy"), model_file.name, "sha256")
    assert_one_line_error(run_script(copy, "bench_device.py", "--reps", "5"), "sha256")
    model_file.unlink()
    assert_one_line_error(run_script(copy, "predict.py", tmp_path / "x.npy"), model_file.name, "missing")


# ---------------------------------------------------------------- bench_device.py

def test_bench_device_writes_schema_csv(bundle, tmp_path):
    path, fmt, _ = bundle
    out = tmp_path / "dev.csv"
    proc = run_script(path, "bench_device.py", "--out", out, "--warmup", "2", "--reps", "10", "--threads", "1,2")
    assert proc.returncode == 0, proc.stderr
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == B_COLUMNS
    assert [(r["threads"], r["batch"]) for r in rows] == [("1", "1"), ("2", "1")]
    for r in rows:
        assert r["source"] == "device" and r["status"] == "ok" and r["format"] == fmt
        assert r["runtime"] == ("onnxruntime" if fmt == "onnx" else "litert-xnnpack")
        assert 0 < float(r["p50_us"]) <= float(r["p90_us"]) <= float(r["p99_us"])
        assert int(r["reps"]) == 10 and int(r["bytes"]) > 0 and float(r["ratio_vs_dense"]) == 1.0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["machine"]["cores"] >= 1 and len(info["rows"]) == 2


B_COLUMNS = ("source", "framework", "method", "sparsity", "artifact", "format", "variant", "runtime",
             "threads", "batch", "status", "reason", "p50_us", "p90_us", "p99_us", "mean_us",
             "per_sample_us", "reps", "ratio_vs_dense", "bytes", "gzip_bytes", "accuracy", "peak_rss_mb")


# ---------------------------------------------------------------- imports

ALLOWED_THIRD_PARTY = {"numpy", "onnxruntime", "ai_edge_litert", "predict"}


@pytest.mark.parametrize("script", ["predict.py", "bench_device.py"])
def test_bundle_scripts_import_only_numpy_runtime_stdlib(script):
    tree = ast.parse((B.TEMPLATE_DIR / script).read_text())
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
    path, runtime = B.choose_default("onnx", export_root=exp, bench_root=tmp_path / "bench")
    assert path == exp / "torch" / "unit" / "k90" / "model.onnx" and runtime == "onnxruntime"
    with pytest.raises(B.PrunedgeError, match="no default tflite artifact"):
        B.choose_default("tflite", export_root=exp, bench_root=tmp_path / "bench")


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert bundle_main(["--model", str(tmp_path / "missing"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing" in err[0]


def test_tflite_delegate_none_is_kept(export_tree, tmp_path):
    """A file verified without XNNPACK is bundled, run and benchmarked without it."""
    root, _ = export_tree
    path = B.make_bundle(root / "torch" / "dense" / "k00", fmt="tflite", runtime="litert-builtin", out_root=tmp_path,
                         export_root=root, bench_root=tmp_path / "no-bench")
    assert json.loads((path / "manifest.json").read_text())["model"]["delegate"] == "none"
    proc = run_script(path, "bench_device.py", "--out", tmp_path / "d.csv", "--warmup", "1", "--reps", "3",
                      "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "d.csv", newline="") as f:
        assert [r["runtime"] for r in csv.DictReader(f)] == ["litert-builtin"]


@pytest.mark.parametrize("defect,words", [("failed", "failed verification"), ("changed", "changed since export")])
def test_refuses_failed_or_changed_export(export_tree, tmp_path, defect, words):
    root, _ = export_tree
    tree = tmp_path / "export"
    shutil.copytree(root, tree)
    entry = {"path": "torch/dense/k00/model.onnx", "variant": "fp32", "delegate": None,
             "sha256": hashlib.sha256((tree / "torch/dense/k00/model.onnx").read_bytes()).hexdigest(),
             "verify": {"status": "passed"}}
    if defect == "failed":
        entry["verify"] = {"status": "failed", "reason": "max_abs_diff 0.3 > 1e-4"}
    else:
        entry["sha256"] = "0" * 64
    (tree / "manifest.json").write_text(json.dumps({"config": {}, "files": [entry]}))
    with pytest.raises(B.PrunedgeError, match=words):
        B.make_bundle(tree / "torch" / "dense" / "k00", fmt="onnx", out_root=tmp_path / "out",
                      export_root=tree, bench_root=tmp_path / "no-bench")
    assert not (tmp_path / "out" / "torch-dense-k00-fp32-onnx").exists()


@pytest.mark.parametrize("script,args", [("predict.py", []), ("predict.py", ["--threads", "0", "x.npy"]),
                                         ("bench_device.py", ["--bogus"]), ("bench_device.py", ["--batch", "0"])])
def test_usage_mistakes_are_one_line(bundle, script, args):
    path, _, _ = bundle
    assert_one_line_error(run_script(path, script, *args))
