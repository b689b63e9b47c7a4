"""bench: latency statistics, sizes, ratios, the results schema, the plan and its cache, forks,
failure rows, a tiny sweep.

No timing assertions: latencies on a shared 2-core machine mean nothing in a test. The
end-to-end sweep runs real child processes on a tiny model and a 200-image test set.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench import artifacts, cache, child, children, latency, plan, results, size, sweep
from bench.__main__ import main
from export.runtimes import RUNTIMES, runs
from helpers import SMALL_WIDTHS, real_test_slice
from pipeline import methods, shrink, sparse
from pipeline.data import FILES, write_idx_gz
from pipeline.model import random_model
from pipeline.model_io import save

# docs/CONTRACTS.md, "Bench results schema", in order.
CONTRACT_COLUMNS = ["source", "framework", "method", "sparsity", "artifact", "format", "variant",
                    "runtime", "threads", "batch", "status", "reason", "p50_us", "p90_us", "p99_us",
                    "mean_us", "per_sample_us", "reps", "ratio_vs_dense", "bytes", "gzip_bytes",
                    "accuracy", "peak_rss_mb"]
N_TEST = 200


# ------------------------------------------------------------------ statistics

def test_summarize_percentiles_and_mean_in_microseconds():
    s = latency.summarize(np.arange(1, 101) * 1000)  # 1..100 us
    assert s.reps == 100
    assert s.p50_us == pytest.approx(50.5)
    assert s.p90_us == pytest.approx(90.1)
    assert s.p99_us == pytest.approx(99.01)
    assert s.mean_us == pytest.approx(50.5)
    assert s.per_sample_us(64) == pytest.approx(50.5 / 64)


def test_summarize_is_robust_to_one_outlier_in_the_median_not_the_mean():
    t = np.full(99, 10_000.0)
    s = latency.summarize(np.append(t, 10_000_000.0))
    assert s.p50_us == pytest.approx(10.0)
    assert s.mean_us > 100.0


@pytest.mark.parametrize("bad", [[], [1.0, -5.0], [np.nan, 1.0]])
def test_summarize_rejects_empty_or_invalid(bad):
    with pytest.raises(ValueError):
        latency.summarize(np.array(bad, dtype=float))


def test_is_stable():
    assert latency.is_stable(np.full(20, 100.0), 0.03)
    assert not latency.is_stable(np.r_[np.full(10, 100.0), np.full(10, 200.0)], 0.03)
    assert not latency.is_stable(np.full(3, 100.0), 0.03)  # too few to judge


def test_stopping_rule():
    cfg = latency.LatencyConfig(min_reps=10, min_seconds=0.1, max_seconds=1.0, max_reps=50)
    steady = [100.0] * 10
    assert not latency.enough(steady[:9], 5.0, cfg)  # min_reps is a floor, even past max_seconds
    assert not latency.enough(steady, 0.05, cfg)  # not enough time yet
    assert latency.enough(steady, 0.2, cfg)  # enough and stable
    drifting = [100.0] * 5 + [300.0] * 5
    assert not latency.enough(drifting, 0.2, cfg)
    assert latency.enough(drifting, 1.0, cfg)  # time cap
    assert latency.enough([100.0, 900.0] * 25, 0.2, cfg)  # rep cap


def test_measure_with_a_fake_clock_counts_warmup_and_reps():
    now = [0]

    def clock():
        now[0] += 500  # every clock read advances 0.5 us: each timed call spans one step
        return now[0]

    calls = []
    cfg = latency.LatencyConfig(warmup_reps=4, warmup_seconds=0.0, min_reps=10, min_seconds=0.0,
                                max_seconds=1.0)
    s = latency.measure(lambda: calls.append(1), cfg, clock=clock)
    assert s.reps == 10
    assert len(calls) == 4 + 10
    assert s.p50_us == pytest.approx(0.5)


def _row(sparsity, p50, runtime="numpy", status="ok", threads=1, batch=1, method="weight"):
    return {"source": "host", "framework": "torch", "method": method, "sparsity": sparsity,
            "format": "npz", "variant": "fp32", "runtime": runtime, "threads": threads,
            "batch": batch, "status": status, "p50_us": p50}


def test_ratio_vs_dense_uses_k00_of_the_same_runtime_threads_and_batch():
    rows = [_row(0.0, 100.0), _row(90.0, 25.0), _row(90.0, 50.0, runtime="scipy-csr"),
            _row(0.0, 200.0, batch=64), _row(90.0, 400.0, batch=64),
            _row(95.0, None, status="failed"), _row(90.0, 10.0, method="unit")]
    r = latency.ratio_vs_dense(rows)
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(4.0)  # faster than dense -> > 1
    assert r[2] is None  # no scipy-csr k00 in this run
    assert r[3] == pytest.approx(1.0)
    assert r[4] == pytest.approx(0.5)  # slower than dense -> < 1
    assert r[5] is None  # failed row
    assert r[6] is None  # unit has no k00 here


def test_ratio_vs_dense_ignores_a_failed_dense_reference():
    assert latency.ratio_vs_dense([_row(0.0, None, status="failed"), _row(90.0, 5.0)]) == [None, None]


# ------------------------------------------------------------------ size

def test_sizes_are_file_bytes_and_gzip_bytes_at_the_shared_level(tmp_path):
    data = bytes(range(256)) * 64
    path = tmp_path / "a.bin"
    path.write_bytes(data)
    n, gz = size.file_sizes(path)
    assert n == len(data)
    assert gz == len(gzip.compress(data, compresslevel=size.GZIP_LEVEL, mtime=0))
    assert gz < n
    assert gzip.decompress(gzip.compress(data, size.GZIP_LEVEL, mtime=0)) == data


def test_manifest_gzip_is_the_bench_gzip(tmp_path):
    """export.manifest.file_entry and bench.size agree, so the bench can take the manifest's number."""
    from export.manifest import file_entry
    path = _tiny_model_file(tmp_path)
    entry = file_entry(tmp_path, path, name="npz", format="npz", variant="fp32", runtime="numpy", meta={})
    assert entry["gzip_level"] == size.GZIP_LEVEL
    assert entry["gzip_bytes"] == size.file_sizes(path)[1]


