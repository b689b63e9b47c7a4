"""Report section: the MLP and the CNN side by side. Which tolerates more pruning, and why.

Per training framework and method, the highest level whose mean accuracy stays within the tolerance
of the same network's dense model (seeds.csv where it has the method, else the manifest's single
seed); then what the trained weights say about the difference: how many weights each network
has, where the CNN keeps them, how often each weight is used per image, and how much of each
layer's energy a few singular directions hold (slack that pruning can remove).
"""
from __future__ import annotations

import numpy as np

from report import analysis, facts
from report.inputs import ENERGY_RANK, as_percent, manifest_accuracy
from report.markdown import image, level, missing, pct, share, table
from pipeline.train import NETS

NAMES = {net: net.upper() for net in NETS}  # how the text names each network: MLP, CNN


def all_curves(inp, d) -> dict:
    """Every (model folder, method) curve: the multi-seed one where seeds.csv has it, else the manifest's."""
    return {**analysis.curves(as_percent(manifest_accuracy(inp.manifest))), **d.curves}


def pairs(inp) -> list[tuple[str, str, str]]:
    """(framework, MLP folder, CNN folder) for each framework both networks were trained in."""
    by = {}
    for folder in inp.frameworks:
        by.setdefault(facts.framework_of(folder), {})[inp.networks.get(folder, "mlp")] = folder
    return [(fw, nets["mlp"], nets["cnn"]) for fw, nets in sorted(by.items()) if {"mlp", "cnn"} <= set(nets)]


def reach_rows(curves, pairs_, tolerance) -> list[dict]:
    out = []
    for fw, mlp, cnn in pairs_:
        methods = sorted({m for f, m in curves if f == mlp} & {m for f, m in curves if f == cnn})
        for method in methods:
            a, b = (analysis.highest_within(curves[(f, method)], tolerance) for f in (mlp, cnn))
            if a is not None and b is not None:
                out.append({"framework": fw, "method": method, "mlp": a, "cnn": b,
                            "mlp_dense": analysis.dense_point(curves[(mlp, method)]),
                            "cnn_dense": analysis.dense_point(curves[(cnn, method)])})
    return out


def _more(r) -> str:
    gap = r["mlp"].sparsity - r["cnn"].sparsity
    return "even" if gap == 0 else NAMES["mlp" if gap > 0 else "cnn"]


def _cell(p, dense) -> str:
    spread = f" ± {p.std:.2f}" if p.n > 1 else ""
    return f"**{level(p.sparsity)}** ({pct(p.mean)}{spread}; dense {pct(dense.mean)}, {p.n} seed(s))"


def verdict(rows) -> str:
    mlp = sum(_more(r) == NAMES["mlp"] for r in rows)
    cnn = sum(_more(r) == NAMES["cnn"] for r in rows)
    lead = (f"The {NAMES['mlp']} tolerates more pruning" if mlp > cnn else
            f"The {NAMES['cnn']} tolerates more pruning" if cnn > mlp else "Neither network tolerates more pruning")
    gaps = [r["mlp"].sparsity - r["cnn"].sparsity for r in rows]
    return (f"{lead}: it stays within tolerance to a higher level in {max(mlp, cnn)} of {len(rows)} "
            f"framework × method pairs ({NAMES['mlp']} higher: {mlp}, {NAMES['cnn']} higher: {cnn}, "
            f"same level: {len(rows) - mlp - cnn}; mean {NAMES['mlp']} − {NAMES['cnn']} = {np.mean(gaps):+.1f} "
            "points of sparsity).")


def layer_label(layer) -> str:
    kernel = getattr(layer, "kernel", ())
    return {"conv2d": f"{'x'.join(map(str, kernel))} conv", "depthwise2d": "depthwise conv",
            "dense": "dense layer"}.get(layer.kind, layer.kind)


