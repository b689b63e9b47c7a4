"""The report's tables follow the project's tables; the int8, peer, Pareto and contents sections."""
from __future__ import annotations

import copy
import json

import pytest

from export.formats import FORMATS, REFERENCE
from export.runtimes import RUNTIMES
from pipeline.errors import PrunedgeError
from pipeline.methods import METHODS, TUNINGS
from report import analysis, facts, int8, pay, peer, speed
from report.build import ReportConfig
from report.inputs import derive, load_inputs
from report.markdown import anchor, contents
from report_fixtures import PEER_RUNS, loaded, make_root, result_rows, text_of, write_results_csv  # noqa: F401 (loaded: a fixture)


# ---------------------------------------------------------------- facts come from the tables

@pytest.mark.parametrize("row", [REFERENCE, *FORMATS.values()], ids=lambda f: f.name)
def test_precision_of_every_file_kind_is_its_table_row(row):
    assert facts.precision({"format": row.format, "variant": row.variant}) == row.precision
    assert facts.kind(row.format, row.variant) is row


def test_engines_families_and_unknown_names():
    for name, rt in RUNTIMES.items():
        assert facts.engine(name) == rt.engine
    assert facts.engine("tvm") == "tvm" and facts.precision({"format": "x", "variant": "int4"}) == "int4"
    for name, m in METHODS.items():
        for tuning in TUNINGS:
            assert facts.family(name + tuning) == m.family
            assert facts.stores_sparse(name + tuning) == m.runs_sparse
    assert facts.removes_units("unit-gp") and not facts.removes_units("weight")
    assert not hasattr(pay, "PRECISION") and not hasattr(pay, "SPARSE_METHODS")
    assert facts.sparse_kernel_variants("tflite") == {f.variant for f in FORMATS.values()
                                                      if f.format == "tflite" and f.sparse_kernel}


def test_a_runtime_no_table_knows_still_gets_its_rows(tmp_path):
    rows = [dict(r, runtime="tvm") for r in result_rows() if r["runtime"] == "onnxruntime"]
    root = make_root(tmp_path / "a", seeds=1, nets=("mlp",), peer=False)
    write_results_csv(root / "bench" / "results.csv", result_rows() + rows)
    inp = load_inputs(root)
    d = derive(inp)
    text = text_of(speed.recommendations(inp, d, {}, ReportConfig(root=root)))
    text += text_of(speed.speed_and_size(inp, d, {}, ReportConfig(root=root)))
    assert "| tvm |" in text and "| ncnn |" in text and "| openvino |" in text


# ---------------------------------------------------------------- int8 vs float

def test_int8_vs_float_per_level(loaded):
    inp, d, cfg = loaded
    text = text_of(int8.int8_section(inp, d, {}, cfg))
    assert "**cnn-torch** (CNN)" in text and "**torch** (MLP)" in text
    # weight 50%: float 92.05%, int8 0.3 point lower, 4x faster in the fixture; weight 99% int8 fails
    assert ("| 50% | weight | 92.05% | 91.75% (-0.30) | 3.03 ms (litert-xnnpack) | 757.5 µs (litert-xnnpack) "
            "| 4.00× | passed |") in text
    assert "| 99% | weight | 49.95% | 49.65% (-0.30) |" in text and "| **failed** |" in text
    assert "top-1 agreement >= 0.99" in text


def test_int8_count_of_models_within_tolerance(loaded):
    inp, _, cfg = loaded
    models, files, passed = int8.within_count(int8.kdirs(inp.manifest), cfg.tolerance)
    # per CNN folder: weight 0/50/75 and unit 0/50 are within 1 point (5 k-dirs, all int8 files pass);
    # per MLP folder: weight 0/50/90/95 with int8 files, weight-gp 0..99 without
    assert (models, files, passed) == (2 * 5 + 2 * (4 + 5), 2 * 5 + 2 * 4, 2 * 5 + 2 * 4)
    manifest = copy.deepcopy(inp.manifest)
    bad = next(f for f in manifest["files"] if f["path"] == "cnn-torch/weight/k50/model.int8.tflite")
    bad["verify"] = {"status": "failed"}
    assert int8.within_count(int8.kdirs(manifest), cfg.tolerance) == (models, files, passed - 1)


