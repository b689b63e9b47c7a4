"""Masked fine-tuning: the sparsity pattern is frozen exactly, accuracy recovers, runs repeat."""
import numpy as np
import pytest

from helpers import small_dataset
from pipeline.errors import PrunedgeError
from pipeline.finetune import fine_tune
from pipeline.methods import prune
from pipeline.shrink import shrink
from pipeline.sparse import to_csr
from pipeline.train import TrainConfig, accuracy, framework_module

FRAMEWORKS = ("torch", "tf")
IMPORTS = {"torch": "torch", "tf": "keras"}


@pytest.fixture(scope="module")
def data():
    return small_dataset()


@pytest.fixture(scope="module", params=FRAMEWORKS)
def trained(request, data):
    """A small MLP trained for 3 epochs on 2k images (seconds) in each framework."""
    pytest.importorskip(IMPORTS[request.param])
    config = TrainConfig(hidden=(64, 32), epochs=3)
    model, _ = framework_module(request.param).fit(data, config=config, seed=0, progress=False)
    return request.param, model.with_layers(model.layers, method="dense", sparsity=0.0, framework=request.param)


@pytest.mark.parametrize("method, sparsity", [("weight", 90), ("unit", 50)])
def test_pattern_frozen_accuracy_recovers_and_repeatable(trained, data, method, sparsity):
    framework, model = trained
    pruned = prune(model, method, sparsity)
    tuned = fine_tune(pruned, data, framework=framework, seed=3, epochs=2, lr=1e-3, progress=False)
    again = fine_tune(pruned, data, framework=framework, seed=3, epochs=2, lr=1e-3, progress=False)
    for before, after, repeat in zip(pruned.layers, tuned.layers, again.layers):
        np.testing.assert_array_equal(after.weight != 0, before.weight != 0)  # same pattern, same nnz
        np.testing.assert_array_equal(after.weight, repeat.weight)
        np.testing.assert_array_equal(after.bias, repeat.bias)
    assert not np.array_equal(tuned.layers[0].weight, pruned.layers[0].weight)  # it did train
    assert tuned.meta["method"] == f"{method}-ft" and tuned.meta["sparsity"] == sparsity
    assert tuned.meta["finetune"]["framework"] == framework and len(tuned.meta["finetune"]["val_acc"]) == 2
    x, y = data.x_train[:1000], data.y_train[:1000]
    assert accuracy(tuned, x, y) >= accuracy(pruned, x, y)
    # unit-pruned columns stay empty, so the shrunk shapes are those without fine-tuning
    assert shrink(tuned).widths == shrink(pruned).widths
    assert to_csr(tuned).n_nonzero == to_csr(pruned).n_nonzero


def test_weight_pruning_damage_is_repaired(trained, data):
    framework, model = trained
    pruned = prune(model, "weight", 97)
    tuned = fine_tune(pruned, data, framework=framework, seed=0, epochs=2, lr=1e-3, progress=False)
    val = (data.x_val, data.y_val)
    assert accuracy(pruned, *val) < accuracy(model, *val) - 0.05  # 97% of weights gone hurts
    assert accuracy(tuned, *val) > accuracy(pruned, *val) + 0.03


def test_csr_input_is_densified_with_same_nnz(data):
    pytest.importorskip("torch")
    from pipeline.model import random_model
    model = to_csr(prune(random_model([784, 16, 10], seed=1), "weight", 80))
    tuned = fine_tune(model.with_layers(model.layers, method="weight"), data, framework="torch",
                      seed=0, epochs=1, progress=False)
    assert not any(l.is_sparse for l in tuned.layers) and tuned.meta["physical"] == "dense"
    assert [l.nnz for l in tuned.layers] == [l.nnz for l in model.layers]


def test_bad_options(data):
    from pipeline.model import random_model
    model = random_model([784, 8, 10], seed=0)
    with pytest.raises(PrunedgeError, match="framework: unknown 'mxnet'"):
        fine_tune(model, data, framework="mxnet", seed=0)
    with pytest.raises(PrunedgeError, match="epochs: must be a number > 0"):
        fine_tune(model, data, framework="torch", seed=0, epochs=0)


