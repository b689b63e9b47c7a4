"""The issue-5 report section: same-precision speedups, tolerance, verified files only."""
from types import SimpleNamespace

from report import pay as rp


def row(artifact, method, k, variant, p50, acc, runtime="litert-builtin", fw="torch", fmt="tflite", size=1000):
    return {"artifact": artifact, "framework": fw, "method": method, "sparsity": float(k), "format": fmt,
            "variant": variant, "runtime": runtime, "batch": 1, "threads": 1, "status": "ok", "source": "host",
            "p50_us": p50, "accuracy": acc, "bytes": size}


ROWS = [
    row("d.tflite", "weight", 0, "fp32", 100.0, 90.0, size=10_000),
    row("d.tflite", "weight", 0, "fp32", 150.0, 90.0, runtime="litert-xnnpack", size=10_000),
    row("d8.tflite", "weight", 0, "int8-dynamic", 20.0, 89.9, runtime="litert-xnnpack"),
    row("d8.tflite", "weight", 0, "int8-dynamic", 60.0, 89.9),  # slower without XNNPACK: not the reference
    row("b90.tflite", "block-gp", 90, "block-sparse", 30.0, 89.5),  # 3.33x vs fp32 dense: met
    row("b90i8.tflite", "block16-gp", 90, "block-sparse-int8-dynamic", 10.0, 89.4, size=2000),  # 2x vs int8
    row("w90.tflite", "weight", 90, "block-sparse", 5.0, 60.0),  # fast but 30 points down: ignored
    row("u80.tflite", "unit-gp", 80, "int8-dynamic", 4.0, 89.5, size=500),  # unit: not a weight/block method
    row("b95.tflite", "block-gp", 95, "block-sparse", 25.0, 88.0),  # 2 points down: no file at 95
]


def test_speed_targets_use_same_precision_dense_and_tolerance():
    body = rp.speed_target_rows(ROWS, {"torch": 90.0}, 1.0)
    fastest, largest, k95 = body
    assert fastest[2:4] == ["fastest file", "`b90i8.tflite`"] and fastest[7] == "2.00×"  # not 6x vs builtin
    assert fastest[-1] == "**missed**"
    assert largest[2:4] == ["largest speedup", "`b90.tflite`"] and largest[7] == "3.33×" and largest[-1] == "met"
    assert largest[6] == "100.0 µs (fp32, litert-builtin)"  # the faster dense setting is the reference
    assert k95[3].startswith("no verified") and k95[-1] == "**missed**"


def test_best_artifact_against_dense_fp32_tflite():
    (best,) = rp.best_artifact_rows(ROWS, {"torch": 90.0}, 1.0)
    assert best[1].startswith("`u80.tflite`") and best[6] == "25.00×" and best[7] == "1/20" and best[-1] == "met"
    (slow,) = rp.best_artifact_rows([r for r in ROWS if r["artifact"] != "u80.tflite"], {"torch": 90.0}, 1.0)
    assert slow[1].startswith("`b90i8.tflite`") and slow[-1] == "**missed**"  # 10x faster but only 1/5 the size


def test_only_verified_files_and_delegates_are_counted():
    manifest = {"files": [
        {"path": "b90.tflite", "format": "tflite", "variant": "block-sparse", "delegate": "xnnpack",
         "verify": {"status": "passed"}, "layer_formats": ["block", "block", "dense"]},
        {"path": "b90i8.tflite", "format": "tflite", "variant": "block-sparse-int8-dynamic", "delegate": None,
         "verify": {"status": "failed"}}]}
    assert rp.passed_paths(manifest) == {"b90.tflite"}
    assert rp.delegate_rows(manifest) == [["block-sparse", "xnnpack", 1],
                                          ["block-sparse-int8-dynamic", "not shipped (failed)", 1]]
    auto = rp.auto_rows(SimpleNamespace(manifest=manifest, results=ROWS))
    assert auto == [["`b90.tflite`", "block · block · dense", "passed", "xnnpack", "30.0 µs (litert-builtin)", "3.33×"]]


def test_accuracy_targets_for_fine_tuned_methods():
    from report.analysis import curves
    acc = [{"framework": "torch", "method": m, "sparsity": k, "accuracy": a}
           for m, pts in {"weight-gp": {0: 90.0, 90: 89.6, 95: 89.1}, "weight-ft": {0: 90.0, 95: 88.5},
                          "unit-gp": {0: 90.0, 80: 89.2}, "weight": {0: 90.0, 95: 60.0}}.items()
           for k, a in pts.items()]
    body = {r[1]: r for r in rp.accuracy_target_rows(curves(acc), 1.0)}
    assert set(body) == {"weight-gp", "weight-ft", "unit-gp"}  # one-shot methods have no target here
    assert body["weight-gp"][2:] == ["95%", "≥ 95%", "89.10% (-0.90)", "met"]
    assert body["weight-ft"][-1] == "**missed**" and body["unit-gp"][-1] == "met"