# ---------------------------------------------------------------- the peer

def test_peer_comparison_at_equal_budgets(loaded):
    inp, d, cfg = loaded
    text = text_of(peer.peer_section(inp, d, {}, cfg))
    # the tf weight-gp chain 0-50-90-95-99 fine-tunes 2 epochs per level: 90% after 4, 95% after 6 (finetune.EPOCHS)
    assert "| tf | weight-gp | 90% | 90.00% (+0.00) | 4.0 | 89.30% (-0.70) | 4 | yes | +0.70 | gradual better |" in text
    assert "| tf | weight-gp | 95% | 90.00% (+0.00) | 6.0 | 90.30% (+0.30) | 6 | yes | -0.30 | peer better |" in text
    assert "| 99% | 90.00% (+0.00) | 8.0 | 88.00% (-2.00) | 16 | no |" in text
    assert "Gradual pruning is the more accurate at equal budgets: over 2 level(s)" in text
    assert "gradual − peer = +0.20 points on average" in text and "tensorflow-model-optimization 0.8.1" in text


def test_peer_absent_says_how_to_produce_it(tmp_path):
    root = make_root(tmp_path / "a", seeds=1, peer=False, with_results=False)
    inp = load_inputs(root)
    text = text_of(peer.peer_section(inp, derive(inp), {}, ReportConfig(root=root)))
    assert "scripts/peer_tfmot.py" in text and "peer/tfmot.json" in text


@pytest.mark.parametrize("doc, message", [
    ("not json", "unreadable peer results"), ({"levels": []}, "expected"),
    ({"runs": [{"framework": "tf", "sparsity": 97.0, "epochs": 16}]}, "runs\\[0\\].accuracy"),
    ({"runs": [{"framework": "tf", "sparsity": 100.0, "epochs": 1, "accuracy": 0.5}]}, "sparsity must be"),
])
def test_bad_peer_files_are_one_line_errors(tmp_path, doc, message):
    path = tmp_path / "tfmot.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(PrunedgeError, match=message):
        peer.read_peer(path)


def test_peer_accuracy_in_percent_or_fraction(tmp_path):
    path = tmp_path / "tfmot.json"
    runs = [{"framework": "tf", **r, "accuracy": 100 * r["accuracy"]} for r in PEER_RUNS]
    path.write_text(json.dumps({"runs": runs}))
    assert [r["accuracy"] for r in peer.read_peer(path)["runs"]] == pytest.approx([89.3, 90.3, 88.0])


# ---------------------------------------------------------------- Pareto and contents

def test_pareto_table_numbers_the_front_fastest_first(loaded):
    inp, d, _ = loaded
    rows = [r for r in d.sel if r.get("accuracy") is not None]
    front = analysis.front_rows(rows)
    lines = speed.front_table(d.sel)
    numbered = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert len(numbered) == len(front)
    assert [float(line.split("|")[5].strip().rstrip("%")) for line in numbered] == sorted(
        round(r["accuracy"], 2) for r in front)
    assert all(f"`{r['artifact']}`" in line for r, line in zip(front, numbered))


def test_contents_links_every_section(loaded):
    assert anchor("MLP or CNN: which tolerates more pruning?") == "mlp-or-cnn-which-tolerates-more-pruning"
    assert anchor("Latency, size and the accuracy/latency trade-off") == \
        "latency-size-and-the-accuracylatency-trade-off"
    toc = contents(["## A b", "x", "## A b", "### not listed"])
    assert toc[2:4] == ["- [A b](#a-b)", "- [A b](#a-b-1)"]