def test_gradual_level_reaches_the_level_exactly_and_repeats(trained, data):
    """One -gp level: the mask grows from 50% to 90% while training (several mask updates), ends
    with exactly the one-shot prune's count of zeros, keeps the start's zeros, and repeats."""
    from pipeline.finetune import prune_gradually
    from pipeline.gradual import Schedule
    framework, model = trained
    start = prune(model, "weight", 50)
    schedule = Schedule(frequency=5, min_epochs=2, max_epochs=2)  # 2 epochs of 16 batches
    tuned = prune_gradually(start, data, method="weight", target=90, framework=framework, seed=3, schedule=schedule,
                            progress=False)
    again = prune_gradually(start, data, method="weight", target=90, framework=framework, seed=3, schedule=schedule,
                            progress=False)
    one_shot = prune(start, "weight", 90)
    for s, t, o, r in zip(start.layers, tuned.layers, one_shot.layers, again.layers):
        assert np.count_nonzero(t.weight) == np.count_nonzero(o.weight)
        assert not np.any(t.weight[s.weight == 0])  # pruned once, pruned for good
        np.testing.assert_array_equal(t.weight, r.weight)
    assert tuned.meta["sparsity"] == 90 and tuned.meta["gradual"]["from"] == 50
    assert (tuned.meta["gradual"]["passes"], tuned.meta["gradual"]["images"]) == (2, len(data.x_train))
    assert tuned.meta["gradual"]["mask_updates"] == 4  # before batches 5, 10, 15 and 16 (the ramp's end)
    val = (data.x_val, data.y_val)
    assert accuracy(tuned, *val) > accuracy(one_shot, *val)
    # a level of 0 epochs is the one-shot prune (and needs no data)
    plain = prune_gradually(start, None, method="weight", target=60, framework=framework, seed=3,
                            schedule=Schedule(tune_from=70), progress=False)
    expected = prune(start, "weight", 60)
    assert plain.meta == expected.meta
    for a, b in zip(plain.layers, expected.layers):
        np.testing.assert_array_equal(a.weight, b.weight)


def test_gradual_unit_level_keeps_whole_units(trained, data):
    from pipeline.finetune import prune_gradually
    from pipeline.gradual import Schedule
    framework, model = trained
    tuned = prune_gradually(model.with_layers(model.layers, sparsity=0.0), data, method="unit", target=50,
                            framework=framework, seed=0, schedule=Schedule(frequency=4), progress=False)  # 1.5 epochs: 2 passes over 75%
    assert shrink(tuned).widths == shrink(prune(model, "unit", 50)).widths


def test_a_fractional_budget_trains_a_seeded_share_and_keeps_the_mask(trained, data):
    """Half an epoch (the CNN's budget per level) is one pass over a seeded half of the images:
    the pattern stays, the result repeats, and it differs from a full epoch's."""
    framework, model = trained
    pruned = prune(model, "weight", 80)
    half = fine_tune(pruned, data, framework=framework, seed=1, epochs=0.5, progress=False)
    again = fine_tune(pruned, data, framework=framework, seed=1, epochs=0.5, progress=False)
    full = fine_tune(pruned, data, framework=framework, seed=1, epochs=1, progress=False)
    assert len(half.meta["finetune"]["val_acc"]) == 1 and half.meta["finetune"]["epochs"] == 0.5
    for p, h, a, f in zip(pruned.layers, half.layers, again.layers, full.layers):
        assert not np.any(h.weight[p.weight == 0])
        np.testing.assert_array_equal(h.weight, a.weight)
    assert any(not np.array_equal(h.weight, f.weight) for h, f in zip(half.layers, full.layers))


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_fine_tuning_a_cnn_keeps_its_input_shape_and_filters(framework):
    """A filter-pruned CNN fine-tuned (as -ft and each -gp level do) is still a [28, 28, 1] CNN with
    the same removed filters (the description once came back without its input shape)."""
    from helpers import small_dataset
    from pipeline.fold import fold_batchnorm
    from pipeline.nets import Block, CnnSpec, cnn
    model = fold_batchnorm(cnn(0, CnnSpec(stem=(4, 8), blocks=(Block(expand=8, out=8),))))
    pruned = prune(model, "unit", 50)
    tuned = fine_tune(pruned, small_dataset(n_train=512, n_val=128, n_test=128), framework=framework, seed=0,
                      epochs=0.5, progress=False)
    assert tuned.input_shape == (28, 28, 1)
    for p, t in zip(pruned.layers, tuned.layers):
        if hasattr(p, "weight"):
            assert not np.any(np.asarray(t.weight)[np.asarray(p.weight) == 0])
    assert tuned.forward(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)
