"""Report sections on the benchmark: speed and size, recommendations, targets, where sparsity
gives no speedup, and device results. Same `section(inp, d, figs, cfg) -> list[str]` shape."""
from __future__ import annotations

from report import analysis
from report.facts import REFERENCE
from report.markdown import artifact_name, image, level, missing, pct, size, table, times, us
from report.inputs import Derived, Inputs
from pipeline.train import NETS


def speed_and_size(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = ["## Latency, size and the accuracy/latency trade-off", ""]
    if not inp.results:
        return lines + missing("benchmark results", "make bench")
    lines += image(figs.get("latency"), "latency vs sparsity")
    lines += image(figs.get("size"), "size vs sparsity")
    lines += image(figs.get("pareto"), "accuracy vs latency, Pareto front")
    lines += front_table(d.sel)
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
    return lines + table(["runtime", "format", "variant", "model", "dense p50"]
                         + [f"{m} {level(k)}" for m in methods for k in levels], body)


def front_table(rows) -> list[str]:
    """The numbered points of the Pareto plot: no other file is both faster and more accurate."""
    front = analysis.front_rows([r for r in rows if r.get("accuracy") is not None])
    if not front:
        return []
    body = [[i, artifact_name(r), r["runtime"], us(r["p50_us"]), pct(r["accuracy"]),
             None if r.get("bytes") is None else size(r["bytes"])] for i, r in enumerate(front, start=1)]
    return (["The Pareto front (numbered on the plot, fastest first): no other file is both faster and more "
             "accurate.", ""] + table(["#", "file", "runtime", "p50", "accuracy", "size"], body))


def recommendations(inp: Inputs, d: Derived, figs, cfg) -> list[str]:
    lines = [f"## What to ship: per runtime, within {cfg.tolerance:g} point of dense", ""]
    if not d.sel:
        return lines + missing(f"benchmark results at {cfg.where}", "make bench")
    lines += per_network(inp, d.sel, cfg.tolerance)
    dense = analysis.dense_accuracy_by_framework(d.sel)
    lines += ["Dense reference accuracy: " + ", ".join(f"{fw} {pct(a)}" for fw, a in sorted(dense.items()))
              + "; each artifact is compared with the dense (k00) model of its own folder (network and framework). "
              + f"Latency is p50 at {cfg.where}, on the host.", ""]
    return lines


def per_network(inp: Inputs, rows, tolerance: float) -> list[str]:
    """One recommendation table per network (a file ships as one network or the other)."""
    lines = []
    for net in NETS:
        folders = set(inp.of_network(net))
        mine = [r for r in rows if r["framework"] in folders]
        if mine:
            lines += [f"**{net.upper()}**", ""] + recommendation_table(mine, tolerance)
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
    lines = ["## Is a unit-pruned model faster, and a weight-pruned one smaller?", ""]
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
        unit_variant = variant if any(r.get("variant") == variant for r in same) else REFERENCE.variant
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
    lines += table(["model", "method", "sparsity", "format", "variant", "runtime", "threads", "batch",
                    "status", "p50", "vs dense", "acc."], body)
    on_device = analysis.ok_rows(inp.device, source=None)
    if on_device:
        lines += ["On the device, per runtime (batch 1, 1 thread):", ""]
        lines += per_network(inp, on_device, cfg.tolerance)
    return lines
