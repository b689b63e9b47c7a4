"""Bad input never breaks silently: every entry point refuses it in one line and leaves nothing behind.

CLI cases run the real entry point (`python -m pipeline|export|bench`, a bundle's predict.py) in a
subprocess on small files made in tmp_path and assert: non-zero exit, stderr is exactly one line
`error: ...` naming the file or option and the problem, no "Traceback" anywhere, and the output
directory is byte-for-byte what it was before (no new or changed files, no *.tmp).
Python API cases assert a PrunedgeError whose message is one line naming the input.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline import data
from pipeline.errors import PrunedgeError
from pipeline.model import Dense, Model, random_model
from pipeline.model_io import load, save
from helpers import REPO

WIDTHS = [784, 32, 16, 10]  # small: many CLI runs start from it


# ------------------------------------------------------------------ helpers

def run(*args, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python <args>` from the repo (or cwd), with the repo importable."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)


def tree(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones too) -> sha256 of its bytes."""
    root = Path(root)
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(proc: subprocess.CompletedProcess, *words: str, out: Path | None = None,
                   before: dict | None = None, code: int | None = 2) -> str:
    """Non-zero exit, one `error: ...` line holding every word, no traceback, `out` unchanged."""
    assert proc.returncode != 0, f"accepted bad input:\n{proc.stdout}\n{proc.stderr}"
    if code is not None:
        assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    if out is not None:  # tree() lists hidden files too, so a leftover temp file shows up here
        assert tree(out) == (before or {}), f"{out} changed: partial output left behind"
    return line


def assert_one_line_error(error: PrunedgeError, *words: str) -> None:
    text = str(error)
    assert "\n" not in text and text, repr(text)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"


@pytest.fixture(autouse=True)
def no_temp_files_left(tmp_path):
    yield
    left = [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert not left, f"temp files left behind: {left}"


# ------------------------------------------------------------------ data (pipeline train)

IDX_CASES = {
    # case -> (damage(dir), words the error must contain)
    "missing-directory": (None, ["nope", "data directory not found"]),
    "missing-file": (lambda d: (d / data.FILES["train"][1]).unlink(),
                     [data.FILES["train"][1], "file not found"]),
    "truncated-gz": (lambda d: _truncate(d / data.FILES["train"][0]),
                     [data.FILES["train"][0], "corrupt or truncated gzip"]),
    "not-gzip": (lambda d: (d / data.FILES["test"][0]).write_bytes(b"this is not gzip data at all"),
                 [data.FILES["test"][0], "gzip"]),
    "empty-file": (lambda d: (d / data.FILES["test"][1]).write_bytes(gzip.compress(b"", mtime=0)),
                   [data.FILES["test"][1], "truncated IDX header"]),
    "wrong-magic": (lambda d: data.write_idx_gz(d / data.FILES["train"][1], np.zeros((30, 2, 2), np.uint8)),
                    [data.FILES["train"][1], "wrong magic number 2051", "2049"]),
    "size-mismatch": (lambda d: _short_payload(d / data.FILES["train"][0]),
                      [data.FILES["train"][0], "does not match dimensions"]),
    "count-mismatch": (lambda d: data.write_idx_gz(d / data.FILES["train"][1], np.arange(29) % 10),
                       [data.FILES["train"][1], "29 labels", "30 images"]),
    "label-out-of-range": (lambda d: data.write_idx_gz(d / data.FILES["test"][1], np.full(10, 10)),
                           [data.FILES["test"][1], "label 10 out of range"]),
    "too-few-images": (lambda d: None, ["30 training images", "validation"]),
}


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _short_payload(path: Path) -> None:
    """A valid gzip whose IDX header promises more pixels than follow."""
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-7], mtime=0))


