"""The gradual (-gp) schedule: how one level of the chain goes from the previous level's sparsity
to its own. Pure functions of numbers; `pipeline.finetune.prune_gradually` runs them.

Within a level (issue 14):
- the epochs follow the size of the step: `epochs_per_halving` per halving of the remaining
  weights (99% from 97% is 1.6 halvings, 60% from 50% 0.3), clipped to [min_epochs, max_epochs];
  a fractional budget is ceil(budget) passes over an equal share of the training images;
- sparsity rises from the previous level's to this one along tfmot's cubic PolynomialDecay over
  the first `ramp` of the batches, the masks updated every `frequency` batches, the last update
  landing on the level exactly; then the mask stays fixed;
- the learning rate holds while the mask grows, then cosine-decays to 0 by the last batch, so each
  level's model (it is exported) is a settled one, not a noisy snapshot; a level shorter than
  `full_lr_epochs` starts lower (`lr` x its share): 0.6 epoch at 2e-3 took weight 25% (TF) from
  89.82 one-shot to 89.00, while 2 epochs cosine from 2e-3 (the old chain) gave 89.83.
`ramp=0` is the old schedule: the whole step at the first batch, cosine decay from there.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pipeline.errors import fail


@dataclass(frozen=True, kw_only=True)
class Schedule:
    epochs_per_halving: float = 1.5  # ~10 epochs from 0 to 99% (6.6 halvings), 7.6 to 97%
    min_epochs: float = 0.5  # the small steps (50->60%) still train half an epoch
    max_epochs: float = 3.0  # caps a large step
    tune_from: float = 0.0  # levels below are one-shot; measured one-shot from the trained TF model at
    #                         50%: unit -1.9, block -1.2, weight -0.5 points, so every level trains
    ramp: float = 0.5  # share of a level's batches over which its sparsity rises (then the mask is fixed)
    frequency: int = 100  # batches between mask updates, as tfmot's default
    power: int = 3  # PolynomialDecay's exponent: most weights go early, while the lr is high
    lr: float = 2e-3  # Adam's peak; held during the ramp, cosine to 0 after (fine-tuning's rate)
    full_lr_epochs: float = 2.0  # levels this long or longer start at `lr`, shorter ones proportionally lower
    batch_size: int = 128  # the training batch

    def __post_init__(self):
        if not (isinstance(self.epochs_per_halving, (int, float)) and self.epochs_per_halving >= 0):
            raise fail("epochs_per_halving", f"must be a number >= 0, got {self.epochs_per_halving!r}")
        for name in ("frequency", "power", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise fail(name, f"must be an integer >= 1, got {value!r}")
        for name in ("min_epochs", "max_epochs"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= 100):
                raise fail(name, f"must be a number in (0, 100], got {value!r}")
        if self.max_epochs < self.min_epochs:
            raise fail("max_epochs", f"must be >= min_epochs ({self.min_epochs}), got {self.max_epochs}")
        if not (isinstance(self.ramp, (int, float)) and 0 <= self.ramp <= 1):
            raise fail("ramp", f"must be in [0, 1], got {self.ramp!r}")
        if not (isinstance(self.tune_from, (int, float)) and 0 <= self.tune_from <= 100):
            raise fail("tune_from", f"must be in [0, 100], got {self.tune_from!r}")
        for name in ("lr", "full_lr_epochs"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise fail(name, f"must be a positive number, got {value!r}")

    def to_dict(self) -> dict:
        """Every parameter: what a stage's stamp key must hold."""
        return asdict(self)


SCHEDULE = Schedule()


def halvings(start: float, target: float) -> float:
    """How many times the remaining weights halve from `start`% to `target`% sparsity."""
    if not 0 <= start <= target < 100:
        raise fail("levels", f"need 0 <= start <= target < 100, got {start} -> {target}")
    return math.log2((100.0 - start) / (100.0 - target))


def level_epochs(start: float, target: float, schedule: Schedule = SCHEDULE) -> float:
    """Epochs the level from `start` to `target` trains (0: one-shot)."""
    if target == start or target < schedule.tune_from:
        return 0.0
    budget = schedule.epochs_per_halving * halvings(start, target)
    return float(min(max(budget, schedule.min_epochs), schedule.max_epochs))


def passes(epochs: float, n_train: int) -> tuple[int, int]:
    """(passes, images per pass) that train `epochs` worth of `n_train` images: ceil(epochs)
    passes over an equal share, so 0.5 is one pass over half the images, 2.4 three over 80%."""
    if epochs <= 0:
        return 0, 0
    count = math.ceil(round(epochs, 9))
    return count, min(n_train, int(math.floor(n_train * epochs / count + 0.5)))


def level_lr(epochs: float, schedule: Schedule = SCHEDULE) -> float:
    """The level's peak rate: `lr`, scaled down for a level shorter than `full_lr_epochs`."""
    return float(schedule.lr * min(1.0, epochs / schedule.full_lr_epochs))


def ramp_steps(n_steps: int, schedule: Schedule = SCHEDULE) -> int:
    """The batch at which the level's sparsity is reached (0: at once, before the first batch)."""
    return int(math.floor(schedule.ramp * n_steps + 0.5))


def sparsity_at(step: int, *, start: float, target: float, ramp: int, power: int = 3) -> float:
    """tfmot's PolynomialDecay: target + (start - target) * (1 - step / ramp) ** power, held at target
    from `ramp` on."""
    if ramp <= 0 or step >= ramp:
        return float(target)
    return float(target + (start - target) * (1.0 - max(step, 0) / ramp) ** power)


def mask_updates(n_steps: int, *, start: float, target: float, schedule: Schedule = SCHEDULE) -> dict[int, float]:
    """{batch index: sparsity} of the mask updates in a level of `n_steps` batches: every
    `frequency` batches while the ramp lasts, and the last one on the ramp's end at `target`."""
    ramp = ramp_steps(n_steps, schedule)
    if target <= start:
        return {}
    steps = list(range(schedule.frequency, ramp, schedule.frequency)) + [ramp]
    return {t: sparsity_at(t, start=start, target=target, ramp=ramp, power=schedule.power) for t in steps}


def lr_at(step: int, *, n_steps: int, hold: int, lr: float) -> float:
    """`lr` until batch `hold`, then cosine-decayed to 0 at batch `n_steps`."""
    if step < hold:
        return float(lr)
    span = max(n_steps - hold, 1)
    return float(lr * 0.5 * (1.0 + math.cos(math.pi * min(step - hold, span) / span)))


def plan(levels, schedule: Schedule = SCHEDULE) -> list[dict]:
    """One row per level of a chain: its start, epochs and the epochs spent to reach it."""
    rows, previous, total = [], 0.0, 0.0
    for k in sorted(float(k) for k in levels):
        epochs = level_epochs(previous, k, schedule)
        total += epochs
        rows.append({"start": previous, "target": k, "epochs": round(epochs, 6),
                     "cumulative_epochs": round(total, 6)})
        previous = k
    return rows


def check_hooks(masked: bool, remask) -> dict:
    """A fit's `remask` as a dict ({} when None); it needs masked training to keep its zeros."""
    if remask and not masked:
        raise fail("remask", "needs masked=True (the masks keep the new zeros)")
    return dict(remask or {})