def test_identity_is_cached_by_size_and_mtime_and_takes_gzip_from_the_manifest(tmp_path, monkeypatch):
    path = tmp_path / "torch/weight/k00/model.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a" * 1000)
    (art,) = artifacts.discover(tmp_path)
    files = {}
    first = size.identify(art, files)
    assert first.bytes == 1000 and first.sha256 == hashlib.sha256(b"a" * 1000).hexdigest()
    monkeypatch.setattr(size, "gzip_bytes", lambda data: pytest.fail("cache not used"))
    assert size.identify(art, files) == first
    path.write_bytes(b"b" * 2000)  # changed file: hashed again; its gzip size from a matching manifest entry
    entry = {"sha256": hashlib.sha256(b"b" * 2000).hexdigest(), "gzip_bytes": 7, "gzip_level": size.GZIP_LEVEL}
    again = size.identify(replace(art, manifest=entry), files)
    assert (again.bytes, again.gzip_bytes, again.sha256) == (2000, 7, entry["sha256"])


def test_a_model_of_two_files_is_one_artifact_with_both_sizes(tmp_path, monkeypatch):
    """NCNN-like: the row's companions join the artifact (hash and sizes of both), not the list."""
    import types
    from export import formats
    kdir = tmp_path / "torch/weight/k00"
    kdir.mkdir(parents=True)
    (kdir / "model.x.param").write_text("7767517\n")
    (kdir / "model.x.bin").write_bytes(b"\0" * 4000)
    row = types.SimpleNamespace(format="onnx", variant="two", companions=lambda p: [p.with_suffix(".bin")])
    monkeypatch.setattr(formats, "by_file", lambda name: row if name == "model.x.param" else None)
    (art,) = artifacts.discover(tmp_path)
    assert art.rel.endswith("model.x.param") and [p.name for p in art.files] == ["model.x.param", "model.x.bin"]
    ident = size.identify(art, {})
    assert ident.bytes == 4008 and ident.gzip_bytes == sum(size.file_sizes(p)[1] for p in art.files)
    (kdir / "model.x.bin").write_bytes(b"\1" * 4000)
    assert size.identify(art, {}).sha256 != ident.sha256  # either file changing changes the artifact