@pytest.fixture
def idx_dir(tmp_path) -> Path:
    """A complete, well-formed but tiny Fashion-MNIST-style directory (30 train, 10 test)."""
    d = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 10)):
        images, labels = data.FILES[split]
        data.write_idx_gz(d / images, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        data.write_idx_gz(d / labels, np.arange(n) % 10)
    return d


@pytest.mark.parametrize("case", list(IDX_CASES))
def test_train_refuses_bad_data_before_training(case, idx_dir, tmp_path):
    damage, words = IDX_CASES[case]
    directory = tmp_path / "nope" if damage is None else idx_dir
    if damage is not None:
        damage(idx_dir)
    out = tmp_path / "artifacts"
    proc = run("-m", "pipeline", "train", "--framework", "torch", "--data-dir", directory,
               "--epochs", "1", "--root", out)
    assert_refused(proc, *words, out=out)


# ------------------------------------------------------------------ model files (.npz)

def _model(seed: int = 0) -> Model:
    m = random_model(WIDTHS, seed=seed)
    return m.with_layers(m.layers, framework="torch", method="dense", sparsity=0.0, physical="dense")


def _rewrite_npz(path: Path, edit) -> None:
    """Load the raw arrays of a model file, let `edit(arrays, header)` change them, write it back."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays["meta.json"].tobytes())
    edit(arrays, header)
    arrays["meta.json"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def _set(name, index, value):
    def edit(arrays, header):
        a = arrays[name].copy()
        a[index] = value
        arrays[name] = a
    return edit


def _unchained(arrays, header):
    arrays["layer1.weight"] = np.zeros((33, 16), np.float32)
    header["layers"][1]["shape"] = [33, 16]


def _pickled(path: Path) -> None:
    arrays = {"meta.json": np.frombuffer(b'{"format": "prunedge-model"}', np.uint8),
              "layer0.weight": np.array([{"exploit": "os.system"}], dtype=object)}
    np.savez(path, **arrays, allow_pickle=True)


def _flip(path: Path, where: float = 0.5) -> None:
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * where)] ^= 0x40
    path.write_bytes(bytes(raw))


def _bad_csr(path: Path) -> None:
    m = _model()
    from pipeline.sparse import to_csr
    from pipeline.prune import weight_prune
    save(to_csr(weight_prune(m, 50)), path)
    _rewrite_npz(path, _set("layer0.csr_indices", 0, 10_000))


NPZ_CASES = {
    # case -> (make(path), words)
    "missing": (lambda p: p.unlink(), ["model file not found"]),
    "truncated": (_truncate, ["corrupt or truncated"]),
    "flipped-byte": (_flip, ["corrupt"]),
    "not-a-zip": (lambda p: p.write_bytes(b"\x08\x01\x12\x07pytorch" * 20), ["corrupt or truncated .npz"]),
    "pickled-object": (_pickled, ["pickle"]),
    "no-metadata": (lambda p: np.savez(p, w=np.zeros(3, np.float32)), ["not a prunedge model"]),
    "nan-weight": (lambda p: _rewrite_npz(p, _set("layer1.weight", (0, 0), np.nan)),
                   ["layer 1", "NaN or infinite"]),
    "inf-bias": (lambda p: _rewrite_npz(p, _set("layer2.bias", 3, np.inf)), ["layer 2", "NaN or infinite"]),
    "shapes-do-not-chain": (lambda p: _rewrite_npz(p, _unchained), ["layer 1 (dense): weight [33,", "does not take the 32 inputs"]),
    "recorded-shape-differs": (lambda p: _rewrite_npz(p, lambda a, h: h["layers"][0].update(shape=[784, 31])),
                               ["inconsistent model file"]),
    "float64-weights": (lambda p: _rewrite_npz(p, lambda a, h: a.update({"layer0.weight": a["layer0.weight"]
                                                                         .astype(np.float64)})),
                        ["float32"]),
    "csr-index-out-of-range": (_bad_csr, ["inconsistent model file"]),
}


# The CLI turns the loader's error into its one line; the cases named in the issue go through it,
# the rest through the Python API only (same message, no interpreter start-up per case).
CLI_NPZ_CASES = ("truncated", "pickled-object", "nan-weight", "inf-bias", "shapes-do-not-chain", "missing")


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_bad_model_file_is_refused(case, tmp_path):
    path = save(_model(), tmp_path / "model.npz")
    make, words = NPZ_CASES[case]
    make(path)
    with pytest.raises(PrunedgeError) as e:
        load(path)
    assert_one_line_error(e.value, str(path), *words)
    if case in CLI_NPZ_CASES:
        before = tree(tmp_path)
        assert_refused(run("-m", "pipeline", "info", path), str(path), *words, out=tmp_path, before=before)


@pytest.mark.parametrize("case", ["truncated", "missing"])
def test_prune_refuses_bad_trained_model_and_writes_nothing(case, tmp_path):
    root = tmp_path / "artifacts"
    trained = save(_model(), root / "train" / "torch" / "s0" / "model.npz")
    make, words = NPZ_CASES[case]
    make(trained)
    if case == "missing":
        words = ["trained model not found"]
    before = tree(root)
    proc = run("-m", "pipeline", "prune", "--framework", "torch", "--levels", "0,50", "--root", root)
    assert_refused(proc, str(trained), *words, out=root, before=before)


# ------------------------------------------------------------------ .onnx / .tflite model files

@pytest.fixture(scope="module")
def export_tree(tmp_path_factory):
    """<art>/export/torch/dense/k00/{model.npz, model.onnx, model.tflite} + manifest, verified for real."""
    from export import formats as F
    from export.kdir import export_kdir
    from export.manifest import write_manifest
    from export.verify import EvalData
    from helpers import real_test_slice

    art = tmp_path_factory.mktemp("art")
    root = art / "export"
    kdir = root / "torch" / "dense" / "k00"
    model = _model(seed=3)
    save(model, kdir / "model.npz")
    x = real_test_slice(300)
    y = model.predict(x)  # labels = the model's own answers: any correct file scores 100%
    ev = EvalData(x_check=x[:200], x_test=x, y_test=y, x_calibration=x[:50], source="test", sha256="test")
    record = export_kdir(kdir, root=root, formats=F.select("onnx,tflite"), options=F.ExportOptions(),
                         data=ev, strict=True)
    write_manifest(root, record["files"], config={"test": True})
    return art


@pytest.fixture
def art(export_tree, tmp_path) -> Path:
    """A private copy of the export tree to damage."""
    return Path(shutil.copytree(export_tree, tmp_path / "art"))


K00 = Path("export/torch/dense/k00")
VERIFY_CASES = {
    # case -> (damage(art), words)
    "truncated-onnx": (lambda a: _truncate(a / K00 / "model.onnx"), ["model.onnx", "manifest says"]),
    "truncated-tflite": (lambda a: _truncate(a / K00 / "model.tflite"), ["model.tflite", "manifest says"]),
    "flipped-onnx": (lambda a: _flip(a / K00 / "model.onnx", 0.9), ["model.onnx", "sha256 differs"]),
    "flipped-tflite": (lambda a: _flip(a / K00 / "model.tflite", 0.9), ["model.tflite", "sha256 differs"]),
    "replaced-npz": (lambda a: save(_model(seed=9), a / K00 / "model.npz"), ["model.npz", "manifest says"]),
    "missing-file": (lambda a: (a / K00 / "model.tflite").unlink(), ["model.tflite", "missing"]),
    "manifest-not-json": (lambda a: (a / "export/manifest.json").write_text('{"files": ['),
                          ["manifest.json", "not valid JSON"]),
    "manifest-escapes-root": (lambda a: _edit_manifest(a, lambda m: m["files"][0].update(path="../../etc/passwd")),
                              ["manifest.json", "leaves the export root"]),
    "no-manifest": (lambda a: (a / "export/manifest.json").unlink(), ["manifest.json", "not found"]),
}


def _edit_manifest(art: Path, edit) -> None:
    path = art / "export/manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("case", list(VERIFY_CASES))
def test_export_verify_refuses_changed_files(case, art):
    damage, words = VERIFY_CASES[case]
    damage(art)
    before = tree(art)
    proc = run("-m", "export", "verify", "--root", art, "--formats", "onnx", "--jobs", "1")
    assert_refused(proc, *words, out=art, before=before)


def test_export_verify_strict_fails_a_broken_file_the_manifest_vouches_for(art):
    """A file that was already broken when it was recorded (hashes match) is re-verified and fails:
    --strict exits 1 and the manifest marks it failed with the reason; never a traceback."""
    onnx = art / K00 / "model.onnx"
    _truncate(onnx)
    digest, size = hashlib.sha256(onnx.read_bytes()).hexdigest(), onnx.stat().st_size
    _edit_manifest(art, lambda m: [e.update(sha256=digest, bytes=size) for e in m["files"]
                                   if e["path"].endswith("model.onnx")])
    proc = run("-m", "export", "verify", "--root", art, "--formats", "onnx", "--jobs", "1", "--strict")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "1 files failed verification" in proc.stderr
    assert "FAILED torch/dense/k00/model.onnx" in proc.stdout
    entry = next(e for e in json.loads((art / "export/manifest.json").read_text())["files"]
                 if e["path"].endswith("model.onnx"))
    assert entry["verify"]["status"] == "failed" and "model.onnx" in entry["verify"]["reason"]


def _nan_onnx(src: Path, dst: Path) -> None:
    import onnx
    from onnx import numpy_helper
    proto = onnx.load(str(src))
    init = proto.graph.initializer[0]
    w = numpy_helper.to_array(init).copy()
    w[0, 0] = np.nan
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    dst.write_bytes(proto.SerializeToString())


IMPORT_CASES = {
    # case -> (make(dst, k00 dir), words)
    "truncated-onnx": (lambda d, k: d.write_bytes((k / "model.onnx").read_bytes()[:5000]), ["bad.onnx"]),
    "garbage-onnx": (lambda d, k: d.write_bytes(os.urandom(3000)), ["bad.onnx"]),
    "nan-onnx": (lambda d, k: _nan_onnx(k / "model.onnx", d), ["bad.onnx", "NaN or infinite"]),
    "truncated-tflite": (lambda d, k: d.write_bytes((k / "model.tflite").read_bytes()[:4000]), ["bad.tflite"]),
    "empty-tflite": (lambda d, k: d.write_bytes(b""), ["bad.tflite", "empty file"]),
    "unsupported-npz": (lambda d, k: shutil.copyfile(k / "model.npz", d), ["bad.npz", "unknown model format"]),
    "missing": (lambda d, k: None, ["bad.onnx", "not found"]),
}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_export_run_refuses_bad_model_to_import(case, export_tree, tmp_path):
    make, words = IMPORT_CASES[case]
    suffix = next((s for s in (".tflite", ".npz") if s[1:] in case), ".onnx")
    bad = tmp_path / f"bad{suffix}"
    make(bad, export_tree / K00)
    out = tmp_path / "out"
    proc = run("-m", "export", "run", "--root", out, "--model", bad, "--formats", "onnx",
               "--levels", "0", "--methods", "weight", "--jobs", "1")
    assert_refused(proc, *words, out=out)


@pytest.mark.parametrize("name", ["model.onnx", "model.tflite"])
@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_runtime_sessions_refuse_damaged_files(export_tree, tmp_path, name, how):
    from export.runtimes import open_session
    path = tmp_path / name
    raw = (export_tree / K00 / name).read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 3], "empty": b"", "garbage": os.urandom(len(raw))}[how])
    runtime = "onnxruntime" if name.endswith(".onnx") else "litert-xnnpack"
    with pytest.raises(PrunedgeError) as e:
        session = open_session(path, runtime)
        session(np.zeros((2, 784), np.float32))  # some damage only shows when the graph runs
    assert_one_line_error(e.value, str(path))


# ------------------------------------------------------------------ the deploy bundle (predict.py)

@pytest.fixture(scope="module")
def bundle(export_tree, tmp_path_factory) -> Path:
    from bundle.build import make_bundle
    out = tmp_path_factory.mktemp("bundles")
    return make_bundle(export_tree / K00, fmt="onnx", out_root=out, export_root=export_tree / "export",
                       bench_root=out / "no-bench")


def _rehash(bundle_dir: Path, name: str) -> None:
    """Record a damaged file's new hash, as an attacker or a sloppy copy would."""
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    f = bundle_dir / name
    manifest["files"][name] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "bytes": f.stat().st_size}
    path.write_text(json.dumps(manifest))


