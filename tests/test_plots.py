"""Every figure is written as a non-empty PNG from small inputs, including awkward ones."""
from __future__ import annotations

import numpy as np
import pytest

from report import analysis, figures, plots
from report.inputs import as_percent, typed_row
from report_fixtures import result_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 2000, f"{path} is suspiciously small ({len(data)} bytes)"


@pytest.fixture(scope="module")
def b1_rows():
    rows = as_percent([typed_row({k: str(v) for k, v in r.items()}, "fixture") for r in result_rows()])
    return analysis.ok_rows(rows)


def test_sparsity_positions_are_monotone_and_spread_the_high_levels():
    x = plots.sparsity_position([0, 50, 90, 95, 99])
    assert x[0] == 0 and np.all(np.diff(x) > 0)
    assert x[4] - x[3] > x[1] - x[0], "99 vs 95 gets more room than 50 vs 0"


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_accuracy_vs_sparsity(tmp_path, n_seeds):
    rows = [{"framework": "torch", "method": m, "seed": s, "sparsity": float(k), "accuracy": 90 - k / 10 * f + s}
            for s in range(n_seeds) for m, f in (("weight", 0.2), ("unit", 1.0), ("block-1x4", 0.5))
            for k in (0, 50, 90, 99)]
    path = plots.accuracy_vs_sparsity(analysis.curves(rows), "torch", tmp_path / "acc.png")
    assert_png(path)


def test_learning_curves(tmp_path):
    runs = {s: {"train_loss": [1.0, 0.5, 0.4], "val_loss": [0.8, 0.6, 0.55],
                "train_acc": [0.7, 0.8, 0.85], "val_acc": [0.75, 0.8, 0.82]} for s in (0, 1)}
    assert_png(plots.learning_curves(runs, "tf", tmp_path / "curves.png"))


def test_latency_size_pareto(tmp_path, b1_rows):
    assert_png(plots.latency_vs_sparsity(b1_rows, tmp_path / "latency.png"))
    assert_png(plots.latency_vs_sparsity([r for r in b1_rows if r["runtime"] == "numpy"], tmp_path / "one.png"))
    assert_png(plots.size_vs_sparsity(analysis.unique_artifacts(b1_rows), tmp_path / "size.png"))
    assert_png(figures.pareto(b1_rows, tmp_path / "pareto.png"))


def test_weight_figures(tmp_path):
    rng = np.random.default_rng(0)
    weights = [rng.laplace(0, 0.05, (64, 32)).astype(np.float32), rng.normal(0, 0.1, (32, 16)).astype(np.float32)]
    assert_png(plots.weight_histograms(weights, "torch", tmp_path / "hist.png"))
    assert_png(plots.singular_spectra([analysis.singular_values(w) for w in weights], "torch", tmp_path / "sv.png"))


def test_figures_are_written_atomically(tmp_path, b1_rows):
    figures.pareto(b1_rows, tmp_path / "pareto.png")
    assert [p.name for p in tmp_path.iterdir()] == ["pareto.png"], "no temp files left behind"


def test_preferred_variant():
    assert plots.preferred_variant(["int8-full", "fp32", None]) == "fp32"
    assert plots.preferred_variant(["sparse", "fp16"]) == "fp16"
    assert plots.preferred_variant([None]) is None


def test_latency_plot_marks_networks_and_frameworks(tmp_path):
    rows = as_percent([typed_row({k: str(v) for k, v in r.items()}, "fixture") for r in result_rows(cnn_too=True)])
    rows = analysis.ok_rows(rows)
    networks = {fw: "cnn" if fw.startswith("cnn-") else "mlp" for fw in {r["framework"] for r in rows}}
    assert_png(plots.latency_vs_sparsity(rows, tmp_path / "latency.png", networks))


def test_pareto_numbers_only_the_front_without_overlaps(tmp_path, monkeypatch):
    """~1,600 files x runtimes: every front point gets a number, no two numbers overlap."""
    rng = np.random.default_rng(0)
    runtimes = ("numpy", "onnxruntime", "openvino", "ncnn", "litert-xnnpack", "litert-builtin", "tvm")
    rows = []
    for _ in range(1600):
        k = float(rng.choice([0, 50, 80, 90, 95, 97, 99]))
        rows.append({"runtime": str(rng.choice(runtimes)), "batch": 1, "threads": 1,
                     "p50_us": float(10 ** rng.uniform(1, 4) * (1.05 - k / 100)),
                     "accuracy": float(92 - (k / 100) ** 6 * 40 - rng.uniform(0, 3))})
    kept = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: kept.append(fig) or path)  # keep it open
    figures.pareto(rows, tmp_path / "pareto.png")
    (fig,) = kept
    renderer = fig.canvas.get_renderer()
    labels = [t for ax in fig.axes for t in ax.texts]
    front = analysis.front_rows(rows)
    assert sorted(int(t.get_text()) for t in labels) == list(range(1, len(front) + 1))
    boxes = [t.get_window_extent(renderer) for t in labels]
    overlaps = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    assert not overlaps, f"{len(overlaps)} overlapping labels"
    plots._plt().close(fig)