def profile(model) -> dict:
    """Weights, their share per layer kind, uses per weight and image, and the mean r90 share of the
    pruned matrix layers (all but the output layer; convs as [out, in x kh x kw]) of the kind that
    holds most weights ("main": the 1x1 convs of a MobileNetV2-style CNN, the dense layers of an MLP)."""
    shapes = model.shapes()
    weighted = model.weighted()
    counts, uses, r90 = {}, 0, {}
    for n, (i, layer) in enumerate(weighted):
        w = layer.dense_weight()
        size = int(w.size)
        counts[layer_label(layer)] = counts.get(layer_label(layer), 0) + size
        out = shapes[i]
        uses += size * (int(np.prod(out[:2])) if len(out) == 3 else 1)
        if n < len(weighted) - 1 and layer.kind != "depthwise2d":
            matrix = w if layer.kind == "dense" else w.reshape(w.shape[0], -1)
            s = analysis.singular_values(matrix)
            r90.setdefault(layer_label(layer), []).append(analysis.rank_for_energy(s, ENERGY_RANK) / s.size)
    total = sum(counts.values())
    shares = {k: v / total for k, v in counts.items()}
    main = max(r90, key=lambda k: shares[k]) if r90 else None  # the matrix layers holding most weights
    return {"weights": total, "shares": shares, "uses": uses / total,
            "main": main, "r90": float(np.mean(r90[main])) if main else None}


def why(inp, pairs_) -> list[str]:
    out = []
    for fw, mlp, cnn in pairs_:
        if mlp not in inp.weights or cnn not in inp.weights:
            continue
        a, b = profile(inp.weights[mlp][1]), profile(inp.weights[cnn][1])
        kinds = ", ".join(f"{share(v)} in {k}s" for k, v in sorted(b["shares"].items(), key=lambda kv: -kv[1]))
        text = (f"- **{fw}**: the {NAMES['cnn']} has {b['weights']:,} weights, {share(b['weights'] / a['weights'])} "
                f"of the {NAMES['mlp']}'s {a['weights']:,} ({kinds}). Each {NAMES['cnn']} weight is used "
                f"{b['uses']:.0f} times per image on average (an {NAMES['mlp']} weight {a['uses']:.0f} time"
                f"{'s' if a['uses'] != 1 else ''}), so every one removed changes "
                f"{'more' if b['uses'] > a['uses'] else 'no more'} of the computation.")
        if a["r90"] is not None and b["r90"] is not None:
            compact = b["r90"] > a["r90"]
            text += (f" {ENERGY_RANK:.0%} of a layer's energy needs {share(b['r90'])} of its singular directions in "
                     f"the {NAMES['cnn']}'s {b['main']}s (mean, kernels as [out, in] matrices) against "
                     f"{share(a['r90'])} in the {NAMES['mlp']}'s {a['main']}s: " +
                     (f"the {NAMES['cnn']}'s {b['main']}s are already compact, with less slack to prune."
                      if compact else f"the {NAMES['cnn']}'s {b['main']}s hold at least as much slack as the "
                                      f"{NAMES['mlp']}'s layers."))
        out.append(text)
    return out + [""] if out else []


def networks_section(inp, d, figs, cfg) -> list[str]:
    lines = ["## MLP or CNN: which tolerates more pruning?", ""]
    present = {inp.networks.get(f, "mlp") for f in inp.frameworks}
    lines += image(figs.get("networks"), "accuracy vs sparsity, MLP and CNN side by side")
    if not {"mlp", "cnn"} <= present:
        have = ", ".join(NAMES.get(n, n) for n in sorted(present)) or "no network"
        return lines + [f"Only {have} in these inputs: the comparison needs both."] + [""] + missing(
            "the other network", "python -m export run --net cnn (or --net mlp), then python -m report --seeds 3")
    curves = all_curves(inp, d)
    rows = reach_rows(curves, pairs(inp), cfg.tolerance)
    if not rows:
        return lines + missing("the same method on both networks", "python -m report --seeds 3")
    lines += [f"Highest sparsity whose mean accuracy stays within {cfg.tolerance:g} point of the same network's "
              "dense model (± standard deviation over seeds where there are several):", ""]
    lines += table(["framework", "method", NAMES["mlp"], NAMES["cnn"], "more tolerant"],
                   [[r["framework"], r["method"], _cell(r["mlp"], r["mlp_dense"]), _cell(r["cnn"], r["cnn_dense"]),
                     _more(r)] for r in rows])
    return lines + [verdict(rows), "", "Why, from the trained weights:", ""] + why(inp, pairs(inp))
