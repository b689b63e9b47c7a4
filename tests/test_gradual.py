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
    epochs = {r["target"]: r["epochs"] for r in rows}
    assert epochs[0] == 0 and epochs[60] == 0.5  # 50->60: the minimum
    assert epochs[90] == epochs[95] == 1.5  # one halving each
    assert epochs[99] == pytest.approx(1.5 * math.log2(3))  # 97->99: the largest step
    cumulative = {r["target"]: r["cumulative_epochs"] for r in rows}
    assert cumulative[97] == pytest.approx(7.6054, abs=1e-4) and cumulative[99] == pytest.approx(9.9829, abs=1e-4)


def test_halvings_and_budget():
    assert gradual.halvings(0, 50) == pytest.approx(1.0)
    assert gradual.halvings(97, 99) == pytest.approx(math.log2(3))
    schedule = Schedule(epochs_per_halving=1.0, min_epochs=0.5, max_epochs=1.5)
    assert level_epochs(0, 50, schedule) == pytest.approx(1.0)
    assert level_epochs(50, 60, schedule) == 0.5  # small steps get the minimum
    assert level_epochs(97, 99, schedule) == 1.5  # large ones the maximum
    assert level_epochs(0, 0, schedule) == 0
    assert level_epochs(50, 60, Schedule(tune_from=70)) == 0  # one-shot below tune_from
    with pytest.raises(PrunedgeError, match="levels: need 0 <= start <= target < 100"):
        gradual.halvings(90, 80)


@pytest.mark.parametrize("epochs, expected", [(0, (0, 0)), (0.5, (1, 500)), (1.0, (1, 1000)), (2.4, (3, 800)),
                                              (3.0, (3, 1000))])
def test_fractional_budget_is_whole_passes_over_a_share(epochs, expected):
    assert gradual.passes(epochs, 1000) == expected


def test_short_levels_start_at_a_lower_rate():
    assert gradual.level_lr(2.4) == 2e-3 and gradual.level_lr(2.0) == 2e-3
    assert gradual.level_lr(0.5) == pytest.approx(5e-4)
    assert gradual.level_lr(1.0, Schedule(lr=1e-3, full_lr_epochs=4)) == pytest.approx(2.5e-4)


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
    ({"min_epochs": 0}, "min_epochs: must be a number in (0, 100], got 0"),
    ({"tune_from": 120}, "tune_from: must be in [0, 100], got 120"),
    ({"lr": 0}, "lr: must be a positive number, got 0"),
    ({"full_lr_epochs": 0}, "full_lr_epochs: must be a positive number, got 0"),
    ({"epochs_per_halving": -1}, "epochs_per_halving: must be a number >= 0, got -1"),
])
def test_bad_schedule(kwargs, message):
    with pytest.raises(PrunedgeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        Schedule(**kwargs)


def test_remask_needs_masked_training():
    assert gradual.check_hooks(False, None) == {}
    with pytest.raises(PrunedgeError, match="remask: needs masked=True"):
        gradual.check_hooks(False, {0: lambda m: m})
