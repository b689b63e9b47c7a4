"""Deploy bundle: contents and hashes, predictions vs the numpy reference for MLPs and CNNs in every
bundled runtime (ONNX, TFLite, NCNN), input shapes, tamper refusal, bench CSV, CLI.

Builds its own small descriptions and exports them with the export table's own exporters
(`export.formats.FORMATS[...].export`), so it does not depend on `make export`. The bundle
scripts run in a subprocess, as on a device. Default choice, class names, imported shapes and the
runner table: tests/test_bundle_sources.py; manifest hardening: tests/test_bundle_schema.py.
"""
from __future__ import annotations

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
from bundle.archive import TAR_MTIME, write_tar_gz
from bundle.__main__ import main as bundle_main
from export import formats as F
from pipeline.data import CLASS_NAMES, FILES, IMAGE_MAGIC, data_dir, read_idx
from pipeline.layers import Conv2D, Dense, DepthwiseConv2D, Flatten
from pipeline.model import Model, random_model, validate
from pipeline.model_io import save

N_IMAGES = 200
WIDTHS = [784, 48, 24, 10]  # small but with two hidden ReLU layers like the real MLP
LOGIT_ATOL = 1e-4  # float32 files reproduce the description's logits up to summation order (~1e-6)
KINDS = [(kind, fmt) for kind in ("mlp", "cnn") for fmt in ("onnx", "tflite", "ncnn")]
RUNTIME = {"onnx": "onnxruntime", "tflite": "litert-xnnpack", "ncnn": "ncnn"}  # each format's shipped runtime
PACKAGE = {"onnx": "onnxruntime", "tflite": "ai-edge-litert", "ncnn": "ncnn"}


# ---------------------------------------------------------------- model descriptions made here