PREDICT_CASES = {
    # case -> (prepare(bundle copy, images dir) -> argv, words)
    "wrong-shape": (lambda b, d: [_npy(d / "x.npy", np.zeros((2, 783), np.float32))],
                    ["x.npy", "expected shape [n, 784]", "[2, 783]"]),
    "wrong-dtype": (lambda b, d: [_npy(d / "x.npy", np.zeros((2, 784), np.int32))], ["x.npy", "dtype int32"]),
    "nan-pixels": (lambda b, d: [_npy(d / "x.npy", np.full((2, 784), np.nan, np.float32))], ["x.npy", "NaN"]),
    "pickled-npy": (lambda b, d: [_npy(d / "x.npy", np.array([{"a": 1}], dtype=object))], ["x.npy", "not a plain"]),
    "tampered-model": (lambda b, d: [_flip(b / "model.onnx", 0.9), _npy(d / "x.npy", _ok())][1:],
                       ["model.onnx", "sha256"]),
    "truncated-model-rehashed": (lambda b, d: [_truncate(b / "model.onnx"), _rehash(b, "model.onnx"),
                                               _npy(d / "x.npy", _ok())][2:],
                                 ["model.onnx", "could not load"]),
    "manifest-not-json": (lambda b, d: [(b / "manifest.json").write_text("{"), _npy(d / "x.npy", _ok())][1:],
                          ["manifest.json", "unreadable manifest"]),
    "threads-zero": (lambda b, d: [_npy(d / "x.npy", _ok()), "--threads", "0"], ["--threads", "[1, "]),
    "out-dir-missing": (lambda b, d: [_npy(d / "x.npy", _ok()), "--out", d / "no" / "preds.npy"],
                        ["preds.npy", "does not exist"]),
    "labels-count": (lambda b, d: [_npy(d / "x.npy", _ok()), "--labels", _npy(d / "y.npy", np.zeros(3, np.int64))],
                     ["y.npy", "3 labels for 2 images"]),
}


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array, allow_pickle=array.dtype == object)
    return path


