"""Analysis functions on hand-made rows, and REPORT.md built from a synthetic artifacts/ tree."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from report import analysis, build as report, questions as report_questions, seeds
from report.__main__ import main as report_main
from report.inputs import as_percent, load_inputs, read_results
from pipeline.data import write_idx_gz
from pipeline.errors import PrunedgeError
from pipeline.model import random_model
from pipeline.model_io import save
from report_fixtures import ACCURACY, make_root, result_rows, write_results_csv

SECTIONS = ("## What to ship", "## How does accuracy fall", "## How far can each model be pruned",
            "## MLP or CNN: which tolerates more pruning?", "## Every method side by side",
            "## Gradual pruning vs TensorFlow Model Optimization", "## Weight or unit pruning",
            "## Why can so much of the MLP be deleted?", "## How the models trained", "## Latency, size",
            "## Is a unit-pruned model faster", "## Does weight pruning pay at run time?",
            "## Does pruning make the CNN faster?", "## Full int8 or float32", "## Where sparsity gives no speedup")
FORBIDDEN = ("nan", "None", "inf", "TODO", "TBD", "XXX", "{", "}")


def placeholders(text: str) -> list[str]:
    """FORBIDDEN words standing alone (so "inference" is fine, "inf" is not) and any brace."""
    import re
    return [w for w in FORBIDDEN
            if (re.search(rf"(?<![A-Za-z]){w}(?![A-Za-z])", text) if w.isalpha() else w in text)]


def acc_rows(fw="torch", method="weight", by_level=None, seeds_=(0,)):
    return [{"framework": fw, "method": method, "seed": s, "sparsity": float(k), "accuracy": a}
            for s in seeds_ for k, a in (by_level or {}).items()]


# ---------------------------------------------------------------- accuracy curves (Q1, Q2)

def test_curves_average_seeds_and_share_the_dense_point():
    rows = acc_rows(by_level={0: 90.0, 90: 88.0}, seeds_=(0,))
    rows += acc_rows(by_level={0: 92.0, 90: 86.0}, seeds_=(1,))
    rows += [{"framework": "torch", "method": "unit", "seed": 0, "sparsity": 50.0, "accuracy": 80.0}]
    c = analysis.curves(rows)
    weight = {p.sparsity: p for p in c[("torch", "weight")]}
    assert weight[0.0].mean == pytest.approx(91.0) and weight[0.0].n == 2
    assert (weight[90.0].lo, weight[90.0].hi, weight[90.0].std) == pytest.approx((86.0, 88.0, 1.0))
    unit = c[("torch", "unit")]
    assert unit[0].sparsity == 0.0 and unit[0].mean == pytest.approx(91.0), "unit borrows the dense points"


@pytest.mark.parametrize("at95, expected", [(89.0, 95.0), (88.99, 90.0), (90.5, 95.0)])
def test_highest_within_is_inclusive_at_exactly_one_point(at95, expected):
    curve = analysis.curves(acc_rows(by_level={0: 90.0, 50: 90.2, 90: 89.5, 95: at95, 99: 70.0}))
    best = analysis.highest_within(curve[("torch", "weight")], 1.0)
    assert best.sparsity == expected


def test_highest_within_takes_the_highest_level_even_after_a_dip():
    curve = analysis.curves(acc_rows(by_level={0: 90.0, 50: 88.0, 90: 89.5, 99: 60.0}))[("torch", "weight")]
    assert analysis.highest_within(curve, 1.0).sparsity == 90.0
    assert analysis.first_below(curve, 1.0).sparsity == 50.0
    assert analysis.first_below(curve, 5.0).sparsity == 99.0
    a, b, drop = analysis.largest_step(curve)
    assert (a.sparsity, b.sparsity, drop) == (90.0, 99.0, pytest.approx(29.5))


def test_degradation_sentence_when_nothing_stays_within():
    curve = analysis.curves(acc_rows(by_level={0: 90.0, 50: 88.0, 90: 80.0}))[("torch", "weight")]
    text = report_questions.degradation_sentence("torch", "weight", curve, 1.0)
    assert "already more than 1 point below dense at 50% (88.00%)" in text
    assert "first more than 5 points below dense at 90% (80.00%)" in text
    assert "90% → " not in text and "50% → 90% (−8.00 points)" in text


def test_highest_within_without_dense_point_is_none():
    curve = analysis.curves(acc_rows(by_level={50: 90.0}))[("torch", "weight")]
    assert analysis.highest_within(curve) is None


# ---------------------------------------------------------------- weights (Q4)

def test_weight_energy_and_singular_values():
    w = np.array([[3.0, 0.0], [0.0, 1.0]])  # energy 9 + 1
    assert analysis.top_weight_energy(w, 0.25) == pytest.approx(0.9)
    assert analysis.top_weight_energy(w, 1.0) == pytest.approx(1.0)
    s = analysis.singular_values(w)
    np.testing.assert_allclose(s, [3.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(analysis.cumulative_energy(s), [0.9, 1.0], rtol=1e-12)
    assert analysis.rank_for_energy(s, 0.9) == 1 and analysis.rank_for_energy(s, 0.95) == 2
    assert analysis.near_zero_fraction(np.array([0.01, -0.05, 1.0, 0.5]), 0.1) == 0.5


def test_gaussian_reference_matches_a_gaussian_sample():
    z = np.random.default_rng(0).normal(size=200_000)
    assert analysis.top_weight_energy(z, 0.1) == pytest.approx(analysis.gaussian_top_energy(0.1), abs=0.005)
    assert abs(analysis.excess_kurtosis(z)) < 0.05
    assert analysis.excess_kurtosis(np.random.default_rng(0).laplace(size=200_000)) == pytest.approx(3.0, abs=0.2)


# ---------------------------------------------------------------- bench rows

def bench_row(**kw):
    row = {"source": "host", "framework": "torch", "method": "weight", "sparsity": 0.0, "format": "onnx",
           "variant": "fp32", "runtime": "onnxruntime", "threads": 1, "batch": 1, "status": "ok",
           "p50_us": 100.0, "ratio_vs_dense": None, "bytes": 1000, "gzip_bytes": 900, "accuracy": 90.0}
    row.update(kw)
    row.setdefault("artifact", f'{row["framework"]}/{row["method"]}/k{int(row["sparsity"]):02d}/{row["variant"]}.{row["format"]}')
    return row


def test_pareto_front_drops_dominated_and_tied_points():
    pts = [(10, 80), (5, 70), (20, 90), (15, 85), (12, 79), (20, 88), (5, 60), (30, 90)]
    front = analysis.pareto_front(pts)
    assert [pts[i] for i in front] == [(5, 70), (10, 80), (15, 85), (20, 90)]


def test_recommend_picks_smallest_and_fastest_within_tolerance_per_framework():
    rows = [bench_row(sparsity=0.0, p50_us=100, bytes=1000, accuracy=90.0),
            bench_row(sparsity=90.0, p50_us=20, bytes=100, accuracy=89.0),  # exactly 1 point: in
            bench_row(sparsity=95.0, p50_us=5, bytes=50, accuracy=88.9),  # smaller and faster, but out
            bench_row(sparsity=80.0, method="unit", p50_us=10, bytes=300, accuracy=89.5),
            bench_row(framework="tf", sparsity=0.0, p50_us=100, bytes=1000, accuracy=80.0),
            bench_row(framework="tf", sparsity=99.0, p50_us=1, bytes=10, accuracy=79.5),  # in, vs tf's dense
            bench_row(runtime="litert-xnnpack", format="tflite", sparsity=0.0, p50_us=50, accuracy=90.0)]
    picks = analysis.recommend(rows, 1.0)
    assert picks["onnxruntime"]["smallest"]["artifact"] == "tf/weight/k99/fp32.onnx"
    assert picks["onnxruntime"]["fastest"]["artifact"] == "tf/weight/k99/fp32.onnx"
    picks = analysis.recommend([r for r in rows if r["framework"] == "torch"], 1.0)
    assert picks["onnxruntime"]["smallest"]["sparsity"] == 90.0
    assert picks["onnxruntime"]["fastest"]["method"] == "unit"
    assert picks["litert-xnnpack"]["fastest"]["p50_us"] == 50


def test_ratio_falls_back_to_fp32_dense_for_variants_without_k00():
    rows = [bench_row(sparsity=0.0, p50_us=100.0), bench_row(sparsity=90.0, variant="sparse", p50_us=98.0),
            bench_row(sparsity=90.0, p50_us=50.0, ratio_vs_dense=2.0)]
    assert analysis.ratio(rows[1], rows) == pytest.approx(100 / 98)
    assert analysis.ratio(rows[2], rows) == 2.0


def test_csr_crossover_needs_every_higher_level_faster():
    dense = bench_row(runtime="numpy", format="npz", sparsity=0.0, p50_us=100.0)
    csr = [bench_row(runtime="scipy-csr", format="npz", sparsity=k, p50_us=us)
           for k, us in ((50, 90.0), (80, 120.0), (90, 60.0), (99, 10.0))]
    out = analysis.csr_crossover([dense] + csr, batch=1)
    assert out["torch"]["level"] == 90.0 and out["torch"]["dense_us"] == 100.0
    assert max(p[2] for p in out["torch"]["points"]) == pytest.approx(10.0)
    slow = [dict(r, p50_us=200.0) for r in csr]
    assert analysis.csr_crossover([dense] + slow, batch=1)["torch"]["level"] is None
    assert analysis.csr_crossover([dense] + csr, batch=64) == {}


def test_smallest_at_compares_with_the_same_format_dense():
    rows = [bench_row(sparsity=0.0, gzip_bytes=1000), bench_row(sparsity=90.0, gzip_bytes=200),
            bench_row(format="npz", runtime="numpy", sparsity=0.0, gzip_bytes=2000),
            bench_row(format="npz", runtime="numpy", sparsity=90.0, gzip_bytes=100)]
    small, dense = analysis.smallest_at(rows, method="weight", sparsity=90.0)
    assert (small["format"], small["gzip_bytes"], dense["gzip_bytes"]) == ("npz", 100, 2000)


def test_no_speedup_runtimes_flags_flat_runtimes_only():
    rows = [bench_row(sparsity=0.0, p50_us=100.0), bench_row(sparsity=90.0, p50_us=99.0),
            bench_row(sparsity=99.0, p50_us=97.0),
            bench_row(runtime="scipy-csr", format="npz", sparsity=0.0, p50_us=300.0),
            bench_row(runtime="scipy-csr", format="npz", sparsity=99.0, p50_us=30.0)]
    flat = analysis.no_speedup_runtimes(rows)
    assert list(flat) == [("onnxruntime", "onnx", "fp32")]
    assert flat[("onnxruntime", "onnx", "fp32")] == pytest.approx(100 / 97)


# ---------------------------------------------------------------- inputs

def test_as_percent_and_typed_results(tmp_path):
    assert as_percent([{"accuracy": 0.9}, {"accuracy": None}])[0]["accuracy"] == pytest.approx(90.0)
    assert as_percent([{"accuracy": 90.0}])[0]["accuracy"] == 90.0
    path = write_results_csv(tmp_path / "r.csv", result_rows())
    rows, _ = read_results(path)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(isinstance(r["threads"], int) and isinstance(r["p50_us"], float) for r in ok)
    assert max(r["accuracy"] for r in ok) == pytest.approx(100 * ACCURACY["weight"][50] - 0.05)
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and failed[0]["p50_us"] is None and failed[0]["accuracy"] is None


def test_bad_results_files_are_user_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("framework,method\ntorch,weight\n")
    with pytest.raises(PrunedgeError, match="missing columns"):
        read_results(tmp_path / "bad.csv")
    with pytest.raises(PrunedgeError, match="not found"):
        read_results(tmp_path / "absent.csv")
    rows = result_rows()
    rows[0]["p50_us"] = "fast"
    with pytest.raises(PrunedgeError, match="p50_us"):
        read_results(write_results_csv(tmp_path / "r.csv", rows))
    rows = result_rows()
    rows[1]["sparsity"] = ""
    with pytest.raises(PrunedgeError, match="line 3: empty sparsity"):
        read_results(write_results_csv(tmp_path / "r.csv", rows))


# ---------------------------------------------------------------- the report

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_root(tmp_path_factory.mktemp("artifacts"))
    device = write_results_csv(root.parent / "device.csv", [dict(r, source="device") for r in result_rows()[:12]])
    assert report_main(["--root", str(root), "--device-results", str(device)]) == 0
    return root, (root / "report" / "REPORT.md").read_text()


def test_report_has_every_section_and_no_placeholders(built):
    root, text = built
    for heading in SECTIONS + ("## Device results",):
        assert heading in text, heading
    assert not placeholders(text)
    for name in [line.split("(")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]:
        assert (root / "report" / name).stat().st_size > 1000, name
    assert "![torch: accuracy vs sparsity, every method](accuracy_every_method_torch.png)" in text


def test_report_numbers_come_from_the_data(built):
    _, text = built
    q2 = text.split("## How far can each model be pruned")[1].split("## MLP or CNN")[0]
    # fixture: mean over seeds 0 and 1 adds 0.1 point; weight within 1 point up to 95%, unit up to 50%
    assert "| torch | weight | 90.10% | **95%** | 89.60% | -0.50 |" in q2
    assert "| torch | unit | 90.10% | **50%** | 89.40% | -0.70 |" in q2
    assert "tf: CSR is faster than dense numpy" in text
    targets = text.split("## Is a unit-pruned model faster")[1]
    assert "34.00× faster than dense" in targets  # unit k90: (1 + 0.02) / (0.1^2 + 0.02)
    assert "**litert-xnnpack** (tflite fp32)" in text and "DENSIFY" in text
    assert "**scipy-csr**" not in text.split("## Where sparsity gives no speedup")[1]


def test_report_follows_changed_data(tmp_path):
    root = make_root(tmp_path / "a", seeds=1, with_results=False)
    rows = seeds.read_seeds_csv(root / "bench" / "seeds.csv")
    rows = [dict(r, accuracy=0.85) if (r["method"], r["sparsity"]) == ("weight", 95.0) else r for r in rows]
    seeds.write_seeds_csv(root / "bench" / "seeds.csv", rows)
    assert report_main(["--root", str(root), "--no-plots"]) == 0
    text = (root / "report" / "REPORT.md").read_text()
    assert "| torch | weight | 90.00% | **90%** | 89.70% |" in text
    assert "_Not available: benchmark results" in text
    assert not placeholders(text)


def test_report_falls_back_to_the_manifest_single_seed(tmp_path):
    root = make_root(tmp_path / "a", seeds=1, with_results=False)
    (root / "bench" / "seeds.csv").unlink()
    manifest = json.loads((root / "export" / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["format"] != "npz"]
    manifest["files"] += [{"path": f"torch/{m}/k{k:02d}/model.npz", "format": "npz", "framework": "torch",
                           "method": m, "sparsity": float(k), "accuracy": a}
                          for m, accs in ACCURACY.items() for k, a in accs.items()]
    (root / "export" / "manifest.json").write_text(json.dumps(manifest))
    inputs = load_inputs(root)
    assert "manifest.json (single seed)" in inputs.accuracy_source
    assert report_main(["--root", str(root), "--no-plots"]) == 0
    assert "(1 seed(s) per point" in (root / "report" / "REPORT.md").read_text()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert report_main(["--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nothing to report" in err and err.count("\n") == 1
    assert report_main(["--root", str(tmp_path), "--device-results", str(tmp_path / "no.csv")]) == 2
    assert "device results file not found" in capsys.readouterr().err
    assert report_main(["--root", str(tmp_path), "--tolerance", "-1"]) == 2
    assert report_main(["--help"]) == 0


# ---------------------------------------------------------------- seeds

def test_run_seeds_scores_every_method_and_level(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 28, 28))
    labels = rng.integers(0, 10, 300)
    data = tmp_path / "data"
    write_idx_gz(data / "t10k-images-idx3-ubyte.gz", images)
    write_idx_gz(data / "t10k-labels-idx1-ubyte.gz", labels)
    model = random_model([784, 32, 16, 10], seed=3)
    save(model, tmp_path / "art" / "train" / "torch" / "s0" / "model.npz")
    path = seeds.run_seeds(1, frameworks=("torch",), levels=(0, 50, 90), root=tmp_path / "art", data_dir=data)
    rows = seeds.read_seeds_csv(path)
    assert [(r["method"], r["sparsity"]) for r in rows] == [
        (m, k) for m in ("weight", "unit") for k in (0.0, 50.0, 90.0)]
    x = images.reshape(300, -1).astype(np.float32) / 255
    dense_acc = float(np.mean(model.predict(x) == labels))
    assert rows[0]["accuracy"] == pytest.approx(dense_acc, abs=1e-6)
    assert rows[3]["accuracy"] == pytest.approx(dense_acc, abs=1e-6)
    from pipeline.methods import prune
    masked = float(np.mean(prune(model, "unit", 90).predict(x) == labels))
    assert rows[5]["accuracy"] == pytest.approx(masked, abs=1e-6), "shrunk model scores like the masked one"
    assert all(0 <= r["accuracy"] <= 1 and not math.isnan(r["accuracy"]) for r in rows)


def test_run_seeds_rejects_zero_seeds(tmp_path):
    with pytest.raises(PrunedgeError, match="--seeds"):
        seeds.run_seeds(0, root=tmp_path)


def test_batch_and_threads_select_the_latency_rows(tmp_path):
    root = make_root(tmp_path / "a", seeds=1)
    assert report_main(["--root", str(root), "--no-plots", "--batch", "64"]) == 0
    text = (root / "report" / "REPORT.md").read_text()
    assert "Latency is p50 at batch 64, 1 thread" in text
    assert "16.16 ms" in text.split("## Recommendation")[0], "dense p50 at batch 64 in the speed table"
    assert "(batch 1, 1 thread):** cnn-tf: 34.00×" in text and "; tf: 34.00×" in text, "targets stay at batch 1"
    assert report_main(["--root", str(root), "--threads", "0"]) == 2


def test_methods_section_puts_fine_tuned_next_to_one_shot():
    from types import SimpleNamespace
    from report.methods import methods_section
    files = [{"format": "npz", "framework": "torch", "method": m, "sparsity": k, "accuracy": acc}
             for m, k, acc in [("weight-gp", 0, 0.90), ("weight-gp", 90, 0.897), ("weight", 0, 0.90),
                               ("weight", 90, 0.55), ("weight-ft", 0, 0.90), ("weight-ft", 90, 0.895),
                               ("unit", 0, 0.90), ("unit", 90, 0.17)]]
    lines = methods_section(SimpleNamespace(manifest={"files": files}), None, {}, SimpleNamespace(tolerance=1.0))
    text = "\n".join(lines)
    assert "| sparsity | weight | weight-ft | weight-gp | unit |" in text
    assert "| 90% | 55.00% | 89.50% | 89.70% | 17.00% |" in text
    assert "| **within 1 pt up to** | **0%** | **90%** | **90%** | **0%** |" in text
    empty = methods_section(SimpleNamespace(manifest={}), None, {}, SimpleNamespace(tolerance=1.0))
    assert "Not available" in "\n".join(empty)