# ------------------------------------------------------------------ schema, discovery, plan

def test_columns_follow_the_contract():
    assert list(results.COLUMNS) == CONTRACT_COLUMNS


def test_csv_header_and_column_order(tmp_path):
    row = dict.fromkeys(results.COLUMNS)
    row.update(source="host", runtime="numpy", status="ok", p50_us=1.5, reason="a, b")
    doc = {"machine": {"cpu": "x"}, "config": {}, "rows": [row]}
    csv_path, json_path = results.write_results(doc, tmp_path)
    with open(csv_path, newline="") as f:
        read = list(csv.reader(f))
    assert read[0] == CONTRACT_COLUMNS
    assert dict(zip(read[0], read[1]))["reason"] == "a, b"  # quoted, still one field
    assert dict(zip(read[0], read[1]))["p90_us"] == ""  # None -> empty
    loaded = json.loads(json_path.read_text())
    assert set(loaded) >= {"machine", "config", "rows"}
    assert list(loaded["rows"][0]) == sorted(CONTRACT_COLUMNS)  # json sorts keys; same set


def test_discover_by_layout_parses_framework_method_level_and_variant(tmp_path):
    for rel in ("torch/weight/k90/model.npz", "torch/weight/k90/model.int8-dynamic.tflite",
                "tf/unit/k00/model.onnx", "tf/unit/k00/notes.txt", "tf/unit/kxx/model.onnx"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = {a.rel: a for a in artifacts.discover(tmp_path)}
    assert set(found) == {"torch/weight/k90/model.npz", "torch/weight/k90/model.int8-dynamic.tflite",
                          "tf/unit/k00/model.onnx"}
    a = found["torch/weight/k90/model.int8-dynamic.tflite"]
    assert (a.framework, a.method, a.sparsity, a.format, a.variant) == ("torch", "weight", 90.0, "tflite",
                                                                        "int8-dynamic")
    assert found["torch/weight/k90/model.npz"].variant == "fp32"


def test_discover_prefers_the_manifest(tmp_path):
    entry = {"path": "torch/unit/k50/model.fp16.tflite", "format": "tflite", "variant": "fp16",
             "framework": "torch", "method": "unit", "sparsity": 50, "runtime": "litert-xnnpack",
             "companions": [{"path": "torch/unit/k50/extra.bin", "sha256": "0", "bytes": 1}]}
    (tmp_path / "manifest.json").write_text(json.dumps({"config": {"data_sha256": "d"}, "files": [entry]}))
    (arts,) = artifacts.discover(tmp_path)
    assert (arts.rel, arts.variant, arts.sparsity) == (entry["path"], "fp16", 50.0)
    assert [p.name for p in arts.files] == ["model.fp16.tflite", "extra.bin"]
    assert arts.manifest["data_sha256"] == "d"
    (tmp_path / "manifest.json").write_text('{"files": [{"path": 1}]}')
    with pytest.raises(Exception, match="manifest.json: unreadable manifest"):
        artifacts.discover(tmp_path)


def _art(method, k, fmt="npz"):
    return artifacts.Artifact(path=Path(f"/x/{method}{k}.{fmt}"), rel=f"torch/{method}/k{k:02d}/model.{fmt}",
                              format=fmt, variant="fp32", framework="torch", method=method, sparsity=float(k))


def _store(path=None, **settings):
    return cache.Store(path, {"versions": {"x": "1"}}, latency=settings.get("latency", {"min_reps": 3}),
                       data_sha256=settings.get("data", "d"))


def _ids(arts):
    return {a.rel: size.Identity(f"sha-{a.rel}", 10, 5) for a in arts}


def test_plan_one_child_per_runtime_and_tf_threads_in_separate_children():
    arts = [_art("weight", 0), _art("weight", 90), _art("unit", 90), _art("unit", 90, "onnx")]
    cfg = sweep.SweepConfig(threads=(1, 2), runtimes=("numpy", "scipy-csr", "keras", "onnxruntime"))
    jobs = plan.plan(arts, _ids(arts), cfg, _store(), ["x.npy", "y.npy"])
    by = {}
    for j in jobs:
        by.setdefault(j["runtime"], []).append(j)
    (numpy,) = by["numpy"]
    assert numpy["threads"] == [1, 2] and len(numpy["items"]) == 3
    assert all(it["memory"] and it["accuracy"] and len(it["latency"]) == 4 for it in numpy["items"])
    assert [it["key"] for it in by["scipy-csr"][0]["items"]] == ["torch/weight/k00/model.npz",
                                                                 "torch/weight/k90/model.npz"]
    assert len(by["onnxruntime"]) == 1 and len(by["onnxruntime"][0]["items"]) == 1
    first, second = by["keras"]  # threads fixed at start-up: a child per thread count
    assert first["threads"] == [1] and second["threads"] == [2]
    assert all(it["memory"] and it["accuracy"] and it["latency"] == [[1, 1], [1, 64]] for it in first["items"])
    assert not any(it["memory"] or it["accuracy"] for it in second["items"])
    assert jobs[0]["test_set"] == ["x.npy", "y.npy"]


def test_plan_asks_only_for_what_the_cache_lacks_and_chunks_children():
    arts = [_art("weight", k) for k in (0, 50, 90)]
    cfg = sweep.SweepConfig(threads=(1,), batches=(1, 64), runtimes=("numpy",), files_per_child=2)
    store, ids = _store(), _ids(arts)
    sha = ids[arts[0].rel].sha256
    for b in (1, 64):
        store.put(store.latency_key(sha, "numpy", 1, b), {"p50_us": 1.0}, "/x")
    store.put(store.memory_key(sha, "numpy", 1), {"peak_mb": 1.0}, "/x")
    store.put(store.accuracy_key(sha, "numpy"), {"accuracy": 0.5}, "/x")
    jobs = plan.plan(arts, ids, cfg, store, [])
    assert [[it["key"] for it in j["items"]] for j in jobs] == [[arts[1].rel, arts[2].rel]]
    cfg = replace(cfg, files_per_child=1)
    assert len(plan.plan(arts, ids, cfg, store, [])) == 2
    other = _store(latency={"min_reps": 99})  # another latency setting: latency measured again, not the rest
    for key in list(store.records):
        other.put(key, store.records[key], "/x")
    (item,) = [it for j in plan.plan(arts[:1], ids, cfg, other, []) for it in j["items"]]
    assert item["latency"] == [[1, 1], [1, 64]] and not item["memory"] and not item["accuracy"]


def test_accuracy_comes_from_the_manifest_only_for_its_runtime_file_and_data():
    art = replace(_art("weight", 0, "onnx"), manifest={"runtime": "onnxruntime", "accuracy": 0.875,
                                                      "sha256": "sha-torch/weight/k00/model.onnx",
                                                      "data_sha256": "D"})
    store, ids = _store(), _ids([art])
    assert plan.reuse_manifest_accuracy([art], ids, store, "other data") == 0
    assert plan.reuse_manifest_accuracy([art], ids, store, "D") == 1
    assert store.get(store.accuracy_key(ids[art.rel].sha256, "onnxruntime"))["accuracy"] == 0.875
    changed = {art.rel: size.Identity("another file", 10, 5)}
    assert plan.reuse_manifest_accuracy([art], changed, _store(), "D") == 0


def test_cache_keys_change_with_context_and_survive_a_reload(tmp_path):
    path = tmp_path / cache.CACHE_FILE
    store = _store(path)
    key = store.latency_key("s", "numpy", 1, 1)
    store.put(key, {"p50_us": 3.0}, tmp_path)
    store.save({})
    assert _store(path).get(key)["p50_us"] == 3.0
    moved = cache.Store(path, {"versions": {"x": "2"}}, latency={"min_reps": 3}, data_sha256="d")
    assert moved.get(moved.latency_key("s", "numpy", 1, 1)) is None  # a library upgrade: measured again
    store.save({str(tmp_path.resolve()): "another hash"})  # the file changed: its records go
    assert _store(path).get(key) is None


def test_select_quick_keeps_levels_0_and_90():
    arts = [_art("weight", k) for k in (0, 50, 90, 99)]
    got = artifacts.select(arts, quick=True)
    assert [a.sparsity for a in got] == [0.0, 90.0]
    got = artifacts.select(arts, levels=(99.0,), methods=("weight",))
    assert [a.sparsity for a in got] == [99.0]


# ------------------------------------------------------------------ failures become rows

def _tiny_model_file(tmp_path, name="m.npz", seed=1):
    return save(random_model(SMALL_WIDTHS, seed=seed), tmp_path / name)


def _in_process(tmp_path, arts, cfg, runtimes):
    """Plan, run the child in this process, collect: (records, Results)."""
    ids = {a.rel: size.identify(a, {}) for a in arts}
    store = _store()
    test_set = child.write_test_set(str(_data_dir(tmp_path)), tmp_path)
    records, res = [], results.Results(store, ids, cfg.threads[0])
    res.paths = {a.rel: a.path for a in arts}
    for job in plan.plan(arts, ids, cfg, store, test_set):
        child.run_job(job, records.append, runtimes=runtimes)
        for r in records:
            res.add(job, r)
    return records, res


def test_a_failing_runtime_becomes_failed_rows_not_a_crash(tmp_path):
    """In-process child run with a runtime whose loader raises (in the fork, as in a real child)."""
    path = _tiny_model_file(tmp_path)

    def broken(path, threads):
        raise RuntimeError("kernel not supported\nsecond line")

    runtimes = {"numpy": replace(RUNTIMES["numpy"], load=broken)}
    art = replace(_art("weight", 0), path=path)
    cfg = sweep.SweepConfig(threads=(1,), batches=(1, 4), runtimes=("numpy",))
    records, res = _in_process(tmp_path, [art], cfg, runtimes)
    assert [r["kind"] for r in records if r["kind"] != "phase"] == ["start", "error", "error", "error", "error",
                                                                    "done"]
    assert {r["phase"] for r in records if r["kind"] == "phase"} == {"memory", "load", "accuracy", "file"}
    assert {r["stage"] for r in records if r["kind"] == "error"} == {"memory", "load", "accuracy"}
    rows = results.build_rows([art], cfg, res)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert rows[0]["reason"] == "load: RuntimeError: kernel not supported"  # one line
    assert rows[0]["p50_us"] is None and rows[0]["bytes"] == path.stat().st_size


def test_a_file_that_crashes_its_runtime_costs_only_its_own_rows(tmp_path):
    """The fork dies (as a segfaulting kernel would); the next file is measured all the same."""
    import os
    import signal
    good, bad = _tiny_model_file(tmp_path, "good.npz", seed=2), _tiny_model_file(tmp_path, "bad.npz")
    load = RUNTIMES["numpy"].load

    def crashy(path, threads):
        if path.name == "bad.npz":
            os.kill(os.getpid(), signal.SIGKILL)
        return load(path, threads)

    arts = [replace(_art("weight", 0), path=bad), replace(_art("weight", 90), path=good)]
    cfg = sweep.SweepConfig(threads=(1,), batches=(1,), runtimes=("numpy",), latency=latency.QUICK)
    _, res = _in_process(tmp_path, arts, cfg, {"numpy": replace(RUNTIMES["numpy"], load=crashy)})
    first, second = results.build_rows(arts, cfg, res)
    assert first["status"] == "failed" and first["reason"] == "process: killed by signal 9 (SIGKILL)"
    assert second["status"] == "ok" and second["peak_rss_mb"] > 10 and 0 <= second["accuracy"] <= 1


def test_a_child_that_dies_is_restarted_on_the_files_after_the_one_it_died_on(monkeypatch):
    job = {"runtime": "numpy", "threads": [1], "items": [
        {"key": k, "memory": True, "accuracy": False, "latency": [[1, 1]]} for k in ("a", "b", "c")]}
    calls = []

    def fake(sub, timeout_s, on_record):
        calls.append([it["key"] for it in sub["items"]])
        on_record({"kind": "start", "key": sub["items"][0]["key"]})
        if len(calls) == 1:
            on_record({"kind": "memory", "key": "a"})
            return "a", "child exited with code -9"
        for it in sub["items"]:
            on_record({"kind": "done", "key": it["key"]})
        return None, None

    monkeypatch.setattr(children, "run_child", fake)
    seen = []
    problems = children.run_job(job, 10.0, lambda r, finished: seen.append((r["kind"], r["key"], finished)))
    assert problems == [("a", "child exited with code -9")]
    assert calls == [["a", "b", "c"], ["b", "c"]]
    assert ("done", "c", True) in seen


def test_a_child_that_dies_gives_failed_rows_with_its_exit_reason():
    art = _art("weight", 0)
    cfg = sweep.SweepConfig(threads=(1, 2), batches=(1,), runtimes=("numpy",))
    ids = _ids([art])
    res = results.Results(_store(), ids, 1)
    res.paths = {art.rel: art.path}
    job = {"runtime": "numpy", "threads": [1, 2]}
    res.add(job, {"kind": "latency", "key": art.rel, "threads": 1, "batch": 1, "p50_us": 3.0,
                  "p90_us": 4.0, "p99_us": 5.0, "mean_us": 3.5, "reps": 9})
    res.problem(job, art.rel, "child exited with code -9")
    first, second = results.build_rows([art], cfg, res)
    assert first["status"] == "ok" and first["p50_us"] == 3.0  # measured before the crash: kept
    assert second["status"] == "failed" and second["reason"] == "child exited with code -9"


# ------------------------------------------------------------------ a tiny real sweep

def _data_dir(tmp_path) -> Path:
    """A 200-image Fashion-MNIST-shaped test set (real images when installed)."""
    d = tmp_path / "data"
    x = real_test_slice(N_TEST)
    images = np.round(x * 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = np.random.default_rng(0).integers(0, 10, N_TEST)
    write_idx_gz(d / FILES["test"][0], images)
    write_idx_gz(d / FILES["test"][1], labels)
    return d


def _write_onnx(model, path: Path) -> Path:
    """A MatMul/Add/Relu graph with a dynamic batch, built without the export stage."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, x = [], [], "x"
    for i, layer in enumerate(model.layers):
        inits += [numpy_helper.from_array(layer.dense_weight(), f"W{i}"),
                  numpy_helper.from_array(layer.bias, f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        x = f"a{i}"
        if layer.activation == "relu":
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", model.input_dim])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", model.output_dim])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """torch/weight/k00 (dense) and k90 (CSR) npz + onnx, and a corrupt onnx at k90."""
    root = tmp_path_factory.mktemp("export")
    base = random_model(SMALL_WIDTHS, seed=3)
    models = {0: base, 90: sparse.to_csr(methods.prune(base, "weight", 90))}
    for k, m in models.items():
        kdir = root / "torch" / "weight" / f"k{k:02d}"
        save(m, kdir / "model.npz")
        _write_onnx(m, kdir / "model.onnx")
    unit = shrink.shrink(methods.prune(base, "unit", 90))
    save(unit, root / "torch" / "unit" / "k90" / "model.npz")
    (root / "torch" / "weight" / "k90" / "model.broken.onnx").write_bytes(b"not an onnx file")
    return root, models, _data_dir(tmp_path_factory.mktemp("d"))


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _tiny_run(root, out, data, *extra):
    return main(["run", "--root", str(root), "--out", str(out), "--data-dir", str(data), "--quick",
                 "--runtime", "numpy,scipy-csr,onnxruntime", "--threads", "1", "--batch", "1,4",
                 "--no-progress", *extra])


def test_tiny_sweep_end_to_end(tiny_export, tmp_path):
    root, models, data = tiny_export
    out = tmp_path / "bench"
    assert _tiny_run(root, out, data) == 0
    rows = _read_csv(out / "results.csv")
    assert list(rows[0]) == CONTRACT_COLUMNS
    # 3 npz x numpy + 2 weight npz x scipy-csr + 3 onnx x onnxruntime, x 1 thread x 2 batches
    assert len(rows) == (3 + 2 + 3) * 2
    failed = [r for r in rows if r["status"] != "ok"]
    assert {r["artifact"] for r in failed} == {"torch/weight/k90/model.broken.onnx"}
    assert all(r["reason"] and "\n" not in r["reason"] for r in failed)

    x, y = child.load_test_set(str(data))
    for r in rows:
        if r["status"] != "ok":
            continue
        k = int(float(r["sparsity"]))
        if r["method"] == "weight":  # every runtime scores what the numpy reference scores
            expected = float(np.mean(models[k].predict(x) == y))
            assert float(r["accuracy"]) == pytest.approx(expected, abs=1.0 / N_TEST)
        assert float(r["p50_us"]) > 0 and int(r["reps"]) >= latency.QUICK.min_reps
        assert float(r["per_sample_us"]) == pytest.approx(float(r["p50_us"]) / int(r["batch"]), rel=1e-3)
        assert float(r["peak_rss_mb"]) > 10
        assert int(r["gzip_bytes"]) > 0 and int(r["bytes"]) > 0
        if k == 0:
            assert float(r["ratio_vs_dense"]) == pytest.approx(1.0)
        elif r["method"] == "weight":
            assert float(r["ratio_vs_dense"]) > 0
        else:
            assert r["ratio_vs_dense"] == ""  # no unit k00 in this tree
    doc = json.loads((out / "results.json").read_text())
    assert doc["machine"]["cores"] >= 1 and "numpy" in doc["machine"]["versions"]
    assert len(doc["rows"]) == len(rows)
    assert set(doc["baseline_rss_mb"]) == {"numpy", "scipy-csr", "onnxruntime"}
    assert {"file", "memory", "latency", "accuracy"} <= set(doc["phase_seconds"]["numpy"])


def test_a_second_sweep_measures_only_what_changed(tiny_export, tmp_path):
    import shutil
    root = shutil.copytree(tiny_export[0], tmp_path / "export")
    data, out = tiny_export[2], tmp_path / "bench"
    assert _tiny_run(root, out, data) == 0
    first = _read_csv(out / "results.csv")
    assert _tiny_run(root, out, data) == 0  # nothing changed: no child at all (the broken file's
    doc = json.loads((out / "results.json").read_text())  # failure is kept too), the same rows
    assert doc["jobs"] == 0 and _read_csv(out / "results.csv") == first
    changed = "torch/weight/k00/model.onnx"
    _write_onnx(tiny_export[1][0], root / changed)  # same content, new mtime: re-hashed, still reused
    assert _tiny_run(root, out, data) == 0 and json.loads((out / "results.json").read_text())["jobs"] == 0
    _write_onnx(sparse.to_csr(methods.prune(tiny_export[1][0], "weight", 50)), root / changed)
    assert _tiny_run(root, out, data) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["jobs"] == 1 and doc["child_seconds"]["onnxruntime"]["files"] == 1
    again = {(r["artifact"], r["runtime"], r["batch"]): r for r in _read_csv(out / "results.csv")}
    assert all(again[(r["artifact"], r["runtime"], r["batch"])]["p50_us"] == r["p50_us"] for r in first
               if r["artifact"] != changed)
    assert _tiny_run(root, out, data, "--remeasure") == 0
    assert json.loads((out / "results.json").read_text())["jobs"] == 3


def test_strict_reraises_the_first_failure(tiny_export, tmp_path, capsys):
    root, _, data = tiny_export
    rc = main(["run", "--root", str(root), "--out", str(tmp_path), "--data-dir", str(data), "--quick",
               "--runtime", "onnxruntime", "--levels", "90", "--threads", "1", "--batch", "1",
               "--strict", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "model.broken.onnx" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["--threads", "one"], "--threads"),
    (["--batch", "0"], "--batch"),
    (["--runtime", "tensorrt"], "--runtime"),
    (["--levels", "100"], "--levels"),
    (["--root", "/nonexistent/export"], "/nonexistent/export"),
])
def test_cli_user_errors_are_one_line_exit_2(args, message, tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_cli_dispatch(capsys):
    assert main(["--help"]) == 0 and "report" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2 and "invalid choice" in capsys.readouterr().err
    assert main(["run", "--help"]) == 0 and "--runtimes" in capsys.readouterr().out


def test_synthetic_tree_is_discovered_with_physical_forms(tmp_path):
    from bench.experiments import synthetic
    synthetic.write_tree(tmp_path, levels=(0, 90), formats=(), widths=SMALL_WIDTHS)
    arts = {a.rel: a for a in artifacts.discover(tmp_path)}
    assert set(arts) == {f"random/{m}/k{k}/model.npz" for m in ("weight", "unit") for k in ("00", "90")}
    from pipeline.model_io import load
    assert load(tmp_path / "random/weight/k90/model.npz").layers[0].is_sparse
    assert load(tmp_path / "random/unit/k90/model.npz").widths[1] < SMALL_WIDTHS[1]
    assert not load(tmp_path / "random/weight/k00/model.npz").layers[0].is_sparse


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("batch", [1, 7])
def test_runtime_outputs_match_the_numpy_reference(tmp_path, method, batch):
    """numpy, scipy-csr (both orientations) and torch sessions against Model.forward."""
    base = random_model(SMALL_WIDTHS, seed=5)
    m = sparse.to_csr(methods.prune(base, "weight", 80)) if method == "weight" else shrink.shrink(
        methods.prune(base, "unit", 50))
    path = save(m, tmp_path / "model.npz")
    x = real_test_slice(batch)
    want = m.forward(x)
    for name in ("numpy", "scipy-csr", "torch"):
        if not runs(RUNTIMES[name], fmt="npz", method=method):
            continue
        got = RUNTIMES[name].load(path, 1)(x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)  # float32 reordering


def test_peak_rss_is_per_process_not_inherited_from_the_parent():
    """A child of a parent holding 200 MB must not report >= 200 MB (ru_maxrss would)."""
    import subprocess
    import sys
    from bench import memory
    assert memory.vm_hwm_kib("Name:\tx\nVmHWM:\t   13564 kB\nVmRSS:\t 1 kB\n") == 13564
    assert memory.vm_hwm_kib("Name:\tx\n") is None
    hold = np.ones(200 * 2**20 // 8)  # noqa: F841 - keeps 200 MiB resident in this process
    hold[::512] = 2.0
    code = "from bench.memory import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert 1.0 < float(out) < 150.0


def test_append_keeps_rows_of_artifacts_not_measured_again(tmp_path):
    from bench.results import merge_earlier, write_results
    first = {"config": {"part": 1}, "rows": [{"artifact": "a/k00/model.onnx", "p50_us": 1.0},
                                             {"artifact": "b/k00/model.onnx", "p50_us": 2.0}]}
    write_results(first, tmp_path)
    second = {"config": {"part": 2}, "rows": [{"artifact": "b/k00/model.onnx", "p50_us": 3.0}]}
    merged = merge_earlier(second, tmp_path)
    assert [(r["artifact"], r["p50_us"]) for r in merged["rows"]] == [
        ("a/k00/model.onnx", 1.0), ("b/k00/model.onnx", 3.0)]
    assert merged["config"] == {"part": 2} and merged["earlier_runs"] == [{"part": 1}]
    assert merge_earlier(second, tmp_path / "none") is second


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def test_a_fork_that_touches_its_parents_pages_counts_them_like_a_fresh_process():
    """Fork leaves out the shared-library pages only the parent touched; touch() puts them back."""
    from bench import fork, memory
    pages = memory.resident_file_pages()
    parent = _status_mb("RssFile")
    assert pages and len(pages) * 4096 / 2**20 == pytest.approx(parent, rel=0.2)
    got = []

    def probe(send, touch):
        if touch:
            memory.touch(pages)
        send({"file": _status_mb("RssFile")})

    assert fork.run_forked(lambda send: probe(send, False), 60, got.append) is None
    assert fork.run_forked(lambda send: probe(send, True), 60, got.append) is None
    untouched, touched = got[0]["file"], got[1]["file"]
    assert untouched < 0.9 * parent and touched >= 0.95 * parent


def test_a_fork_that_hangs_or_raises_is_reported():
    import time
    from bench import fork
    assert fork.run_forked(lambda send: time.sleep(30), 0.5, print) == "timed out after 0 s"
    got = []
    assert fork.run_forked(lambda send: (send({"a": 1}), 1 / 0), 10, got.append) == "ZeroDivisionError: division by zero"
    assert got == [{"a": 1}]