def _ok() -> np.ndarray:
    return np.zeros((2, 784), np.uint8)


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_predict_refuses_bad_input_and_bad_bundles(case, bundle, tmp_path):
    copy = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    images = tmp_path / "in"
    images.mkdir()
    prepare, words = PREDICT_CASES[case]
    argv = prepare(copy, images)
    before = tree(tmp_path)
    assert_refused(run(copy / "predict.py", *argv, cwd=tmp_path), *words, out=tmp_path, before=before)


def test_bundle_refuses_a_model_changed_since_export(art, tmp_path):
    _flip(art / K00 / "model.onnx", 0.9)
    out = tmp_path / "bundles"
    proc = run("-m", "export", "bundle", "--model", art / K00, "--format", "onnx", "--out-root", out,
               "--export-root", art / "export", "--bench-root", tmp_path / "no-bench")
    assert_refused(proc, "model.onnx", "sha256 differs", out=out)


# ------------------------------------------------------------------ options

OPTION_CASES = {
    # case -> (argv after `python -m`, words)
    "prune-level-100": (["pipeline", "prune", "--levels", "100"], ["--levels", "[0, 100)", "100"]),
    "prune-level-negative": (["pipeline", "prune", "--levels", "0,-5"], ["--levels", "[0, 100)"]),
    "prune-level-text": (["pipeline", "prune", "--levels", "ninety"], ["--levels", "ninety"]),
    "prune-unknown-method": (["pipeline", "prune", "--methods", "weight,magic"], ["--methods", "'magic'"]),
    "prune-unknown-framework": (["pipeline", "prune", "--framework", "jax"], ["--framework", "'jax'"]),
    "prune-seeds-0": (["pipeline", "prune", "--seeds", "0"], ["--seeds", ">= 1"]),
    "train-seeds-0": (["pipeline", "train", "--seeds", "0"], ["--seeds", ">= 1"]),
    "train-epochs-0": (["pipeline", "train", "--framework", "torch", "--epochs", "0"], ["--epochs", ">= 1"]),
    "export-unknown-framework": (["export", "run", "--frameworks", "jax"], ["--frameworks", "'jax'"]),
    "export-unknown-format": (["export", "run", "--formats", "onnx,coreml"], ["--formats", "'coreml'"]),
    "export-unknown-method": (["export", "run", "--methods", "magic"], ["--methods", "'magic'"]),
    "export-level-100": (["export", "run", "--levels", "100"], ["--levels", "[0, 100)"]),
    "export-jobs-0": (["export", "run", "--jobs", "0"], ["--jobs", "[1, "]),
    "export-data-without-model": (["export", "run", "--data", "x.npz"], ["--data", "--model"]),
    "bench-batch-0": (["bench", "run", "--batch", "0"], ["--batch", ">= 1"]),
    "bench-threads-0": (["bench", "run", "--threads", "0"], ["--threads", ">= 1"]),
    "bench-unknown-runtime": (["bench", "run", "--runtime", "tensorrt"], ["--runtime", "tensorrt"]),
    "bench-level-100": (["bench", "run", "--levels", "100"], ["--levels", "[0, 100)"]),
    "bench-timeout-0": (["bench", "run", "--timeout", "0"], ["--timeout", "> 0"]),
    "report-seeds-0": (["bench", "report", "--seeds", "0"], ["--seeds", ">= 1"]),
    "export-gradual-lowrank": (["export", "run", "--methods", "lowrank-gp"], ["--methods", "cannot be applied gradually"]),
    # argparse's own mistakes are one line too (no usage block)
    "export-unknown-flag": (["export", "run", "--sparsity", "90"], ["unrecognized arguments", "--sparsity"]),
    "prune-missing-value": (["pipeline", "prune", "--levels"], ["--levels", "expected one argument"]),
    "bench-not-a-number": (["bench", "run", "--timeout", "soon"], ["--timeout", "invalid float value"]),
}
# Where each command writes: checked to be left untouched.
OUT_OPTION = {("pipeline", "train"): "--root", ("pipeline", "prune"): "--root", ("export", "run"): "--root",
              ("bench", "run"): "--out", ("bench", "report"): "--out"}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_bad_options_are_refused_before_any_work(case, tmp_path):
    argv, words = OPTION_CASES[case]
    out = tmp_path / "out"
    flag = OUT_OPTION.get(tuple(argv[:2]))
    extra = [flag, out] if flag else []
    proc = run("-m", *argv, *extra, cwd=tmp_path)
    assert_refused(proc, *words, out=out)
    assert not list(tmp_path.iterdir()), "the command wrote something"


