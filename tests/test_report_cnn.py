"""The CNN beside the MLP: grouping by model folder, which network tolerates more pruning, the CNN's
speed targets with the XNNPACK note, and seeds over both networks (or only one)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from report import cnn, networks, seeds
from report.build import ReportConfig
from report.inputs import derive, load_inputs
from report.__main__ import main as report_main
from pipeline.data import write_idx_gz
from pipeline.model_io import save
from pipeline.nets import cnn as build_cnn
from report_fixtures import CNN_SPEC, loaded, make_root, text_of  # noqa: F401 (loaded: a fixture)


def test_rows_are_grouped_by_model_folder_not_training_framework(loaded):
    inp, d, _ = loaded
    assert inp.frameworks == ["cnn-tf", "cnn-torch", "tf", "torch"]
    assert inp.networks == {"cnn-tf": "cnn", "cnn-torch": "cnn", "tf": "mlp", "torch": "mlp"}
    row = next(r for r in inp.results if r["artifact"].startswith("cnn-torch/"))
    assert (row["framework"], row["trained_with"]) == ("cnn-torch", "torch")
    entry = next(f for f in inp.manifest["files"] if f["path"].startswith("cnn-tf/"))
    assert entry["framework"] == "cnn-tf"
    assert set(d.layers) == {"tf", "torch"}, "per-layer statistics are the MLP's"


def test_which_network_tolerates_more_pruning(loaded):
    inp, d, cfg = loaded
    text = text_of(networks.networks_section(inp, d, {}, cfg))
    # fixture: MLP weight within 1 point up to 95%, CNN weight up to 75%; unit up to 50% in both
    assert "| torch | weight | **95%** (89.60% ± 0.10; dense 90.10%, 2 seed(s)) | **75%**" in text
    assert "| torch | unit | **50%**" in text and text.count("| even |") == 2
    assert ("The MLP tolerates more pruning: it stays within tolerance to a higher level in 2 of 4 framework × "
            "method pairs (MLP higher: 2, CNN higher: 0, same level: 2; mean MLP − CNN = +10.0") in text
    model = inp.weights["cnn-torch"][1]
    p = networks.profile(model)
    assert p["main"] == "1x1 conv" and f"the CNN has {p['weights']:,} weights" in text
    assert f"used {p['uses']:.0f} times per image" in text


def test_profile_counts_weights_per_kind_and_reuse():
    model = build_cnn(0, CNN_SPEC)
    p = networks.profile(model)
    assert p["weights"] == sum(layer.dense_weight().size for _, layer in model.weighted())
    assert sum(p["shares"].values()) == pytest.approx(1.0)
    assert p["uses"] > 1 and 0 < p["r90"] <= 1


def test_cnn_targets_show_met_and_not_met_with_numbers(loaded):
    inp, d, cfg = loaded
    text = text_of(cnn.cnn_targets(inp, d, {}, cfg))
    # unit 50% onnxruntime: (1 + 0.02) / (0.25 + 0.02); LiteRT: (1 + 0.05) / (0.5 + 0.05)
    assert "| cnn-tf | 50% | onnxruntime | `cnn-tf/unit/k50/model.onnx` (onnxruntime) | 810.0 µs |" in text
    assert "| 3.78× | 91.45% (-0.50) | ≤ 1 pt, ≥ 2.50× | met |" in text
    assert "| 1.91× | 91.45% (-0.50) | ≤ 1 pt, ≥ 2.50× | **not met** |" in text
    assert "| 12.36× | 90.15% (-1.80) | ≤ 2 pt, ≥ 5.00× | met |" in text
    assert "| cnn-torch | 90% | LiteRT, float32 |" in text and "| 1.00× |" in text
    assert "xnn_is_chw_compatible_config" in text and "(test cpu, x86_64)" in text and "bench_device.py" in text


def test_xnnpack_note_only_below_target_on_x86(loaded):
    inp, _, _ = loaded
    assert cnn.xnnpack_note(inp, [1.0]) and not cnn.xnnpack_note(inp, [1.6])
    arm = type(inp)(root=inp.root, machine={"cpu": "Cortex-A76", "arch": "aarch64"})
    assert cnn.xnnpack_note(arm, [1.0]) == []
    no_avx = type(inp)(root=inp.root, machine={"arch": "x86_64", "cpu_flags": ["sse4_2"]})
    assert cnn.xnnpack_note(no_avx, [1.0]) == []


def test_only_one_network_in_the_tree(tmp_path):
    for nets, present, absent in ((("mlp",), "## Does weight pruning pay", "cnn-torch"),
                                  (("cnn",), "## Does pruning make the CNN faster?", "| torch |")):
        root = make_root(tmp_path / nets[0], seeds=1, nets=nets)
        assert report_main(["--root", str(root), "--no-plots"]) == 0
        text = (root / "report" / "REPORT.md").read_text()
        assert present in text and absent not in text
        assert "Only " + nets[0].upper() + " in these inputs: the comparison needs both." in text
    assert "_No MLP in these results" in text
    assert "| cnn-tf | 50% | onnxruntime |" in text


def _test_images(tmp_path, n=200):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
    write_idx_gz(tmp_path / "data" / "t10k-images-idx3-ubyte.gz", images)
    write_idx_gz(tmp_path / "data" / "t10k-labels-idx1-ubyte.gz", labels)
    return tmp_path / "data", images.reshape(n, -1).astype(np.float32) / 255, labels


def test_seeds_score_the_cnn_folder_with_its_own_methods(tmp_path):
    data, x, y = _test_images(tmp_path)
    model = build_cnn(3, CNN_SPEC)
    save(model, tmp_path / "art" / "train" / "cnn-torch" / "s0" / "model.npz")
    assert seeds.models_in(tmp_path / "art", ("torch", "tf")) == [("cnn-torch", "torch", "cnn")]
    rows = seeds.read_seeds_csv(seeds.run_seeds(1, levels=(0, 50), root=tmp_path / "art", data_dir=data))
    assert {r["framework"] for r in rows} == {"cnn-torch"}
    assert [(r["method"], r["sparsity"]) for r in rows] == [(m, k) for m in ("weight", "unit") for k in (0.0, 50.0)]
    assert rows[0]["accuracy"] == pytest.approx(float(np.mean(model.predict(x) == y)), abs=1e-6)


def test_seeds_on_an_empty_tree_train_the_mlp_only(tmp_path):
    assert [m[2] for m in seeds.models_in(tmp_path, ("torch", "tf"))] == ["mlp", "mlp"]
    assert seeds.models_in(tmp_path, ("tf",), nets=("cnn",)) == [("cnn-tf", "tf", "cnn")]


def test_seeds_csv_of_both_networks_feeds_the_side_by_side_figure(tmp_path):
    root = make_root(tmp_path / "a", seeds=2)
    assert report_main(["--root", str(root)]) == 0
    text = (root / "report" / "REPORT.md").read_text()
    assert "![accuracy vs sparsity, MLP and CNN side by side](accuracy_mlp_vs_cnn.png)" in text
    assert (root / "report" / "accuracy_mlp_vs_cnn.png").stat().st_size > 10_000
    rows = json.loads(json.dumps(seeds.read_seeds_csv(root / "bench" / "seeds.csv")))
    assert {r["framework"] for r in rows} == {"torch", "tf", "cnn-torch", "cnn-tf"}


def test_seeds_csv_without_the_cnn_borrows_its_manifest_accuracy(tmp_path):
    root = make_root(tmp_path / "a", seeds=3, with_results=False, peer=False)
    rows = [r for r in seeds.read_seeds_csv(root / "bench" / "seeds.csv") if not r["framework"].startswith("cnn-")]
    seeds.write_seeds_csv(root / "bench" / "seeds.csv", rows)
    inp = load_inputs(root)
    assert "(single seed) for cnn-tf, cnn-torch" in inp.accuracy_source
    assert {(r["framework"], r["method"]) for r in inp.accuracy if r["framework"] == "cnn-tf"} == {
        ("cnn-tf", "weight"), ("cnn-tf", "unit")}
    assert report_main(["--root", str(root), "--no-plots"]) == 0
    text = (root / "report" / "REPORT.md").read_text()
    assert "seeds per point: cnn-tf 1, cnn-torch 1, tf 3, torch 3" in text
    assert "| cnn-tf | weight | 92.00% | **75%** |" in text
