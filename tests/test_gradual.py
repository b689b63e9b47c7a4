"""The gradual (-gp) schedule: epochs follow the step, sparsity ramps like tfmot's PolynomialDecay,
the last mask update lands on the level, the rate holds then decays to 0."""
import math
from dataclasses import fields

import pytest

from pipeline import gradual
from pipeline.errors import PrunedgeError
from pipeline.gradual import Schedule, level_epochs, lr_at, mask_updates, plan, sparsity_at
from pipeline.prune import LEVELS
from pipeline.train import SCHEDULES


def test_default_chain_spends_epochs_where_the_steps_are_large():
    rows = plan(LEVELS)
    assert [r["target"] for r in rows] == [float(k) for k in LEVELS]
    assert [r["epochs"] for r in rows] == [0, 0, 0, 0, 1, 1, 2, 2, 2, 3]
    assert rows[-1]["cumulative_epochs"] == 11 and rows[-2]["cumulative_epochs"] == 8


def test_halvings_and_budget():
    assert gradual.halvings(0, 50) == pytest.approx(1.0)
    assert gradual.halvings(97, 99) == pytest.approx(math.log2(3))
    schedule = Schedule(epochs_per_halving=1.0, tune_from=0, min_epochs=1, max_epochs=2)
    assert level_epochs(0, 50, schedule) == 1  # exactly one halving: no rounding up past it
    assert level_epochs(50, 60, schedule) == 1  # small steps get the minimum
    assert level_epochs(97, 99, schedule) == 2  # large ones the maximum
    assert level_epochs(0, 0, schedule) == 0
    assert level_epochs(50, 60, Schedule(tune_from=70)) == 0
    with pytest.raises(PrunedgeError, match="levels: need 0 <= start <= target < 100"):
        gradual.halvings(90, 80)


def test_polynomial_ramp_like_tfmot():
    assert sparsity_at(0, start=90, target=95, ramp=100) == 90
    assert sparsity_at(50, start=90, target=95, ramp=100) == pytest.approx(95 - 5 * 0.5 ** 3)
    assert sparsity_at(100, start=90, target=95, ramp=100) == 95
    assert sparsity_at(150, start=90, target=95, ramp=100) == 95
    assert sparsity_at(0, start=90, target=95, ramp=0) == 95  # no ramp: all at once
    values = [sparsity_at(t, start=0, target=80, ramp=1000) for t in range(0, 1001, 10)]
    assert values == sorted(values)


def test_mask_updates_every_frequency_batches_and_last_on_target():
    schedule = Schedule(ramp=0.5, frequency=100)
    updates = mask_updates(860, start=95, target=97, schedule=schedule)
    assert list(updates) == [100, 200, 300, 400, 430]
    assert updates[430] == 97.0 and all(95 < s < 97 for t, s in updates.items() if t != 430)
    assert list(updates.values()) == sorted(updates.values())
    assert mask_updates(860, start=95, target=97, schedule=Schedule(ramp=0)) == {0: 97.0}  # the old one-shot step
    assert mask_updates(50, start=0, target=90, schedule=Schedule(ramp=1.0, frequency=100)) == {50: 90.0}
    assert mask_updates(860, start=97, target=97, schedule=schedule) == {}


def test_rate_holds_during_the_ramp_then_cosine_to_zero():
    assert lr_at(0, n_steps=100, hold=40, lr=2e-3) == 2e-3
    assert lr_at(39, n_steps=100, hold=40, lr=2e-3) == 2e-3
    assert lr_at(40, n_steps=100, hold=40, lr=2e-3) == pytest.approx(2e-3)
    assert lr_at(70, n_steps=100, hold=40, lr=2e-3) == pytest.approx(1e-3)
    assert lr_at(100, n_steps=100, hold=40, lr=2e-3) == pytest.approx(0.0, abs=1e-12)
    after = [lr_at(t, n_steps=100, hold=40, lr=2e-3) for t in range(40, 101)]
    assert after == sorted(after, reverse=True)
    # hold 0 is fine-tuning's per-batch cosine
    for t in (0, 33, 99):
        assert lr_at(t, n_steps=100, hold=0, lr=2e-3) == pytest.approx(SCHEDULES["cosine-step"](2e-3, t / 50, 2))


def test_stamp_holds_every_parameter():
    assert set(Schedule().to_dict()) == {f.name for f in fields(Schedule)}


@pytest.mark.parametrize("kwargs, message", [
    ({"ramp": 1.5}, "ramp: must be in [0, 1], got 1.5"),
    ({"frequency": 0}, "frequency: must be an integer >= 1, got 0"),
    ({"min_epochs": 3, "max_epochs": 2}, "max_epochs: must be >= min_epochs (3), got 2"),
    ({"tune_from": 120}, "tune_from: must be in [0, 100], got 120"),
    ({"lr": 0}, "lr: must be a positive number, got 0"),
    ({"epochs_per_halving": -1}, "epochs_per_halving: must be a number >= 0, got -1"),
])
def test_bad_schedule(kwargs, message):
    with pytest.raises(PrunedgeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        Schedule(**kwargs)


def test_remask_needs_masked_training():
    assert gradual.check_hooks(False, None) == {}
    with pytest.raises(PrunedgeError, match="remask: needs masked=True"):
        gradual.check_hooks(False, {0: lambda m: m})