# ------------------------------------------------------------------ inference through the Python API

@pytest.mark.parametrize("x,words", [
    (np.zeros((2, 783), np.float32), ["expected shape [batch, 784]", "[2, 783]"]),
    (np.zeros(784, np.float32), ["expected shape", "[784]"]),
    (np.zeros((1, 28, 28), np.float32), ["expected shape", "[1, 28, 28]"]),
    (np.zeros((0, 784), np.float32), ["empty batch"]),
    (np.zeros((2, 784), np.int64), ["dtype int64"]),
    (np.zeros((2, 784), np.uint8), ["dtype uint8"]),
    (np.zeros((2, 784), bool), ["dtype bool"]),
    (np.zeros((2, 784), object), ["dtype object"]),
    ([[0.0] * 784, [0.0] * 783], ["not a numeric array"]),
    ("pixels", ["expected shape"]),
    (None, ["expected shape"]),
])
def test_model_forward_refuses_bad_input(x, words):
    with pytest.raises(PrunedgeError) as e:
        _model().forward(x)
    assert_one_line_error(e.value, "input", *words)


@pytest.mark.parametrize("name,runtime", [("model.onnx", "onnxruntime"), ("model.tflite", "litert-xnnpack"),
                                          ("model.npz", "numpy")])
@pytest.mark.parametrize("x,words", [
    (np.zeros((2, 100), np.float32), ["expected shape", "784"]),
    (np.zeros((2, 784), np.int32), ["dtype int32"]),
    (np.zeros((0, 784), np.float32), ["empty batch"]),
])
def test_runtime_sessions_refuse_bad_input(export_tree, name, runtime, x, words):
    from export.runtimes import open_session
    session = open_session(export_tree / K00 / name, runtime)
    with pytest.raises(PrunedgeError) as e:
        session(x)
    assert_one_line_error(e.value, *words)
    np.testing.assert_allclose(session(np.zeros((3, 784), np.float32)),  # still usable afterwards
                               load(export_tree / K00 / "model.npz").forward(np.zeros((3, 784), np.float32)),
                               atol=1e-5)
