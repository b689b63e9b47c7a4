"""Export formats x model kinds, run in their real runtimes and compared with `Model.forward`.

Small random 784-64-32-10 models; every file is converted once per module (TFLite
conversion is the slow part, ~0.3 s a file after a ~3 s TensorFlow import).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from export import formats as F
from export import onnx_format, tflite_format
from export.kdir import export_kdir
from export.work import run_kdirs
from pipeline.executor import InProcess
from export.manifest import check_manifest, load_manifest, write_manifest
from export.runners import TfliteSession, run_onnx, run_tflite
from export.runtimes import RUNTIMES, open_session
from export.table import format_table
from export.verify import EvalData, verify_file
from helpers import real_test_slice
from pipeline import prune, shrink, sparse
from pipeline.errors import PrunedgeError
from pipeline.model import random_model
from pipeline.model_io import save

WIDTHS = [784, 64, 32, 10]
FP32_ATOL = 1e-4  # the verification tolerance: float32 kernels only reorder sums (~1e-6 here)
FP16_REL = 1e-2  # fp16 weights: ~1e-3 of the logit scale
INT8_REL_L2 = 0.15  # int8: ||y - ref|| / ||ref|| ~ 0.02-0.08 here; a broken scale or kernel is >> 0.15
MIN_AGREEMENT = 0.95  # random models have near-ties; verify uses 0.99 on trained models


def _models() -> dict:
    dense = random_model(WIDTHS, seed=1)
    return {
        "dense": dense.with_layers(dense.layers, physical="dense"),
        "shrunk": shrink.shrink(prune.unit_prune(dense, 50)),
        "csr": sparse.to_csr(prune.weight_prune(dense, 80)),
    }


CASES = [(kind, f.name) for kind, m in _models().items() for f in F.for_model(m)]


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return real_test_slice(300)


@pytest.fixture(scope="module")
def models() -> dict:
    return _models()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, models, x) -> dict:
    """(kind, format name) -> written file, each converted once."""
    out = tmp_path_factory.mktemp("exported")
    options = F.ExportOptions(calibration=x[:100])
    return {(kind, name): F.FORMATS[name].export(models[kind], out / kind / F.FORMATS[name].suffix, options)
            for kind, name in CASES}


# ------------------------------------------------------------------ the table


def test_table_rows_are_consistent():
    suffixes = [f.suffix for f in F.FORMATS.values()]
    assert len(set(suffixes)) == len(suffixes)
    for f in F.FORMATS.values():
        assert f.suffix.endswith("." + f.format) or f.suffix.startswith(f"model.{f.format}."), f.name  # NCNN: .ncnn.param
        assert f.runtimes and set(f.runtimes) <= set(RUNTIMES) and f.format in F.INSPECT
        assert all(f.format in RUNTIMES[r].formats for r in f.runtimes), f.name
        assert f.check in ("fp32", "reduced") and f.precision in ("fp32", "fp16", "int8-dynamic", "int8-full")
        params = list(inspect.signature(f.export).parameters)[:3]
        assert params == ["model", "out_path", "options"], f.name


def test_sparse_rows_apply_only_to_csr_models(models):
    names = {kind: {f.name for f in F.for_model(m)} for kind, m in models.items()}
    assert {"onnx-sparse", "tflite-sparse"} <= names["csr"]
    assert not names["dense"] & {"onnx-sparse", "tflite-sparse"}
    assert not names["shrunk"] & {"onnx-sparse", "tflite-sparse"}
    assert F.physical_kind(models["shrunk"]) == "shrunk"


def test_select_rejects_unknown_format():
    with pytest.raises(PrunedgeError, match="--formats: unknown format 'onnx-int4'"):
        F.select("onnx,onnx-int4")
    assert [f.name for f in F.select("tflite,onnx")] == ["onnx", "tflite"]  # table order


# ------------------------------------------------------------------ parity in the real runtimes


@pytest.mark.parametrize("kind,name", CASES)
def test_runtime_output_matches_reference(kind, name, models, exported, x):
    fmt = F.FORMATS[name]
    ref = models[kind].forward(x)
    for runtime in fmt.runtimes:
        y = open_session(exported[kind, name], runtime)(x)
        assert y.dtype == np.float32 and y.shape == ref.shape
        if fmt.check == "fp32":
            np.testing.assert_allclose(y, ref, rtol=0, atol=FP32_ATOL)
        elif fmt.variant == "fp16":
            np.testing.assert_allclose(y, ref, rtol=0, atol=FP16_REL * np.abs(ref).max())
        else:
            assert np.linalg.norm(y - ref) / np.linalg.norm(ref) <= INT8_REL_L2
        assert np.mean(y.argmax(1) == ref.argmax(1)) >= MIN_AGREEMENT


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_sessions_resize_between_batches(kind, models, exported, x):
    ref = models[kind].forward(x[:9])
    for name, runner in (("onnx", run_onnx), ("tflite", run_tflite)):
        path = exported[kind, name]
        session = open_session(path, F.FORMATS[name].runtimes[0])
        for batch in (1, 9, 4, 9):
            np.testing.assert_allclose(session(x[:batch]), ref[:batch], rtol=0, atol=FP32_ATOL)
        np.testing.assert_allclose(runner(path, x[:9]), ref, rtol=0, atol=FP32_ATOL)


def test_int8_full_has_int8_input_float_logits(exported, models, x):
    session = TfliteSession(exported["dense", "tflite-int8-full"], delegate="none")
    assert np.dtype(session._in["dtype"]) == np.int8 and np.dtype(session._out["dtype"]) == np.float32
    y = session(x)
    assert y.dtype == np.float32
    assert np.mean(y.argmax(1) == models["dense"].predict(x)) >= MIN_AGREEMENT


def test_int8_full_without_calibration_is_a_user_error(models, tmp_path):
    with pytest.raises(PrunedgeError, match="calibration"):
        F.FORMATS["tflite-int8-full"].export(models["dense"], tmp_path / "m.tflite", F.ExportOptions())


# ------------------------------------------------------------------ file contents


def test_onnx_graph_opset_names_and_dynamic_batch(exported, models):
    import onnx
    proto = onnx.load(str(exported["shrunk", "onnx"]))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == onnx_format.OPSET
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("x", "logits")
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    # unit-shrunk: the small matrices are what is stored
    shapes = [tuple(t.dims) for t in proto.graph.initializer if t.name.startswith("W")]
    assert shapes == [l.shape for l in models["shrunk"].layers] and shapes[0][1] == 32


def test_onnx_bytes_are_deterministic(models, tmp_path):
    options = F.ExportOptions()
    for name in ("onnx", "onnx-sparse"):
        a = F.FORMATS[name].export(models["csr"], tmp_path / "a.onnx", options).read_bytes()
        b = F.FORMATS[name].export(models["csr"], tmp_path / "b.onnx", options).read_bytes()
        assert a == b, name


def test_onnx_sparse_stores_only_kept_weights(models, exported):
    import onnx
    proto = onnx.load(str(exported["csr", "onnx-sparse"]))
    onnx.checker.check_model(proto, full_check=True)
    stored = [n.attribute[0].sparse_tensor for n in proto.graph.node if n.op_type == "Constant"]
    csr_layers = [l for l in models["csr"].layers if l.is_sparse]
    assert [len(s.values.float_data) or s.values.dims[0] for s in stored] == [l.nnz for l in csr_layers]
    # 12 bytes per kept weight (float32 value + INT64 index) vs 4 dense: 0.2 * 3 = 0.6 of the matrices
    assert exported["csr", "onnx-sparse"].stat().st_size < 0.7 * exported["csr", "onnx"].stat().st_size
    assert F.INSPECT["onnx"](exported["csr", "onnx-sparse"]) == (["Constant", "Gemm", "Relu"], False)


def test_tflite_op_lists(exported):
    assert F.INSPECT["tflite"](exported["dense", "tflite"]) == (["FULLY_CONNECTED"], False)
    ops, runs_sparse = F.INSPECT["tflite"](exported["csr", "tflite-sparse"])
    assert ops == ["DENSIFY", "FULLY_CONNECTED"] and not runs_sparse  # random sparsity is densified
    assert "DEQUANTIZE" in F.INSPECT["tflite"](exported["dense", "tflite-fp16"])[0]
    assert exported["csr", "tflite-sparse"].stat().st_size < 0.6 * exported["csr", "tflite"].stat().st_size


# ------------------------------------------------------------------ bad files


def _damage(path: Path, how: str, tmp_path: Path) -> Path:
    data = path.read_bytes()
    out = tmp_path / f"{how}{path.suffix}"
    out.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x07not a model\x00" * 40,
                     "empty": b""}[how])
    return out


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("name", ["onnx", "tflite"])
def test_damaged_files_are_rejected_with_one_line(name, how, exported, tmp_path):
    fmt = F.FORMATS[name]
    bad = _damage(exported["dense", name], how, tmp_path)
    with pytest.raises(PrunedgeError) as info:
        open_session(bad, fmt.runtimes[0])
    message = str(info.value)
    assert message.startswith(str(bad)) and "\n" not in message


def test_missing_file_and_unknown_delegate(tmp_path, exported):
    with pytest.raises(PrunedgeError, match="file not found"):
        run_tflite(tmp_path / "nope.tflite", np.zeros((1, 784), np.float32))
    with pytest.raises(PrunedgeError, match="unknown LiteRT delegate 'gpu'"):
        run_tflite(exported["dense", "tflite"], np.zeros((1, 784), np.float32), delegate="gpu")
    with pytest.raises(PrunedgeError, match=r"expected shape \[batch, 784\]"):
        run_onnx(exported["dense", "onnx"], np.zeros((1, 783), np.float32))


# ------------------------------------------------------------------ verification


def _data(x: np.ndarray, model) -> EvalData:
    y = model.predict(x)
    return EvalData(x_check=x[:200], x_test=x, y_test=y, x_calibration=x[:100], source="test", sha256="0" * 64)


def test_verify_passes_good_file_and_fails_wrong_one(models, exported, x):
    fmt, path = F.FORMATS["tflite"], exported["dense", "tflite"]
    good = verify_file(path, fmt, models["dense"].forward(x[:200]), _data(x, models["dense"]))
    assert good.verify["status"] == "passed" and good.runtime == "litert-xnnpack" and good.accuracy == 1.0
    wrong = verify_file(path, fmt, models["csr"].forward(x[:200]), _data(x, models["csr"]))
    assert wrong.verify["status"] == "failed"
    assert "litert-xnnpack: max |diff|" in wrong.verify["reason"]
    assert "litert-builtin: max |diff|" in wrong.verify["reason"]


def test_compare_rules():
    from pipeline.checks import FP32, INT8_LAYER, REDUCED, compare
    ref = np.array([[0.0, 1.0], [2.0, 0.0]])
    assert compare(ref, ref + 5e-5, FP32)["status"] == "passed"
    assert compare(ref, ref + 2e-4, FP32)["status"] == "failed"
    assert compare(ref, ref + 0.4, REDUCED)["status"] == "passed"  # same top-1
    flipped = compare(ref, ref[:, ::-1], REDUCED)
    assert flipped["status"] == "failed" and flipped["top1_agreement"] == 0.0
    assert compare(ref, np.full_like(ref, np.nan), REDUCED)["status"] == "failed"
    assert compare(ref, ref * 1.01, INT8_LAYER)["status"] == "passed"
    assert compare(ref, ref * 1.2, INT8_LAYER)["status"] == "failed"
    assert compare(ref, ref[:1], FP32)["reason"].startswith("output shape")


def test_fallback_to_builtin_kernels_is_recorded(models, x, tmp_path, monkeypatch):
    """int8 weights stored sparse: XNNPACK refuses (or miscomputes) them; builtin kernels are right."""
    from pipeline.checks import Tolerance
    monkeypatch.setitem(__import__("pipeline.checks").checks.PRECISION, "reduced",
                        Tolerance(min_top1=MIN_AGREEMENT))  # random model: near-ties
    recipe = tflite_format.Recipe(optimizations=("DEFAULT", "EXPERIMENTAL_SPARSITY"))
    path = tmp_path / "m.int8-sparse.tflite"
    path.write_bytes(tflite_format.convert(models["csr"], recipe, F.ExportOptions(), path))
    fmt = F.ExportFormat(name="int8-sparse", suffix=path.name, format="tflite", variant="int8-sparse",
                         check="reduced", precision="int8-dynamic", export=None, runtimes=F.LITERT)
    outcome = verify_file(path, fmt, models["csr"].forward(x[:200]), _data(x, models["csr"]))
    assert outcome.verify["status"] == "passed" and outcome.runtime == "litert-builtin"
    assert outcome.verify["reason"].startswith("fallback from litert-xnnpack")


# ------------------------------------------------------------------ k-dirs, manifest, table, CLI


@pytest.fixture(scope="module")
def kdir_root(tmp_path_factory, models, x):
    root = tmp_path_factory.mktemp("export")
    kdir = root / "random" / "weight" / "k80"
    save(models["csr"].with_layers(models["csr"].layers, framework="random"), kdir / "model.npz")
    record = export_kdir(kdir, root=root, formats=F.select("onnx,onnx-sparse,tflite-sparse"),
                         options=F.ExportOptions(), data=_data(x, models["csr"]), strict=True)
    write_manifest(root, record["files"], config={"test": True})
    return root, record


def test_kdir_record_and_manifest(kdir_root):
    root, record = kdir_root
    assert [e["name"] for e in record["files"]] == ["npz", "onnx", "onnx-sparse", "tflite-sparse"]
    assert all(e["verify"]["status"] == "passed" for e in record["files"])
    manifest = load_manifest(root)
    by_name = {e["name"]: e for e in manifest["files"]}
    assert by_name["npz"]["runs_sparse"] and not by_name["onnx-sparse"]["runs_sparse"]
    e = by_name["tflite-sparse"]
    assert (e["path"], e["format"], e["variant"], e["runtime"]) == \
        ("random/weight/k80/model.sparse.tflite", "tflite", "sparse", "litert-xnnpack")
    assert e["framework"] == "random" and e["method"] == "weight" and e["sparsity"] == 80.0
    assert "onnxruntime" in manifest["versions"] and check_manifest(root) == []
    table = format_table(manifest)
    assert "4 files: 4 passed, 0 failed" in table and "tflite-sparse" in table


def test_check_manifest_reports_changed_and_missing_files(kdir_root, tmp_path):
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(kdir_root[0], root)
    onnx_path = root / "random/weight/k80/model.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[-1] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    (root / "random/weight/k80/model.sparse.tflite").unlink()
    problems = check_manifest(root)
    assert len(problems) == 2
    assert any("model.onnx: sha256 differs" in p for p in problems)
    assert any("model.sparse.tflite: listed in the manifest but missing" in p for p in problems)


def test_failed_export_is_a_failed_row_and_strict_raises(models, x, tmp_path):
    def broken(model, out_path, options):
        raise PrunedgeError(f"{out_path}: converter exploded")
    bad = F.ExportFormat(name="onnx", suffix="model.onnx", format="onnx", variant="fp32",
                         runtimes=("onnxruntime",), check="fp32", precision="fp32", export=broken)
    kdir = tmp_path / "random" / "dense" / "k00"
    save(models["dense"], kdir / "model.npz")
    (kdir / "model.onnx").write_bytes(b"stale file from an earlier run")
    record = export_kdir(kdir, root=tmp_path, formats=[bad], options=F.ExportOptions(), data=_data(x, models["dense"]))
    entry = record["files"][1]
    assert entry["verify"]["status"] == "failed" and "converter exploded" in entry["verify"]["reason"]
    assert entry["sha256"] is None and not (kdir / "model.onnx").exists()
    table = format_table({"files": record["files"]})
    assert "FAILED random/dense/k00/model.onnx" in table and "1 failed" in table
    with pytest.raises(PrunedgeError, match="converter exploded"):
        export_kdir(kdir, root=tmp_path, formats=[bad], options=F.ExportOptions(),
                    data=_data(x, models["dense"]), strict=True)


def test_run_kdirs_skips_unchanged_and_redoes_changed(models, x, tmp_path):
    kdir = tmp_path / "random" / "unit" / "k50"
    save(models["shrunk"], kdir / "model.npz")
    kwargs = dict(root=tmp_path, formats=["onnx"], options=F.ExportOptions(), data=_data(x, models["shrunk"]),
                  executor=InProcess(), strict=False)
    assert run_kdirs([kdir], **kwargs)[0]["skipped"] is False
    again = run_kdirs([kdir], **kwargs)[0]
    assert again["skipped"] is True and [e["name"] for e in again["files"]] == ["npz", "onnx"]
    (kdir / "model.onnx").write_bytes(b"tampered")
    assert run_kdirs([kdir], **kwargs)[0]["skipped"] is False
    assert json.loads((kdir / "export.json").read_text())["files"][1]["verify"]["status"] == "passed"


def test_cli_errors_are_one_line(tmp_path, capsys):
    from export.__main__ import main
    assert main(["table", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "manifest not found" in err and err.count("\n") == 1
    assert main(["run", "--root", str(tmp_path), "--methods", "magic"]) == 2
    assert "--methods: unknown method 'magic'" in capsys.readouterr().err
    assert main(["run", "--root", str(tmp_path), "--data", "x.npz"]) == 2
    assert "--data: only used with --model" in capsys.readouterr().err


def test_cli_table_prints_manifest(kdir_root, capsys):
    from export.__main__ import main
    root = kdir_root[0]
    artifacts = root.parent / (root.name + "_artifacts")
    artifacts.mkdir(exist_ok=True)
    if not (artifacts / "export").exists():
        (artifacts / "export").symlink_to(root)
    assert main(["table", "--root", str(artifacts)]) == 0
    out = capsys.readouterr().out
    assert "onnx-sparse" in out and "passed" in out


def test_cli_run_chain_with_pool_then_skips(tmp_path, monkeypatch, capsys, x):
    """prune_stage -> spawned workers -> manifest -> table; a re-run finds every k-dir up to date."""
    from export import __main__ as cli
    src = save(random_model(WIDTHS, seed=3), tmp_path / "trained" / "model.npz")
    monkeypatch.setattr(cli, "sources", lambda args: {"random": src})  # stands in for train_stage
    monkeypatch.setattr(cli, "eval_data", lambda args, model_npz=None: _data(x, random_model(WIDTHS, seed=3)))
    argv = ["run", "--root", str(tmp_path), "--methods", "weight,unit", "--levels", "0,50",
            "--formats", "onnx,onnx-sparse", "--jobs", "2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "4 k-dirs processed" in out and "0 up to date" in out
    manifest = load_manifest(tmp_path / "export")
    paths = {e["path"] for e in manifest["files"]}
    assert "random/weight/k50/model.sparse.onnx" in paths and "random/unit/k50/model.sparse.onnx" not in paths
    assert len(paths) == 9 and all(e["verify"]["status"] == "passed" for e in manifest["files"])
    assert manifest["config"]["levels"] == [0.0, 50.0] and check_manifest(tmp_path / "export") == []
    assert cli.main(argv[:-1] + ["1"]) == 0
    assert "0 k-dirs processed, 4 up to date" in capsys.readouterr().out


def test_manifest_keeps_entries_of_kdirs_a_run_did_not_touch(tmp_path, monkeypatch, capsys, x):
    """An import run (or a run narrowed with --methods/--levels) must not drop what is on disk."""
    from export import __main__ as cli
    src = save(random_model(WIDTHS, seed=3), tmp_path / "trained" / "model.npz")
    monkeypatch.setattr(cli, "sources", lambda args: {"random": src})
    monkeypatch.setattr(cli, "eval_data", lambda args, model_npz=None: _data(x, random_model(WIDTHS, seed=3)))
    base = ["run", "--root", str(tmp_path), "--levels", "0", "--formats", "onnx", "--jobs", "1"]
    assert cli.main(base + ["--methods", "weight"]) == 0
    assert cli.main(base + ["--methods", "unit"]) == 0
    paths = {e["path"] for e in load_manifest(tmp_path / "export")["files"]}
    assert {"random/weight/k00/model.onnx", "random/unit/k00/model.onnx"} <= paths
    assert check_manifest(tmp_path / "export") == []
