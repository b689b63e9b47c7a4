"""The auto formats: per-layer choice from a measured table, written as one verified LiteRT file."""
import json

import numpy as np
import pytest

from export import tflite_auto as ta
from export.formats import FORMATS, ExportOptions, for_model
from export.tflite_block import run
from pipeline.errors import PrunedgeError
from pipeline.model import random_model
from pipeline.methods import prune
from pipeline.methods import physical

WIDTHS = [784, 64, 32, 10]


def _model(method="block16", k=90):
    return physical(prune(random_model(WIDTHS, seed=1, method="dense"), method, k))  # CSR, as exported


def _table(model, fastest: dict[int, str]) -> dict:
    """A timing table where layer i's fastest correct format is fastest[i] (dense elsewhere)."""
    table = ta.empty_table()
    for i, layer in enumerate(model.layers):
        table["layers"][ta.layer_key(layer)] = [
            {"format": f, "p50_us": 1.0 if f == fastest.get(i, "dense") else 5.0, "status": "ok", "reason": ""}
            for f in ("dense", "block", "int8", "int8-block")]
    return table


def test_layer_key_tells_block_widths_and_density_apart():
    b16, b4, w = _model("block16"), _model("block"), _model("weight")
    assert ta.layer_key(b16.layers[0]).endswith("/b16") and ta.layer_key(b4.layers[0]).endswith("/b4")
    assert ta.layer_key(w.layers[0]).endswith("/b1") and "kept0.100" in ta.layer_key(w.layers[0])
    assert ta.layer_key(b16.layers[-1]) == "32x10/kept1.000/b16"  # the unpruned output layer


def test_auto_rows_apply_to_block_models_from_80_percent():
    names = lambda m: {f.name for f in for_model(m)}  # noqa: E731
    assert {"tflite-auto", "tflite-auto-int8"} <= names(_model("block16", 90))
    assert "tflite-auto" not in names(_model("block16", 70)) | names(_model("weight", 90))


@pytest.mark.parametrize("allow_int8,fastest,expect", [
    (False, {0: "block", 1: "int8"}, ["block", "dense", "dense"]),  # int8 not allowed: next best is dense
    (True, {0: "int8-block", 1: "int8"}, ["int8-block", "int8", "dense"]),
])
def test_export_writes_the_chosen_mix_and_verifies_it(tmp_path, allow_int8, fastest, expect):
    model = _model()
    options = ExportOptions(layer_timings=_table(model, fastest))
    assert ta.choose_formats(model, options.layer_timings, allow_int8=allow_int8) == expect
    path = ta.export(model, tmp_path / "m.tflite", options, allow_int8=allow_int8)
    assert ta.layer_formats(path) == {"layer_formats": expect}  # read back from the file itself
    x = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    ref, y = model.forward(x), run(path.read_bytes(), x, delegate="none")
    if allow_int8:  # int8 weights: same class on nearly every input, small relative error
        assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.9
        assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 0.05
    else:
        np.testing.assert_allclose(y, ref, atol=1e-4)
        np.testing.assert_allclose(run(path.read_bytes(), x, delegate="xnnpack"), ref, atol=1e-4)


def test_fastest_whole_file_beats_the_per_layer_choice():
    """Per-layer timings miss costs between layers; a timed whole file overrides them."""
    model = _model()
    table = _table(model, {0: "int8-block", 1: "int8"})
    per_layer = ["int8-block", "int8", "dense"]
    table["models"][ta.model_key(model)] = [
        {"formats": per_layer, "p50_us": 30.0, "status": "ok", "reason": ""},
        {"formats": ["int8", "int8", "int8"], "p50_us": 27.0, "status": "ok", "reason": ""},
        {"formats": ["block", "block", "dense"], "p50_us": 20.0, "status": "wrong", "reason": "x"},  # never
        {"formats": ["block", "dense", "dense"], "p50_us": 40.0, "status": "ok", "reason": ""}]
    assert ta.choose_formats(model, table, allow_int8=True) == ["int8", "int8", "int8"]
    assert ta.choose_formats(model, table, allow_int8=False) == ["block", "dense", "dense"]
    assert ta.whole_candidates(model, table)[:2] == [["dense", "dense", "dense"], per_layer]  # fp32: a tie is dense


def test_unmeasured_layer_or_damaged_table_is_a_clear_error(tmp_path):
    model = _model()
    with pytest.raises(PrunedgeError, match=r"layer 0 \(64|784x64.*never timed"):
        ta.export(model, tmp_path / "m.tflite", ExportOptions(layer_timings=ta.empty_table()), allow_int8=False)
    assert not (tmp_path / "m.tflite").exists()
    bad = tmp_path / ta.TIMINGS_FILE
    bad.write_text(json.dumps({"schema": 1, "layers": {"k": [{"format": "dense"}]}}))
    with pytest.raises(PrunedgeError, match=f"{bad}: damaged layer timings"):
        ta.load_table(bad)
    assert ta.load_table(tmp_path / "absent.json") == ta.empty_table()


def test_measure_missing_times_each_layer_set_once(tmp_path, monkeypatch):
    """Real LiteRT timings for a small model; a second model with the same layer keys measures nothing."""
    model = _model()
    x = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    table = ta.measure_missing([model], ta.empty_table(), x, progress=False)
    keys = {ta.layer_key(layer) for layer in model.layers}
    assert set(table["layers"]) == keys
    for key in keys:
        assert {r["format"] for r in table["layers"][key]} == {"dense", "block", "int8", "int8-block"}
    assert all(r["status"] == "ok" and r["p50_us"] > 0 for r in table["layers"][ta.layer_key(model.layers[0])])
    wholes = table["models"][ta.model_key(model)]  # the whole-file candidates, built, checked and timed
    assert len(wholes) >= 3 and all(r["status"] == "ok" and r["p50_us"] > 0 for r in wholes)
    assert ["dense"] * 3 in [r["formats"] for r in wholes]
    import export.layer_timing
    monkeypatch.setattr(export.layer_timing, "measure", lambda *a, **k: pytest.fail("measured again"))
    assert ta.measure_missing([model], table, x, progress=False) is table
    path = ta.save_table(tmp_path / ta.TIMINGS_FILE, table)
    assert ta.load_table(path) == table
    assert FORMATS["tflite-auto"].reads_timings
