"""Report sections answering the challenge's questions Q1-Q4, and the training section.

Each section is `section(inp, d, figs, cfg) -> list[str]` of Markdown lines; numbers come from
`d` (report.inputs.Derived) and the prose only picks words from comparisons of them.
"""
from __future__ import annotations

import numpy as np

from report import analysis
from report.markdown import image, level, method_order, missing, pct, share, span, table
from report.inputs import ENERGY_RANK, NEAR_ZERO, Q4_SV_SHARES, Q4_WEIGHT_SHARES, Derived, Inputs

HEAVY_TAILS = 1.0  # excess kurtosis above this is clearly heavier-tailed than Gaussian init noise


def q1(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = ["## How does accuracy fall as the network is pruned?", ""]
    if not d.curves:
        return lines + missing("accuracy vs sparsity", "python -m report --seeds 3")
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
    lines = [f"## How far can each model be pruned within {cfg.tolerance:g} point of dense?", ""]
    if not d.curves:
        return lines + missing("accuracy vs sparsity", "python -m report --seeds 3")
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
    lines += table(["model", "method", "dense", "highest level within", "accuracy there",
                    "Δ points", "next level", "seeds"], body)
    return lines + [f"Decided on the mean over seeds; \"next level\" is the first level tested above it.", ""]


def q3(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = ["## Weight or unit pruning: which keeps more accuracy, and why?", ""]
    fws = sorted({fw for fw, m in d.curves if m == "weight"} & {fw for fw, m in d.curves if m == "unit"})
    if not fws:
        return lines + missing("accuracy of both weight and unit pruning", "python -m report --seeds 3")
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
        "(its effective rank r90, next section), the network loses representational capacity and accuracy drops fast.", ""]
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
    lines = ["## Why can so much of the MLP be deleted?", ""]
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




def training(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = ["## How the models trained", ""]
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
    return lines + table(["model", "seed", "epochs", "final train acc.", "final val. acc.",
                          "test acc.", "training time"], body)


def _as_pct(x: float) -> float:
    return 100.0 * x if x <= 1.0 else x


def _acc(curves: dict, key: str) -> str | None:
    values = curves.get(key) or []
    return pct(_as_pct(values[-1])) if values and values[-1] is not None else None
