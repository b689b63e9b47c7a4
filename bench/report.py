"""`python -m bench report`: plots + artifacts/report/REPORT.md answering the challenge's questions.

Every number in the text is computed here from seeds.csv / the manifest, results.csv,
the training runs and the trained weights; the prose around it only picks words
("better", "no speedup") from comparisons of those numbers.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import analysis
from bench.report_inputs import Inputs, load_inputs
from pipeline.errors import PrunedgeError, fail
from pipeline.fileio import write_text

Q4_WEIGHT_SHARES = (0.05, 0.10, 0.20)  # "top x% of weights" columns of the Q4 table
Q4_SV_SHARES = (0.10, 0.25)  # "top r% of singular values" columns
NEAR_ZERO = 0.10  # |w| below this fraction of the layer's largest |w| counts as "near zero"
ENERGY_RANK = 0.90  # energy share used for the effective rank r90
HEAVY_TAILS = 1.0  # excess kurtosis above this is clearly heavier-tailed than Gaussian init noise


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    root: Path = Path("artifacts")
    out_dir: Path | None = None  # default: <root>/report
    device_results: tuple[Path, ...] = ()
    tolerance: float = analysis.TOLERANCE  # accuracy points below dense that still count as "no loss"
    seeds: int | None = None  # run bench.seeds.run_seeds first with this many seeds
    frameworks: tuple[str, ...] = ("torch", "tf")
    plots: bool = True  # False: text and tables only (seconds faster; tests and quick looks)
    batch: int = 1  # latency plots, speed table, recommendations: one sample at a time, as on a device
    threads: int = 1  # one core: the case a small board's other work leaves you

    @property
    def where(self) -> str:
        return f"batch {self.batch}, {self.threads} thread{'s' if self.threads > 1 else ''}"


# ---------------------------------------------------------------- formatting

def pct(x: float) -> str:
    return f"{x:.2f}%"


def share(x: float) -> str:
    return f"{100 * x:.1f}%"


def us(x: float) -> str:
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.1f} µs"


def size(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def level(k: float) -> str:
    return f"{k:g}%"


def times(x: float) -> str:
    return f"{x:.2f}×"


def table(headers, rows) -> list[str]:
    """A Markdown table; None cells print as a dash, pipes inside cells are escaped."""
    def cell(c) -> str:
        return "—" if c is None else str(c).replace("|", "\\|")
    out = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return out + [""]


def image(fig: Path | None, alt: str) -> list[str]:
    return [f"![{alt}]({fig.name})", ""] if fig else []


def missing(what: str, hint: str) -> list[str]:
    return [f"_Not available: {what} (run `{hint}`)._", ""]


def method_order(key: tuple[str, str]):
    """(framework, method) with weight before unit before other methods."""
    fw, method = key
    return fw, {"weight": 0, "unit": 1}.get(method, 2), method


def artifact_name(r: dict) -> str:
    return f'`{r["artifact"]}`'


# ---------------------------------------------------------------- derived data

@dataclass
class Derived:
    curves: dict = field(default_factory=dict)  # (framework, method) -> [CurvePoint]
    layers: dict = field(default_factory=dict)  # framework -> [per-layer stats]
    structure: dict = field(default_factory=dict)  # framework -> level -> {weight, unit, widths}
    sel: list = field(default_factory=list)  # host ok rows at the configured batch and threads
    b1: list = field(default_factory=list)  # host ok rows at batch 1, 1 thread (the targets)


def layer_stats(model) -> list[dict]:
    """Q4 statistics of every layer of a dense model; "pruned" is False for the output layer."""
    stats = []
    for i, layer in enumerate(model.layers):
        w = layer.dense_weight()
        s = analysis.singular_values(w)
        stats.append({"shape": w.shape, "weights": w, "sv": s, "pruned": i < len(model.layers) - 1,
                      "near_zero": analysis.near_zero_fraction(w, NEAR_ZERO),
                      "kurtosis": analysis.excess_kurtosis(w),
                      "top_w": {f: analysis.top_weight_energy(w, f) for f in Q4_WEIGHT_SHARES},
                      "top_sv": {f: analysis.top_sv_energy(s, f) for f in Q4_SV_SHARES},
                      "r90": analysis.rank_for_energy(s, ENERGY_RANK)})
    return stats


def stored_weights(model) -> int:
    """Weights a physical model stores: nnz for CSR layers, full size for dense (shrunk) ones."""
    return sum(l.nnz if l.is_sparse else int(np.prod(l.shape)) for l in model.layers)


def structure(model, levels) -> dict[float, dict]:
    """Per level: share of weights removed by weight and by unit pruning, and hidden widths left."""
    from pipeline.prune import prune
    from pipeline.stages import physical
    total = sum(int(np.prod(l.shape)) for l in model.layers)
    out = {}
    for k in levels:
        w = physical(prune(model, "weight", k))
        u = physical(prune(model, "unit", k))
        out[k] = {"weight": 1 - stored_weights(w) / total, "unit": 1 - stored_weights(u) / total,
                  "widths": u.widths[1:-1]}
    return out


def derive(inp: Inputs, cfg: ReportConfig) -> Derived:
    d = Derived(curves=analysis.curves(inp.accuracy), b1=analysis.ok_rows(inp.results),
                sel=analysis.ok_rows(inp.results, batch=cfg.batch, threads=cfg.threads))
    levels = sorted({p.sparsity for pts in d.curves.values() for p in pts} | {0.0})
    for fw, (_, model) in inp.weights.items():
        d.layers[fw] = layer_stats(model)
        d.structure[fw] = structure(model, levels)
    return d


# ---------------------------------------------------------------- figures

def make_figures(inp: Inputs, d: Derived, out: Path) -> dict[str, Path]:
    from bench import plots
    figs: dict[str, Path] = {}
    for fw in sorted({fw for fw, _ in d.curves}):
        figs[f"accuracy_{fw}"] = plots.accuracy_vs_sparsity(d.curves, fw, out / f"accuracy_vs_sparsity_{fw}.png")
    for fw, runs in inp.curves.items():
        figs[f"learning_{fw}"] = plots.learning_curves(runs, fw, out / f"learning_curves_{fw}.png")
    if d.sel:
        figs["latency"] = plots.latency_vs_sparsity(d.sel, out / "latency_vs_sparsity.png")
        with_acc = [r for r in d.sel if r.get("accuracy") is not None]
        if with_acc:
            figs["pareto"] = plots.pareto(with_acc, out / "pareto_accuracy_latency.png")
    arts = analysis.unique_artifacts([r for r in inp.results if r.get("status") == "ok"])
    if arts:
        figs["size"] = plots.size_vs_sparsity(arts, out / "size_vs_sparsity.png")
    for fw, stats in d.layers.items():
        names = [f"layer {i}" + ("" if s["pruned"] else " (output, not pruned)") for i, s in enumerate(stats)]
        figs[f"weights_{fw}"] = plots.weight_histograms([s["weights"] for s in stats], fw,
                                                        out / f"weight_histogram_{fw}.png", names=names,
                                                        pruned=[s["pruned"] for s in stats])
        figs[f"spectra_{fw}"] = plots.singular_spectra([s["sv"] for s in stats], fw,
                                                       out / f"singular_values_{fw}.png", names=names)
    return figs


# ---------------------------------------------------------------- sections

def header(inp: Inputs, d: Derived, figs, cfg: ReportConfig) -> list[str]:
    lines = ["# prunedge report: how far can this MLP be pruned, and what should ship?", "",
             "Generated by `python -m bench report` from these inputs:", ""]
    if inp.accuracy:
        n = max(p.n for pts in d.curves.values() for p in pts)
        lines.append(f"- accuracy vs sparsity: `{inp.accuracy_source}` ({n} seed(s) per point, "
                     "numpy reference on the 10,000 test images)")
    if inp.results_path:
        lines.append(f"- latency, size, runtime accuracy: `{inp.results_path}` ({len(inp.results)} host rows)")
    for fw, (path, _) in sorted(inp.weights.items()):
        lines.append(f"- weights for Q3/Q4 ({fw}): `{path}`")
    for path in inp.device_paths:
        lines.append(f"- device results: `{path}`")
    machine = {k: v for k, v in inp.machine.items() if isinstance(v, (str, int, float))}
    if machine:
        lines += ["", "Host: " + ", ".join(f"{k} {v}" for k, v in sorted(machine.items()))]
    return lines + ["", f"\"Within {cfg.tolerance:g} point of dense\" means test accuracy at most "
                        f"{cfg.tolerance:g} percentage point below the same framework's unpruned model.", ""]


def q1(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = ["## Q1. How does accuracy degrade with sparsity?", ""]
    if not d.curves:
        return lines + missing("accuracy vs sparsity", "make bench SEEDS=3")
    for fw in sorted({fw for fw, _ in d.curves}):
        lines += image(figs.get(f"accuracy_{fw}"), f"accuracy vs sparsity, {fw}")
    keys = sorted(d.curves, key=method_order)
    levels = sorted({p.sparsity for k in keys for p in d.curves[k]})
    body = []
    for k in levels:
        row = [level(k)]
        for key in keys:
            p = next((p for p in d.curves[key] if p.sparsity == k), None)
            row.append(None if p is None else pct(p.mean) + (f" ± {p.std:.2f}" if p.n > 1 else ""))
        body.append(row)
    lines += table(["sparsity"] + [f"{fw} {m}" for fw, m in keys], body)
    lines.append("Mean test accuracy over seeds (± standard deviation when there are several).")
    lines.append("")
    for fw, method in keys:
        lines.append("- " + degradation_sentence(fw, method, d.curves[(fw, method)], cfg.tolerance))
    return lines + [""]


def degradation_sentence(fw: str, method: str, pts, tolerance: float) -> str:
    dense = analysis.dense_point(pts)
    if dense is None:
        return f"**{fw} {method}**: no dense (k00) accuracy to compare with."
    within = analysis.highest_within(pts, tolerance)
    cliff = analysis.first_below(pts, analysis.CLIFF_POINTS)
    step = analysis.largest_step(pts)
    last = pts[-1]
    text = f"**{fw} {method} pruning**: dense {pct(dense.mean)}; "
    if within.sparsity > 0:
        text += f"stays within {tolerance:g} point up to {level(within.sparsity)} ({pct(within.mean)})"
    else:
        first = next(p for p in pts if p.sparsity > 0)
        text += f"already more than {tolerance:g} point below dense at {level(first.sparsity)} ({pct(first.mean)})"
    if cliff is not None:
        text += (f"; first more than {analysis.CLIFF_POINTS:g} points below dense at {level(cliff.sparsity)} "
                 f"({pct(cliff.mean)})")
    else:
        text += f"; never more than {analysis.CLIFF_POINTS:g} points below dense"
    if step is not None and step[2] > 0:
        text += (f"; the steepest step is {level(step[0].sparsity)} → {level(step[1].sparsity)} "
                 f"(−{step[2]:.2f} points)")
    return text + f"; at {level(last.sparsity)}: {pct(last.mean)}."


def q2(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = [f"## Q2. Highest sparsity within {cfg.tolerance:g} point of dense", ""]
    if not d.curves:
        return lines + missing("accuracy vs sparsity", "make bench SEEDS=3")
    body = []
    for fw, method in sorted(d.curves, key=method_order):
        pts = d.curves[(fw, method)]
        dense, best = analysis.dense_point(pts), analysis.highest_within(pts, cfg.tolerance)
        if dense is None:
            continue
        nxt = next((p for p in pts if p.sparsity > best.sparsity), None)
        body.append([fw, method, pct(dense.mean), f"**{level(best.sparsity)}**", pct(best.mean),
                     f"{best.mean - dense.mean:+.2f}",
                     None if nxt is None else f"{level(nxt.sparsity)}: {pct(nxt.mean)}", best.n])
    lines += table(["framework", "method", "dense", "highest level within", "accuracy there",
                    "Δ points", "next level", "seeds"], body)
    return lines + [f"Decided on the mean over seeds; \"next level\" is the first level tested above it.", ""]


def q3(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = ["## Q3. Do weight and unit pruning differ, and why?", ""]
    fws = sorted({fw for fw, m in d.curves if m == "weight"} & {fw for fw, m in d.curves if m == "unit"})
    if not fws:
        return lines + missing("accuracy of both weight and unit pruning", "make bench SEEDS=3")
    for fw in fws:
        gaps = analysis.gap_at(d.curves, fw, "weight", "unit")
        st = d.structure.get(fw, {})
        body = []
        for k, gap in gaps:
            w = next(p for p in d.curves[(fw, "weight")] if p.sparsity == k)
            u = next(p for p in d.curves[(fw, "unit")] if p.sparsity == k)
            s = st.get(k)
            body.append([level(k), pct(w.mean), pct(u.mean), f"{gap:+.2f}",
                         None if s is None else share(s["weight"]), None if s is None else share(s["unit"]),
                         None if s is None else "-".join(map(str, s["widths"]))])
        lines += [f"**{fw}**", ""]
        lines += table(["sparsity", "weight acc.", "unit acc.", "weight − unit (points)",
                        "weights removed (weight)", "weights removed (unit)", "hidden widths after unit"], body)
        lines += q3_findings(fw, gaps, d, cfg)
    lines += [
        "Why: weight pruning removes the smallest individual weights wherever they are, so every layer",
        "keeps its full width and the largest weights of each layer survive; the network's",
        "representational width is intact and only low-magnitude detail is lost. Unit pruning removes",
        "whole neurons: a layer of width n becomes one of width (1−k)·n. Each removed unit takes a column",
        "of its own matrix and a row of the next, so between two pruned layers the share of weights removed",
        "grows like 1−(1−k)² (compare the two \"weights removed\" columns), and the rank of every layer's",
        "map is capped by the units kept. Once fewer units remain than the directions a layer actually uses",
        "(its effective rank r90, Q4), the network loses representational capacity and accuracy drops fast.", ""]
    return lines


def q3_findings(fw: str, gaps, d: Derived, cfg) -> list[str]:
    out = []
    shared = [(k, g) for k, g in gaps if k > 0]
    if not shared:
        return out
    k_max, g_max = max(shared, key=lambda kg: abs(kg[1]))
    winner = "weight" if g_max > 0 else "unit"
    mean_gap = float(np.mean([g for _, g in shared]))
    out.append(f"- Largest difference at {level(k_max)}: {winner} pruning is {abs(g_max):.2f} points more "
               f"accurate; averaged over the pruned levels weight − unit = {mean_gap:+.2f} points.")
    st = d.structure.get(fw, {})
    if k_max in st:
        s = st[k_max]
        out.append(f"- At {level(k_max)} unit pruning removes {share(s['unit'])} of all weights and weight "
                   f"pruning {share(s['weight'])} (the output layer is never pruned).")
    unit_pts = d.curves[(fw, "unit")]
    cliff = analysis.first_below(unit_pts, analysis.CLIFF_POINTS)
    stats = [s for s in d.layers.get(fw, []) if s["pruned"]]
    if cliff is not None and stats and cliff.sparsity in st:
        widths = st[cliff.sparsity]["widths"]
        pairs = [f"layer {i}: {w} units kept vs r90 = {s['r90']}" for i, (w, s) in enumerate(zip(widths, stats))]
        below = sum(w < s["r90"] for w, s in zip(widths, stats))
        out.append(f"- Unit pruning first loses more than {analysis.CLIFF_POINTS:g} points at "
                   f"{level(cliff.sparsity)}; "
                   f"there {below} of {len(stats)} layers keep fewer units than the number of singular values "
                   f"holding {ENERGY_RANK:.0%} of their energy (" + "; ".join(pairs) + ").")
    return out + [""]


def q4(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = ["## Q4. Why can so much of the network be deleted?", ""]
    if not d.layers:
        return lines + missing("trained weights", "make train")
    for fw, stats in sorted(d.layers.items()):
        lines += image(figs.get(f"weights_{fw}"), f"weight histograms, {fw}")
        lines += image(figs.get(f"spectra_{fw}"), f"singular values, {fw}")
        body = [[i, "×".join(map(str, s["shape"])), "yes" if s["pruned"] else "no (output)",
                 f"{s['kurtosis']:.1f}", share(s["near_zero"])]
                + [share(s["top_w"][f]) for f in Q4_WEIGHT_SHARES]
                + [share(s["top_sv"][f]) for f in Q4_SV_SHARES]
                + [f"{s['r90']} / {s['sv'].size}"] for i, s in enumerate(stats)]
        lines += [f"**{fw}**", ""]
        lines += table(["layer", "shape", "pruned", "excess kurtosis", f"|w| < {NEAR_ZERO:g}·max |w|"]
                       + [f"energy in top {f:.0%} of weights" for f in Q4_WEIGHT_SHARES]
                       + [f"energy in top {f:.0%} of singular values" for f in Q4_SV_SHARES]
                       + [f"r{ENERGY_RANK * 100:.0f} (values for {ENERGY_RANK:.0%} energy)"], body)
        lines += q4_findings(fw, [s for s in stats if s["pruned"]], d, inp, cfg.tolerance)
    lines += ["Energy is the squared Frobenius norm, sum of w² (equivalently the sum of σ²).", ""]
    return lines


def q4_findings(fw: str, stats, d: Derived, inp: Inputs, tolerance: float) -> list[str]:
    out = []
    kurt = [s["kurtosis"] for s in stats]
    near = [s["near_zero"] for s in stats]
    heavy = min(kurt) > HEAVY_TAILS
    out.append(f"- Weight distribution: excess kurtosis {span(kurt, '{:.1f}')} across {fw}'s {len(stats)} pruned "
               f"layers (0 for a Gaussian), and {span(near, None)} of the weights are below "
               f"{NEAR_ZERO:g}× their layer's largest magnitude. " + (
                   "The distribution is a sharp peak at zero with heavy tails: most weights are tiny, "
                   "a few are large."
                   if heavy else f"At least one layer is close to Gaussian (excess kurtosis ≤ {HEAVY_TAILS:g}): "
                                 "its small weights are not much more numerous than in a random matrix."))
    top10, gauss = [s["top_w"][0.10] for s in stats], analysis.gaussian_top_energy(0.10)
    text = (f"- The largest 10% of weights hold {span(top10, None)} of each layer's energy (Gaussian weights: "
            f"{share(gauss)}), so 90% weight pruning deletes {span([1 - t for t in top10], None)} of it")
    pts = d.curves.get((fw, "weight"), [])
    dense = analysis.dense_point(pts)
    at90 = next((p for p in pts if p.sparsity == 90.0), None)
    if dense is not None and at90 is not None:
        cost = dense.mean - at90.mean
        text += (f", yet accuracy at 90% changes by only {-cost:+.2f} points" if cost <= tolerance
                 else f", and accuracy at 90% changes by {-cost:+.2f} points")
    out.append(text + ".")
    sv10 = [s["top_sv"][0.10] for s in stats]
    r90 = [s["r90"] / s["sv"].size for s in stats]
    text = (f"- Singular values: the top 10% hold {span(sv10, None)} of the energy and "
            f"{ENERGY_RANK:.0%} of it needs "
            f"{span(r90, None)} of them (r90). ")
    text += ("Each layer's map lives mostly in a subspace narrower than the layer, the slack unit pruning "
             "can remove until the kept width falls below r90." if max(r90) < 0.75 else
             "The energy is spread over most singular directions, so every unit removed takes signal with it.")
    out.append(text)
    n_train = {i.get("n_train") for i in inp.train_info.get(fw, {}).values()} - {None}
    if fw in inp.weights and n_train:
        n_params = inp.weights[fw][1].n_params
        text = (f"- Over-parameterisation: {n_params:,} parameters fitted to {min(n_train):,} training images "
                f"({n_params / min(n_train):.0f} per image)")
        best = analysis.highest_within(pts, tolerance) if pts else None
        if best is not None and best.sparsity > 0:
            text += (f"; weight pruning stays within {tolerance:g} point of dense up to {level(best.sparsity)}, "
                     f"so at least that share of the pruned layers' weights is redundant for this task")
        out.append(text + ".")
    return out + [""]


def span(values, fmt: str | None) -> str:
    """"a to b" (or one value when equal), as shares when fmt is None."""
    f = share if fmt is None else fmt.format
    lo, hi = f(min(values)), f(max(values))
    return lo if lo == hi else f"{lo} to {hi}"


def training(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = ["## Learning curves", ""]
    if not inp.curves:
        return lines + missing("training runs", "make train")
    body = []
    for fw, runs in sorted(inp.curves.items()):
        lines += image(figs.get(f"learning_{fw}"), f"learning curves, {fw}")
        for seed, c in sorted(runs.items()):
            info = inp.train_info.get(fw, {}).get(seed, {})
            body.append([fw, seed, len(c.get("train_loss") or []), _acc(c, "train_acc"), _acc(c, "val_acc"),
                         None if info.get("test_accuracy") is None else pct(_as_pct(info["test_accuracy"])),
                         None if info.get("wall_time_s") is None else f"{info['wall_time_s']:.0f} s"])
    lines += ["Solid: training (mean over each epoch's batches); dashed: validation (5,000 held-out "
              "training images).", ""]
    return lines + table(["framework", "seed", "epochs", "final train acc.", "final val. acc.",
                          "test acc.", "training time"], body)


def _as_pct(x: float) -> float:
    return 100.0 * x if x <= 1.0 else x


def _acc(curves: dict, key: str) -> str | None:
    values = curves.get(key) or []
    return pct(_as_pct(values[-1])) if values and values[-1] is not None else None


def speed_and_size(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = ["## Latency, size and the accuracy/latency trade-off", ""]
    if not inp.results:
        return lines + missing("benchmark results", "make bench")
    lines += image(figs.get("latency"), "latency vs sparsity")
    lines += image(figs.get("size"), "size vs sparsity")
    lines += image(figs.get("pareto"), "accuracy vs latency, Pareto front")
    levels = [k for k in (90.0, 99.0) if any(float(r["sparsity"]) == k for r in d.sel)]
    methods = [m for m in ("weight", "unit") if any(r["method"] == m for r in d.sel)]
    groups = sorted({(r["runtime"], r["format"], r.get("variant") or "", r["framework"]) for r in d.sel})
    body = []
    for runtime, fmt, variant, fw in groups:
        rs = [r for r in d.sel if (r["runtime"], r["format"], r.get("variant") or "", r["framework"])
              == (runtime, fmt, variant, fw)]
        dense = analysis.dense_reference(rs[0], d.sel)
        row = [runtime, fmt, variant or None, fw, None if dense is None else us(dense["p50_us"])]
        for m in methods:
            for k in levels:
                hit = [analysis.ratio(r, d.sel) for r in rs if r["method"] == m and float(r["sparsity"]) == k]
                hit = [h for h in hit if h is not None]
                row.append(times(hit[0]) if hit else None)
        body.append(row)
    lines += [f"Speedup over the dense k00 model in the same runtime (ratio_vs_dense, {cfg.where}; "
              "variants without a k00 file, such as sparse storage, are compared with the fp32 k00):", ""]
    return lines + table(["runtime", "format", "variant", "framework", "dense p50"]
                         + [f"{m} {level(k)}" for m in methods for k in levels], body)


def recommendations(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = [f"## Recommendation: what to ship per runtime (within {cfg.tolerance:g} point of dense)", ""]
    if not d.sel:
        return lines + missing(f"benchmark results at {cfg.where}", "make bench")
    lines += recommendation_table(d.sel, cfg.tolerance)
    dense = analysis.dense_accuracy_by_framework(d.sel)
    lines += ["Dense reference accuracy: " + ", ".join(f"{fw} {pct(a)}" for fw, a in sorted(dense.items()))
              + "; each artifact is compared with its own framework's dense model. "
              + f"Latency is p50 at {cfg.where}, on the host.", ""]
    return lines


def recommendation_table(rows, tolerance: float) -> list[str]:
    picks = analysis.recommend(rows, tolerance)
    body = []
    for runtime, pick in picks.items():
        s, f = pick["smallest"], pick["fastest"]
        body.append([runtime,
                     None if s is None else artifact_name(s), None if s is None else size(s["bytes"]),
                     None if s is None or s.get("gzip_bytes") is None else size(s["gzip_bytes"]),
                     None if s is None else pct(s["accuracy"]),
                     artifact_name(f), us(f["p50_us"]), pct(f["accuracy"])])
    if not body:
        return ["_No artifact is within tolerance of its dense model in these results._", ""]
    return table(["runtime", "smallest artifact", "size", "gzip", "acc.", "fastest artifact", "p50", "acc."], body)


def targets(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = ["## Targets", ""]
    if not inp.results:
        return lines + missing("benchmark results", "make bench")
    sp = analysis.speedups(d.b1, method="unit", sparsity=90.0, runtime="onnxruntime", fmt="onnx")
    lines.append("**Unit pruning 90%, shrunk ONNX in onnxruntime (batch 1, 1 thread):** " + (
        "; ".join(f"{fw}: {times(v)} faster than dense ({us(v * r['p50_us'])} → {us(r['p50_us'])})"
                  for fw, (v, r) in sorted(sp.items())) if sp else "no fp32 unit k90 ONNX rows in onnxruntime."))
    lines.append("")
    for batch in (1, 64):
        rows = analysis.ok_rows(inp.results, batch=batch, threads=1)
        cross = analysis.csr_crossover(rows, batch=batch)
        lines.append(f"**SciPy CSR vs numpy dense, batch {batch}, 1 thread:** " + (
            "; ".join(crossover_text(fw, c) for fw, c in sorted(cross.items()))
            if cross else "no scipy-csr / numpy rows at this batch size."))
        lines.append("")
    ok = [r for r in inp.results if r.get("status") == "ok"]
    small = analysis.smallest_at(ok, method="weight", sparsity=90.0)
    if small:
        a, dense = small
        lines.append(f"**Smallest weight-pruned artifact at 90%:** {artifact_name(a)}, {size(a['gzip_bytes'])} "
                     f"gzipped vs {size(dense['gzip_bytes'])} for dense {artifact_name(dense)}: "
                     f"{times(dense['gzip_bytes'] / a['gzip_bytes'])} smaller "
                     f"(size ratio {a['gzip_bytes'] / dense['gzip_bytes']:.3f}).")
    else:
        lines.append("**Smallest weight-pruned artifact at 90%:** no weight k90 artifact with a gzip size.")
    return lines + [""]


def crossover_text(fw: str, c: dict) -> str:
    best_k, best_us, best_ratio = max(c["points"], key=lambda p: p[2])
    top = max(k for k, _, _ in c["points"])
    head = (f"{fw}: CSR is faster than dense numpy ({us(c['dense_us'])}) from {level(c['level'])} sparsity on"
            if c["level"] is not None
            else f"{fw}: CSR is not faster than dense numpy ({us(c['dense_us'])}) even at {level(top)}")
    return head + f" (best {times(best_ratio)} at {level(best_k)}, {us(best_us)})"


def no_speedup(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = ["## Where sparsity gives no speedup", ""]
    if not d.sel:
        return lines + missing(f"benchmark results at {cfg.where}", "make bench")
    flat = analysis.no_speedup_runtimes(d.sel)
    if not flat:
        return lines + [f"Every runtime's best speedup from weight pruning at ≥ {level(analysis.HIGH_SPARSITY)} "
                        f"is at least {times(analysis.NO_SPEEDUP_BAND)}.", ""]
    lines.append(f"Weight pruning at ≥ {level(analysis.HIGH_SPARSITY)} stays below a "
                 f"{times(analysis.NO_SPEEDUP_BAND)} speedup ({cfg.where}) in:")
    lines.append("")
    for (runtime, fmt, variant), best in flat.items():
        same = [r for r in d.sel if r["format"] == fmt and r["runtime"] == runtime and r["method"] == "unit"]
        unit_variant = variant if any(r.get("variant") == variant for r in same) else "fp32"
        unit = analysis.best_speedup([r for r in same if r.get("variant") == unit_variant],
                                     runtime=runtime, method="unit")
        text = (f"- **{runtime}** ({fmt}{' ' + variant if variant else ''}): best {times(best)}. "
                + why_flat(inp, runtime, fmt, variant))
        if unit is not None:
            text += f" Unit pruning, which shrinks the matrices, reaches {times(unit)} in the same runtime."
        lines.append(text)
    return lines + ["", "Zeros only save time when the kernel skips them; a dense kernel multiplies them like any "
                        "other weight, so only smaller matrices (unit pruning) or a sparse kernel pay off.", ""]


def why_flat(inp: Inputs, runtime: str, fmt: str, variant) -> str:
    """Evidence from the manifest for why a runtime gains nothing from zeros."""
    paths = {r["artifact"] for r in inp.results if r["runtime"] == runtime and r["format"] == fmt
             and r.get("variant") == variant and r["method"] == "weight" and float(r["sparsity"]) > 0}
    files = [f for f in inp.manifest.get("files", []) if f.get("path") in paths]
    if any("densify" in str(op).lower() for f in files for op in f.get("ops") or []):
        return "Its files contain a DENSIFY op: the sparse weights are expanded to dense tensors at load."
    if files and all(f.get("runs_sparse") for f in files):
        return ("The files store the weights sparse, yet latency does not move with sparsity: "
                "this runtime densifies them at load.")
    if files:
        return "The manifest records runs_sparse = false: the weights reach a dense kernel, zeros included."
    return "The zeros are still multiplied by a dense kernel."


def device(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    if not inp.device:
        return []
    lines = ["## Device results", ""]
    body = [[r["framework"], r["method"], level(float(r["sparsity"])), r["format"], r.get("variant"), r["runtime"],
             r["threads"], r["batch"], r["status"], None if r.get("p50_us") is None else us(r["p50_us"]),
             None if analysis.ratio(r, inp.device) is None or r.get("p50_us") is None
             else times(analysis.ratio(r, inp.device)),
             None if r.get("accuracy") is None else pct(r["accuracy"])]
            for r in sorted(inp.device, key=lambda r: (r["runtime"], r["framework"], r["method"],
                                                       float(r["sparsity"]), str(r.get("variant")),
                                                       r["threads"], r["batch"]))]
    lines += table(["framework", "method", "sparsity", "format", "variant", "runtime", "threads", "batch",
                    "status", "p50", "vs dense", "acc."], body)
    on_device = analysis.ok_rows(inp.device, source=None)
    if on_device:
        lines += ["On the device, per runtime (batch 1, 1 thread):", ""]
        lines += recommendation_table(on_device, cfg.tolerance)
    return lines


SECTIONS = (header, q1, q2, q3, q4, training, speed_and_size, recommendations, targets, no_speedup, device)


def build(cfg: ReportConfig) -> Path:
    """Load the inputs, draw the figures and write REPORT.md; returns its path."""
    if cfg.seeds:
        from bench.seeds import run_seeds
        run_seeds(cfg.seeds, frameworks=cfg.frameworks, root=cfg.root)
    out = Path(cfg.out_dir or Path(cfg.root) / "report")
    inp = load_inputs(Path(cfg.root), cfg.device_results)
    d = derive(inp, cfg)
    figs = make_figures(inp, d, out) if cfg.plots else {}
    lines = []
    for section in SECTIONS:
        lines += section(inp, d, figs, cfg)
    return write_text(out / "REPORT.md", "\n".join(lines).rstrip() + "\n")


# ---------------------------------------------------------------- CLI

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench report",
        description="Plots and <root>/report/REPORT.md answering the challenge's questions, every number "
                    "computed from seeds.csv (or the export manifest), results.csv and the trained weights.")
    p.add_argument("--root", type=Path, default=Path("artifacts"), help="artifacts directory (default: artifacts)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: <root>/report)")
    p.add_argument("--device-results", type=Path, action="append", default=[], metavar="PATH",
                   help="results .csv/.json from a device bundle run (repeatable); gets its own table")
    p.add_argument("--tolerance", type=float, default=analysis.TOLERANCE,
                   help="accuracy points below dense still counted as no loss (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="first compute accuracy vs sparsity over seeds 0..N-1 (trains missing seeds)")
    p.add_argument("--batch", type=int, default=1,
                   help="batch size of the latency plots, speed table and recommendations (default: 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="thread count of the latency plots, speed table and recommendations (default: 1)")
    p.add_argument("--no-plots", action="store_true", help="text and tables only, no PNGs")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if not 0 <= args.tolerance < 100:
            raise fail("--tolerance", f"must be in [0, 100) points, got {args.tolerance}")
        for option, value in (("--batch", args.batch), ("--threads", args.threads)):
            if value < 1:
                raise fail(option, f"must be >= 1, got {value}")
        if args.seeds is not None and args.seeds < 1:
            raise fail("--seeds", f"must be >= 1, got {args.seeds}")
        for path in args.device_results:
            if not path.is_file():
                raise fail(path, "device results file not found")
        path = build(ReportConfig(root=args.root, out_dir=args.out, device_results=tuple(args.device_results),
                                  tolerance=args.tolerance, seeds=args.seeds, plots=not args.no_plots,
                                  batch=args.batch, threads=args.threads))
    except PrunedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
