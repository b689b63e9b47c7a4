"""Training in both frameworks: files and keys, provenance, determinism, config validation."""
import json

import numpy as np
import pytest

from helpers import small_dataset
from pipeline.errors import PrunedgeError
from pipeline.model_io import load
from pipeline.train import CURVE_KEYS, SCHEDULES, TrainConfig, batches, train_and_save

FRAMEWORKS = ("torch", "tf")
TINY = TrainConfig(hidden=(32,), epochs=2, batch_size=128)  # seconds, not minutes


@pytest.fixture(scope="module")
def data():
    return small_dataset()


@pytest.fixture(scope="module", params=FRAMEWORKS)
def run(request, data, tmp_path_factory):
    """The same tiny training twice with one seed, once with another."""
    pytest.importorskip({"torch": "torch", "tf": "keras"}[request.param])
    root = tmp_path_factory.mktemp(request.param)
    models = {name: train_and_save(request.param, dataset=data, seed=seed, out_dir=root / name,
                                   config=TINY, progress=False)
              for name, seed in (("a", 7), ("b", 7), ("c", 8))}
    return request.param, root, models


def test_writes_model_curves_and_summary(run, data):
    framework, root, models = run
    curves = json.loads((root / "a/curves.json").read_text())
    assert set(curves) == {"epoch", "lr", *CURVE_KEYS}
    assert curves["epoch"] == [1, 2]
    assert curves["lr"] == pytest.approx([TINY.lr, TINY.lr / 2])  # cosine, per epoch
    assert all(len(curves[k]) == 2 for k in CURVE_KEYS)
    assert curves["train_loss"][1] < curves["train_loss"][0]
    assert all(0 <= a <= 1 for a in curves["train_acc"] + curves["val_acc"])
    summary = json.loads((root / "a/train.json").read_text())
    saved = load(root / "a/model.npz")
    expected_acc = float(np.mean(saved.predict(data.x_test) == data.y_test))
    assert summary["test_accuracy"] == pytest.approx(expected_acc)
    assert summary["test_accuracy"] > 0.5  # 2 epochs of a 784-32-10 MLP on 2k images: ~0.65
    assert summary["config"] == TINY.to_dict() and summary["epochs"] == 2
    assert summary["wall_time_s"] > 0 and summary["n_test"] == len(data.x_test)
    assert saved.widths == [784, 32, 10]
    assert [l.activation for l in saved.layers] == ["relu", "identity"]
    assert saved.meta == {**models["a"].meta}
    assert saved.meta["framework"] == framework and saved.meta["seed"] == 7
    assert saved.meta["method"] == "dense" and saved.meta["sparsity"] == 0
    assert saved.meta["data_sha256"] == data.sha256 and saved.meta["train"] == TINY.to_dict()


def test_same_seed_gives_identical_weights(run):
    _, root, models = run
    for a, b in zip(models["a"].layers, models["b"].layers):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)
    assert (root / "a/model.npz").read_bytes() == (root / "b/model.npz").read_bytes()
    assert (root / "a/curves.json").read_text() == (root / "b/curves.json").read_text()


def test_other_seed_gives_other_weights(run):
    _, _, models = run
    assert not np.array_equal(models["a"].layers[0].weight, models["c"].layers[0].weight)


def test_cosine_schedule_decays_to_near_zero():
    rates = [SCHEDULES["cosine"](1e-3, e, 12) for e in range(12)]
    assert rates[0] == 1e-3 and all(a > b for a, b in zip(rates, rates[1:])) and rates[-1] < 2e-5
    assert SCHEDULES["constant"](1e-3, 11, 12) == 1e-3


def test_batches_cover_every_index_once():
    parts = list(batches(10, 4, np.random.default_rng(0)))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert sorted(np.concatenate(parts)) == list(range(10))


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "epochs: must be an integer >= 1"),
    ("batch_size", 2.5, "batch_size: must be an integer >= 1"),
    ("lr", -1e-3, "lr: must be a positive number"),
    ("lr", float("nan"), "lr: must be a positive number"),
    ("hidden", (10, 0), "hidden: layer widths must be positive"),
    ("activation", "gelu", "activation: unknown 'gelu'"),
    ("schedule", "step", "schedule: unknown 'step'"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(PrunedgeError, match=message):
        TrainConfig(**{field: value})


def test_config_is_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        TrainConfig(12)
    with pytest.raises(AttributeError):
        TINY.epochs = 3


def test_unknown_framework_and_bad_seed(data, tmp_path):
    with pytest.raises(PrunedgeError, match="framework: unknown 'jax'"):
        train_and_save("jax", dataset=data, seed=0, out_dir=tmp_path, config=TINY)
    with pytest.raises(PrunedgeError, match="seed: must be a non-negative integer"):
        train_and_save("torch", dataset=data, seed=-1, out_dir=tmp_path, config=TINY)
    assert not any(tmp_path.iterdir())


def test_keras_training_leaves_op_determinism_as_it_found_it(data):
    pytest.importorskip("keras")
    from tensorflow.python.framework import config as tf_config
    from pipeline.keras_fit import fit
    before = tf_config.is_op_determinism_enabled()
    small = TrainConfig(hidden=(8,), epochs=1)
    fit(data, config=small, seed=0, progress=False)
    assert tf_config.is_op_determinism_enabled() == before


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_scheduled_rate_reaches_the_optimizer(framework, data, monkeypatch):
    """A schedule that gives 0 must leave the weights exactly as they were."""
    pytest.importorskip({"torch": "torch", "tf": "keras"}[framework])
    from pipeline.model import random_model
    from pipeline.train import framework_module
    monkeypatch.setitem(SCHEDULES, "zero", lambda lr, epoch, epochs: 0.0)
    start = random_model([784, 8, 10], seed=0)
    config = TrainConfig(hidden=(8,), epochs=1, schedule="zero")
    trained, curves = framework_module(framework).fit(data, config=config, seed=0, init=start, progress=False)
    assert curves["lr"] == [0.0]
    for a, b in zip(start.layers, trained.layers):
        np.testing.assert_array_equal(a.weight, b.weight)


def test_cosine_step_updates_the_rate_before_every_batch():
    from helpers import small_dataset
    from pipeline.train import TrainConfig, run_epochs
    ds = small_dataset(n_train=1000, n_val=50, n_test=50)
    rates = []
    config = TrainConfig(epochs=2, batch_size=100, lr=1e-3, schedule="cosine-step")
    run_epochs("fake", ds, config=config, seed=0, step=lambda x, y: (0.0, 0),
               evaluate=lambda x, y: (0.0, 0.0), set_lr=rates.append, progress=False)
    assert len(rates) == 2 + 20  # one per epoch start, one per batch (10 batches x 2 epochs)
    assert rates[0] == 1e-3 and all(a >= b for a, b in zip(rates, rates[1:]))
    assert rates[-1] < 0.05e-3
