"""Check an exported file in its own runtime against the numpy reference, and measure its accuracy.

The file kind's `check` picks the tolerance (`pipeline.checks`): float32 files must reproduce
`Model.forward`'s logits on real test images, reduced-precision files (fp16, int8) must agree on
the top-1 class. The file is tried in each runtime its row lists (LiteRT: XNNPACK first): the
first one that passes ships and is recorded; if none passes the file is marked failed, with
every reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.runners import predict
from export.runtimes import open_session
from pipeline.checks import PRECISION, compare
from pipeline.errors import PrunedgeError

N_CHECK = 1000  # real test images compared logit by logit
N_CALIBRATION = 300  # training images for full-int8 calibration (min/max ranges settle by ~100)
CALIBRATION_SEED = 0


@dataclass(frozen=True, kw_only=True)
class EvalData:
    x_check: np.ndarray  # float32 [N_CHECK, in]: first real test images, compared logit by logit
    x_test: np.ndarray  # float32 [n, in]: full test set for accuracy
    y_test: np.ndarray  # int labels [n]
    x_calibration: np.ndarray  # float32 [N_CALIBRATION, in] training images (int8-full)
    source: str  # where the images came from
    sha256: str  # of the source files, recorded in the stamp key and manifest config


def fashion_mnist(data_dir=None, *, n_check: int = N_CHECK, n_calibration: int = N_CALIBRATION) -> EvalData:
    from pipeline.data import data_dir as resolve, load_fashion_mnist
    ds = load_fashion_mnist(data_dir)
    pick = np.sort(np.random.default_rng(CALIBRATION_SEED).choice(len(ds.x_train), n_calibration, replace=False))
    return EvalData(x_check=ds.x_test[:n_check], x_test=ds.x_test, y_test=ds.y_test,
                    x_calibration=ds.x_train[pick], source=str(resolve(data_dir)), sha256=ds.sha256)


def labeled(path, *, input_dim: int | None = None, n_classes: int | None = None, n_check: int = N_CHECK,
            n_calibration: int = N_CALIBRATION, **layout) -> EvalData:
    """Evaluation data for an imported model from any labeled set (`pipeline.labeled.load_split`):
    its test split is checked and scored, its train split calibrates int8."""
    from pipeline.fileio import sha256_file
    from pipeline.labeled import load_split
    split = load_split(path, input_dim=input_dim, n_classes=n_classes, **layout)
    n_cal = min(n_calibration, len(split.x_train))
    pick = np.sort(np.random.default_rng(CALIBRATION_SEED).choice(len(split.x_train), n_cal, replace=False))
    digest = sha256_file(path) if Path(path).is_file() else _dir_sha256(Path(path))
    return EvalData(x_check=split.x_test[:n_check], x_test=split.x_test, y_test=split.y_test,
                    x_calibration=split.x_train[pick], source=str(path), sha256=digest)


def _dir_sha256(directory: Path) -> str:
    from pipeline.fileio import sha256_bytes, sha256_file
    return sha256_bytes("".join(f"{p.name}:{sha256_file(p)}\n" for p in sorted(directory.iterdir())
                                if p.is_file()).encode())


@dataclass(frozen=True)
class Outcome:
    verify: dict  # pipeline.checks.compare's record
    runtime: str  # the runtime the file ships with (export.runtimes name)
    accuracy: float | None  # full test set, from the file in that runtime
    seconds: float


def verify_file(path: Path, fmt, reference: np.ndarray, data: EvalData, *, threads=None) -> Outcome:
    """Try the row's runtimes in order; ship the first that passes."""
    import time
    start = time.perf_counter()
    tolerance = PRECISION[fmt.check]
    rejected, fallback = [], None  # fallback: (runtime, session, record) of a file that ran but failed
    for name in fmt.runtimes:
        try:
            session = open_session(path, name, threads=threads)
            record = compare(reference, predict(session, data.x_check), tolerance)
        except PrunedgeError as e:
            rejected.append(f"{name}: {e}")
            continue
        if record["status"] == "passed":
            if rejected:
                record["reason"] = "fallback from " + "; ".join(rejected)
            return Outcome(record, name, accuracy(session, data), time.perf_counter() - start)
        rejected.append(f"{name}: {record['reason']}")
        fallback = fallback or (name, session, record)
    if fallback is None:
        record = {"status": "failed", "max_abs_diff": None, "rel_l2": None, "top1_agreement": None,
                  "n": len(reference), "reason": "; ".join(rejected)}
        return Outcome(record, fmt.runtimes[0], None, time.perf_counter() - start)
    name, session, record = fallback
    record = {**record, "reason": "; ".join(rejected)}
    return Outcome(record, name, accuracy(session, data), time.perf_counter() - start)


def accuracy(session, data: EvalData) -> float:
    return float(np.mean(predict(session, data.x_test).argmax(axis=1) == data.y_test))


def default_threads(jobs: int) -> int | None:
    """One runtime thread per worker when several workers share the cores."""
    return 1 if jobs > 1 else None
