"""Report section: does pruning make the CNN faster? Its targets, measured at batch 1, 1 thread, each
pruned file against the same network's dense file in the same runtime and run, verified files only.

Filter pruning (methods that remove whole units, e.g. unit, unit-gp) must keep accuracy and be
faster in onnxruntime and in LiteRT; weight pruning (methods that store weights sparse: weight,
block and their -gp forms) must make a float32 TFLite file faster than the dense float32 one.
"""
from __future__ import annotations

from dataclasses import dataclass

from report import analysis, facts
from report.markdown import level, missing, pct, table, times, us
from report.pay import passed_paths


@dataclass(frozen=True)
class Target:
    sparsity: float
    points: float | None  # at most this many points below dense (None: no accuracy bound)
    speedup: float  # at least this much faster than dense


FILTER_TARGETS = (Target(50.0, 1.0, 2.5), Target(75.0, 2.0, 5.0))
FILTER_ENGINES = ("onnxruntime", "litert")  # the targets name these two engines (export.runtimes `engine`)
WEIGHT_TARGET = Target(90.0, None, 1.5)  # in a shipped float32 TFLite file
DEVICE_HINT = ("`python -m bundle` a weight-pruned CNN, run the bundle's `bench_device.py` on the board and pass "
               "its results with `python -m report --device-results PATH`")


def _candidates(rows, fw, target, keep) -> list[tuple[float, float, dict, dict]]:
    """(speedup, Δ accuracy, row, dense row) of each row at the target's level that `keep` admits."""
    out = []
    for r in rows:
        if r["framework"] != fw or float(r["sparsity"]) != target.sparsity or not keep(r):
            continue
        dense = analysis.dense_reference(r, rows)
        speed = analysis.ratio(r, rows)
        if dense is None or speed is None or r.get("accuracy") is None or dense.get("accuracy") is None:
            continue
        out.append((speed, r["accuracy"] - dense["accuracy"], r, dense))
    return out


def _pick(found, target):
    """The fastest file within the accuracy bound, else the most accurate one."""
    good = [f for f in found if target.points is None or f[1] >= -target.points]
    return max(good, key=lambda f: (f[0], f[1])) if good else max(found, key=lambda f: (f[1], f[0]))


def _row(fw, target, where, pick) -> list:
    need = (f"≤ {target.points:g} pt, " if target.points is not None else "") + f"≥ {times(target.speedup)}"
    if pick is None:
        return [fw, level(target.sparsity), where, "no verified file at this level", None, None, None, None, need,
                "**not met**"]
    speed, delta, r, dense = pick
    met = speed >= target.speedup and (target.points is None or delta >= -target.points)
    return [fw, level(target.sparsity), where, f"`{r['artifact']}` ({r['runtime']})", us(r["p50_us"]),
            f"{us(dense['p50_us'])} (`{dense['artifact']}`)", times(speed), f"{pct(r['accuracy'])} ({delta:+.2f})",
            need, "met" if met else "**not met**"]


def filter_rows(rows, folders) -> list[list]:
    body = []
    for fw in folders:
        for target in FILTER_TARGETS:
            for eng in FILTER_ENGINES:
                found = _candidates(rows, fw, target, lambda r, e=eng: facts.removes_units(r["method"])
                                    and facts.engine(r["runtime"]) == e)
                body.append(_row(fw, target, eng, _pick(found, target) if found else None))
    return body


def weight_rows(rows, folders) -> list[tuple[list, float | None]]:
    """(table row, measured speedup) per CNN folder for the weight-pruning target."""
    out = []
    for fw in folders:
        found = _candidates(rows, fw, WEIGHT_TARGET, lambda r: facts.stores_sparse(r["method"])
                            and r["format"] == "tflite" and facts.precision(r) == facts.FP32)
        pick = max(found, key=lambda f: (f[0], f[1])) if found else None
        out.append((_row(fw, WEIGHT_TARGET, "LiteRT, float32", pick), None if pick is None else pick[0]))
    return out


def xnnpack_note(inp, measured: list[float]) -> list[str]:
    """Why a weight-pruned TFLite file is not faster on this host; only when it is not and the host is x86."""
    below = [m for m in measured if m is not None and m < WEIGHT_TARGET.speedup]
    if not below or not facts.is_x86(inp.machine):
        return []
    host = ", ".join(str(inp.machine[k]) for k in ("cpu", "arch") if inp.machine.get(k))
    return [f"**Why the weight-pruned TFLite file is not faster here** (best {times(max(below))} against "
            f"≥ {times(WEIGHT_TARGET.speedup)}): this host is an x86 CPU ({host}). On x86 CPUs with AVX, XNNPACK "
            "switches its sparse (CHW) inference path off: `xnn_is_chw_compatible_config` returns false when AVX "
            "is present, so LiteRT densifies the pruned weights at load and runs the dense kernels (measured on "
            "this kind of host: the sparse and dense files give bit-identical outputs, i.e. the same dense "
            "kernels). The nearest real check is an ARM board, where that path is on: " + DEVICE_HINT + ".", ""]


def cnn_targets(inp, d, figs, cfg) -> list[str]:
    lines = ["## Does pruning make the CNN faster?", ""]
    folders = inp.of_network("cnn")
    if not folders:
        return lines + missing("CNN results", "python -m export run --net cnn && make bench")
    ok = passed_paths(inp.manifest)
    rows = [r for r in d.b1 if r["artifact"] in ok]
    if not [r for r in rows if r["framework"] in folders]:
        return lines + missing("benchmark results of verified CNN files",
                               "python -m export run --net cnn && make bench")
    lines += ["Batch 1, 1 thread, host; verified files only. Each pruned file is compared with the same network's "
              "dense (k00) file of the same kind in the same runtime and run; accuracy is each file's own on the "
              "10,000 test images, Δ against that dense file.", "",
              "**Filter pruning** (whole filters removed, the convolutions shrunk): the fastest file within the "
              "accuracy bound on each engine, else the most accurate one.", ""]
    header = ["model", "sparsity", "engine", "file (runtime)", "p50", "dense p50", "speedup", "accuracy (Δ pt)",
              "target", ""]
    lines += table(header, filter_rows(rows, folders))
    weight = weight_rows(rows, folders)
    lines += ["**Weight pruning** (single weights or blocks zeroed, stored sparse) in a shipped float32 TFLite "
              "file, against the dense float32 TFLite file: float32 only, so a speedup is the pruning's, not int8's.",
              ""]
    lines += table(header, [row for row, _ in weight])
    return lines + xnnpack_note(inp, [m for _, m in weight])