def small_cnn(seed: int = 5, input_shape=(28, 28, 1), classes: int = 10, **meta) -> Model:
    """Conv (stride 2) -> depthwise -> Flatten -> Dense: every output depends on where a pixel is,
    so feeding the file in the wrong layout (e.g. h and w swapped) changes the logits."""
    rng = np.random.default_rng(seed)
    h, w, c = input_shape
    conv = Conv2D(rng.normal(0, 0.5, (6, c, 3, 3)).astype(np.float32), rng.normal(0, 0.1, 6).astype(np.float32),
                  stride=(2, 2), pads=(1, 1, 1, 1), activation="relu")
    dw = DepthwiseConv2D(rng.normal(0, 0.5, (6, 1, 3, 3)).astype(np.float32), np.zeros(6, np.float32),
                         stride=(2, 2), pads=(1, 1, 1, 1), activation="relu")
    features = ((h + 3) // 4) * ((w + 3) // 4) * 6
    dense = Dense(rng.normal(0, 0.3, (features, classes)).astype(np.float32), np.zeros(classes, np.float32),
                  activation="identity")
    return validate(Model((conv, dw, Flatten(), dense), {"net": "cnn", "seed": seed, "method": "dense",
                                                         "sparsity": 0.0, "physical": "dense", **meta}, input_shape))


def export_kdir(model: Model, kdir: Path, formats=("onnx", "tflite", "ncnn")) -> Path:
    """k-dir as the export stage leaves it: model.npz + one file per format, by the real exporters."""
    kdir.mkdir(parents=True, exist_ok=True)
    save(model, kdir / "model.npz")
    for name in formats:
        F.FORMATS[name].export(model, kdir / F.FORMATS[name].suffix, F.ExportOptions())
    return kdir


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.ascontiguousarray(read_idx(data_dir() / FILES["test"][0], IMAGE_MAGIC)[:N_IMAGES])


@pytest.fixture(scope="module")
def export_tree(tmp_path_factory):
    """artifacts/export-like tree: torch/dense/k00 (MLP) and torch/cnn/k00 (CNN), every format each."""
    root = tmp_path_factory.mktemp("export")
    mlp = random_model(WIDTHS, seed=3, method="dense", sparsity=0.0, physical="dense")
    models = {"mlp": mlp.with_layers(mlp.layers, framework="torch"), "cnn": small_cnn(framework="torch")}
    for kind, model in models.items():
        export_kdir(model, root / "torch" / ("dense" if kind == "mlp" else "cnn") / "k00")
    return root, models


def kdir_of(root: Path, kind: str) -> Path:
    return root / "torch" / ("dense" if kind == "mlp" else "cnn") / "k00"


@pytest.fixture(scope="module")
def bundles(export_tree, tmp_path_factory):
    """(kind, format) -> (bundle dir, format, description, kind), each built once per module."""
    root, models = export_tree
    made = {}

    def get(kind: str, fmt: str):
        if (kind, fmt) not in made:
            out = tmp_path_factory.mktemp(f"bundle-{kind}-{fmt}")
            path = B.make_bundle(kdir_of(root, kind), fmt=fmt, out_root=out, export_root=root,
                                 bench_root=out / "no-bench")
            made[kind, fmt] = (path, fmt, models[kind], kind)
        return made[kind, fmt]
    return get


@pytest.fixture(params=KINDS, ids=[f"{k}-{f}" for k, f in KINDS])
def bundle(request, bundles):
    """Every kind of bundle: MLP and CNN, in ONNX, TFLite and NCNN."""
    return bundles(*request.param)


@pytest.fixture(params=[("mlp", "onnx"), ("cnn", "tflite")], ids=["mlp-onnx", "cnn-tflite"])
def some_bundle(request, bundles):
    """For checks that do not depend on the runtime: one MLP and one CNN bundle."""
    return bundles(*request.param)


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


def manifest_of(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


# ---------------------------------------------------------------- contents and hashes

def test_bundle_contents_and_hashes(bundle):
    path, fmt, _, kind = bundle
    manifest = manifest_of(path)
    model_files = [p.name for p in F.files_of(F.FORMATS[fmt], Path(F.FORMATS[fmt].suffix))]  # NCNN: 2
    on_disk = {p.name for p in path.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert {*model_files, "predict.py", "bench_device.py", "README.md", "requirements.txt", "classes.txt",
            "selftest.npy"} == on_disk
    for name, entry in manifest["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert path.name == f"{'cnn-' if kind == 'cnn' else ''}torch-dense-k00-fp32-{fmt}"  # CNN, MLP: 2 names
    assert manifest["model"]["files"] == model_files
    assert manifest["model"]["artifact"] == f"{kdir_of(Path(''), kind).as_posix()}/{model_files[0]}"
    assert manifest["provenance"]["framework"] == "torch" and manifest["provenance"]["seed"] in (3, 5)
    assert "[0, 1]" in manifest["input"]["scaling"] and manifest["input"]["dtype"] == "float32"
    assert manifest["output"]["n_classes"] == 10 and manifest["output"]["classes_file"] == "classes.txt"
    assert (path / "classes.txt").read_text().splitlines() == list(CLASS_NAMES)
    assert manifest["measured"]["verify"]["top1_agreement"] == 1.0
    assert manifest["measured"]["verify"]["max_abs_diff"] < LOGIT_ATOL
    assert 0.0 <= manifest["measured"]["accuracy"] <= 1.0
    assert manifest["model"]["delegate"] == ("xnnpack" if fmt == "tflite" else None)
    assert manifest["model"]["runtime"] == RUNTIME[fmt]


# (kind, format) -> the file's declared input, its layout, the description's sample shape (NCNN: [c, h, w] Mats)
FEATURES, NCHW = ([None, 784], "features", [784]), ([None, 1, 28, 28], "nchw", [28, 28, 1])
INPUTS = {**{("mlp", fmt): FEATURES for fmt in RUNTIME}, ("cnn", "onnx"): NCHW, ("cnn", "ncnn"): NCHW,
          ("cnn", "tflite"): ([None, 28, 28, 1], "nhwc", [28, 28, 1])}


def test_input_spec_from_description_and_file(bundle):
    """The description gives the channels-last sample shape, the file its own layout."""
    path, fmt, _, kind = bundle
    declared, layout, sample = INPUTS[kind, fmt]
    spec = manifest_of(path)["input"]
    assert (spec["shape"], spec["layout"], spec["sample_shape"]) == (declared, layout, sample)
    assert spec["accepts"][0] == sample and sorted(spec["accepts"]) == [[28, 28], [28, 28, 1], [784]]
    assert spec["source"] == "model.npz input_shape"


def test_requirements_pin_numpy_and_one_runtime(bundle):
    path, fmt, _, _ = bundle
    reqs = (path / "requirements.txt").read_text().split()
    assert [r.split("==")[0] for r in reqs] == ["numpy", PACKAGE[fmt]]
    assert all("==" in r and r.split("==")[1] for r in reqs)


def test_tarball_is_deterministic_and_matches_dir(bundle, tmp_path):
    path, _, _, _ = bundle
    tar_path = path.parent / f"{path.name}.tar.gz"
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == [path.name] + sorted(f"{path.name}/{p.name}" for p in path.iterdir())
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(TAR_MTIME, 0, 0, "", "")}
        for m in members[1:]:
            assert tar.extractfile(m).read() == (path.parent / m.name).read_bytes()
    again = write_tar_gz(path, tmp_path / "again.tar.gz", path.name)
    assert again.read_bytes() == tar_path.read_bytes()


# ---------------------------------------------------------------- predict.py

def test_predict_matches_numpy_reference(bundle, images, tmp_path):
    path, _, model, _ = bundle
    np.save(tmp_path / "x.npy", images)
    proc = run_script(path, "predict.py", tmp_path / "x.npy", "--json", "--out", tmp_path / "p.npy",
                      "--logits", tmp_path / "l.npy")
    assert proc.returncode == 0, proc.stderr
    want_logits = model.forward(images.reshape(len(images), -1).astype(np.float32) / 255)
    np.testing.assert_allclose(np.load(tmp_path / "l.npy"), want_logits, rtol=1e-4, atol=LOGIT_ATOL)
    want = want_logits.argmax(axis=1)
    got = json.loads(proc.stdout)
    np.testing.assert_array_equal(got["classes"], want)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), want)
    assert got["names"][:3] == [CLASS_NAMES[c] for c in want[:3]]


def test_predict_input_forms_agree(bundle, images, tmp_path):
    """[n,784] float 0-1, [n,28,28] and [n,28,28,1] uint8 and IDX .gz/raw give the same text output."""
    path, _, _, _ = bundle
    np.save(tmp_path / "flat.npy", images.reshape(len(images), -1).astype(np.float32) / 255)
    np.save(tmp_path / "u8.npy", images)
    np.save(tmp_path / "u8c.npy", images[..., None])
    idx = gzip.decompress((data_dir() / FILES["test"][0]).read_bytes())
    header = idx[:4] + N_IMAGES.to_bytes(4, "big") + idx[8:16]  # IDX header with n = N_IMAGES
    (tmp_path / "raw-idx").write_bytes(header + idx[16:16 + N_IMAGES * 784])
    (tmp_path / "img.gz").write_bytes(gzip.compress((tmp_path / "raw-idx").read_bytes()))
    forms = ("flat.npy", "u8.npy", "u8c.npy", "raw-idx", "img.gz")
    proc = run_script(path, "predict.py", *(tmp_path / f for f in forms))  # one run: images concatenated
    assert proc.returncode == 0, proc.stderr
    classes = np.array([line.split("\t")[1] for line in proc.stdout.splitlines()]).reshape(len(forms), N_IMAGES)
    assert (classes == classes[0]).all()


def test_selftest_and_verify_only(bundle):
    path, _, _, kind = bundle
    assert np.load(path / "selftest.npy").shape[1:] == ((784,) if kind == "mlp" else (28, 28, 1))
    proc = run_script(path, "predict.py", "--selftest")
    assert proc.returncode == 0 and proc.stdout.startswith("selftest passed"), proc.stderr
    proc = run_script(path, "predict.py", "--verify-only")
    assert proc.returncode == 0 and proc.stdout.startswith("ok:")


@pytest.mark.parametrize("case,words", [
    ("missing", ["nope.npy", "not found"]),
    ("shape", ["expected shape", "[n, 28, 28, 1]", "[n, 784]", "[n, 28, 28]", "got [3, 783]"]),
    ("dtype", ["dtype int32"]),
    ("range", ["[0, 1]"]),
    ("pickle", ["not a plain .npy"]),
    ("idx", ["IDX"]),
    ("labels", ["label 10", "outside", "0..9"]),
])
def test_predict_bad_input_one_line_error(some_bundle, tmp_path, case, words):
    path, _, _, _ = some_bundle
    target = tmp_path / ("x.npy" if case != "idx" else "x.idx")
    arrays = {"shape": np.zeros((3, 783), np.uint8), "dtype": np.zeros((3, 784), np.int32),
              "range": np.full((3, 784), 255.0, np.float32), "labels": np.zeros((3, 28, 28), np.uint8)}
    if case in arrays:
        np.save(target, arrays[case])
    elif case == "pickle":
        np.save(target, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "idx":
        target.write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20)
    extra = []
    if case == "labels":
        np.save(tmp_path / "y.npy", np.array([0, 9, 10]))
        extra = ["--labels", tmp_path / "y.npy"]
    proc = run_script(path, "predict.py", tmp_path / "nope.npy" if case == "missing" else target, *extra)
    assert_one_line_error(proc, *words)


def test_tampered_model_is_refused(bundle, tmp_path):
    path, _, _, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    np.save(tmp_path / "x.npy", np.zeros((2, 784), np.uint8))
    for name in manifest_of(copy)["model"]["files"]:  # NCNN: the .param and the .bin
        good = (copy / name).read_bytes()
        data = bytearray(good)
        data[len(data) // 2] ^= 0x01  # one bit, same size: only the hash can catch it
        (copy / name).write_bytes(bytes(data))
        assert_one_line_error(run_script(copy, "predict.py", tmp_path / "x.npy"), name, "sha256")
        assert_one_line_error(run_script(copy, "bench_device.py", "--reps", "5"), "sha256")
        (copy / name).write_bytes(good)
    (copy / name).unlink()
    assert_one_line_error(run_script(copy, "predict.py", tmp_path / "x.npy"), name, "missing")


# ---------------------------------------------------------------- bench_device.py

B_COLUMNS = ("source", "framework", "method", "sparsity", "artifact", "format", "variant", "runtime",
             "threads", "batch", "status", "reason", "p50_us", "p90_us", "p99_us", "mean_us",
             "per_sample_us", "reps", "ratio_vs_dense", "bytes", "gzip_bytes", "accuracy", "peak_rss_mb")


def test_bench_device_writes_schema_csv(bundle, images, tmp_path):
    path, fmt, model, _ = bundle
    out = tmp_path / "dev.csv"
    np.save(tmp_path / "x.npy", images[:50])
    np.save(tmp_path / "y.npy", model.predict(images[:50].reshape(50, -1).astype(np.float32) / 255))
    proc = run_script(path, "bench_device.py", "--out", out, "--warmup", "2", "--reps", "10", "--threads", "1,2",
                      "--batch", "1,4", "--images", tmp_path / "x.npy", "--labels", tmp_path / "y.npy")
    assert proc.returncode == 0, proc.stderr
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == B_COLUMNS
    assert [(r["threads"], r["batch"]) for r in rows] == [("1", "1"), ("1", "4"), ("2", "1"), ("2", "4")]
    for r in rows:
        assert r["source"] == "device" and r["status"] == "ok" and r["format"] == fmt
        assert r["runtime"] == RUNTIME[fmt]
        assert 0 < float(r["p50_us"]) <= float(r["p90_us"]) <= float(r["p99_us"])
        assert int(r["reps"]) == 10 and int(r["bytes"]) > 0 and float(r["ratio_vs_dense"]) == 1.0
        assert float(r["accuracy"]) == 1.0  # labels are the reference's own classes
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["machine"]["cores"] >= 1 and len(info["rows"]) == 4


def test_cli_builds_a_bundle_and_errors_are_one_line(export_tree, tmp_path, capsys):
    root, _ = export_tree
    assert bundle_main(["--model", str(kdir_of(root, "cnn")), "--format", "onnx", "--export-root", str(root),
                        "--bench-root", str(tmp_path / "nb"), "--out-root", str(tmp_path), "--name", "c"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "c"), str(tmp_path / "c.tar.gz")]
    for argv, word in ((["--model", str(tmp_path / "missing")], "missing"), (["--name", "../x"], "--name"),
                       (["--format", "onnx", "--delegate", "none"], "--delegate"), (["--data", "x.npz"], "--data")):
        extra = [] if "--model" in argv else ["--model", str(kdir_of(root, "mlp")), "--export-root", str(root)]
        assert bundle_main(argv + extra + ["--out-root", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and word in err[0], err


def test_tflite_delegate_none_is_kept(export_tree, tmp_path):
    """A file verified without XNNPACK is bundled, run and benchmarked without it."""
    root, _ = export_tree
    path = B.make_bundle(kdir_of(root, "mlp"), fmt="tflite", runtime="litert-builtin", out_root=tmp_path,
                         export_root=root, bench_root=tmp_path / "no-bench")
    assert manifest_of(path)["model"]["delegate"] == "none"
    proc = run_script(path, "bench_device.py", "--out", tmp_path / "d.csv", "--warmup", "1", "--reps", "3",
                      "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "d.csv", newline="") as f:
        assert [r["runtime"] for r in csv.DictReader(f)] == ["litert-builtin"]


@pytest.mark.parametrize("script,args", [("predict.py", []), ("predict.py", ["--threads", "0", "x.npy"]),
                                         ("predict.py", ["--threads", "99999999", "x.npy"]),
                                         ("bench_device.py", ["--bogus"]), ("bench_device.py", ["--batch", "0"]),
                                         ("bench_device.py", ["--batch", "10000000"]),
                                         ("bench_device.py", ["--max-seconds", "nan"])])
def test_usage_mistakes_are_one_line(bundles, script, args):
    path, _, _, _ = bundles("mlp", "onnx")
    assert_one_line_error(run_script(path, script, *args))
