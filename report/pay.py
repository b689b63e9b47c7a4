"""Report section: does weight pruning pay at run time on the MLP? Its speed targets, the per-layer
(auto) choices and which delegate each sparse LiteRT file ships with, all computed from results +
manifest.

Speedups compare a file with the dense (k00) file of the *same precision* (the file-kind table's
`precision`) on the same engine (the runtime table's `engine`), format, framework, batch and
threads: a block-sparse float32 file with the dense float32 one, an int8 mix with dense int8, each
in its fastest setting of that engine (LiteRT with or without XNNPACK). Only files that passed
verification count."""
from __future__ import annotations

from collections import Counter

from report import analysis, facts
from report.markdown import level, missing, pct, size, table, times, us
from report.inputs import as_percent, manifest_accuracy
from pipeline.methods import base_name as base_method

SPEED_TARGETS = {90.0: 2.5, 95.0: 4.5}  # sparsity -> required speedup over dense, same precision
BEST_SPEEDUP, BEST_SIZE = 10.0, 0.1  # best artifact vs dense fp32 TFLite: >= 10x faster, <= 1/10 size
ACCURACY_TARGETS = {"weight": 95.0, "unit": 80.0}  # fine-tuned method base -> level to stay within


def passed_paths(manifest: dict) -> set[str]:
    return {f["path"] for f in manifest.get("files", []) if (f.get("verify") or {}).get("status") == "passed"}


def same_precision_dense(row: dict, rows: list[dict]) -> dict | None:
    """The fastest dense (k00) file of the row's precision in the row's runtime (any LiteRT delegate
    setting), so a sparse kernel is never credited for beating a dense file run the slow way."""
    want = facts.precision(row)
    match = [r for r in rows if float(r["sparsity"]) == 0 and facts.precision(r) == want
             and facts.engine(r["runtime"]) == facts.engine(row["runtime"])
             and all(r.get(k) == row.get(k) for k in ("framework", "format", "batch", "threads"))]
    return min(match, key=lambda r: (r["p50_us"], r["method"] != "weight", r["artifact"])) if match else None


def _shipped_rows(inp) -> list[dict]:
    ok = passed_paths(inp.manifest)
    return [r for r in analysis.ok_rows(inp.results) if r["artifact"] in ok and r.get("accuracy") is not None]


def speed_target_rows(rows: list[dict], dense_acc: dict, tolerance: float) -> list[list]:
    """Per level and framework, two readings of the target: the fastest file, and the file with the
    largest speedup over its own precision's dense file (one row when they are the same file)."""
    body = []
    for k, need in SPEED_TARGETS.items():
        for fw in sorted(dense_acc):
            found = []
            for r in rows:
                if (r["framework"] != fw or float(r["sparsity"]) != k or not facts.stores_sparse(r["method"])
                        or r["accuracy"] < dense_acc[fw] - tolerance):
                    continue
                dense = same_precision_dense(r, rows)
                if dense is not None:
                    found.append((dense["p50_us"] / r["p50_us"], r, dense))
            if not found:
                body.append([level(k), fw, "—", "no verified weight/block file within tolerance", None, None, None,
                             None, None, f"≥ {times(need)}", "**missed**"])
                continue
            fastest = min(found, key=lambda f: (f[1]["p50_us"], -f[0]))
            largest = max(found, key=lambda f: (f[0], -f[1]["p50_us"]))
            picks = [("fastest file", fastest)] + ([("largest speedup", largest)] if largest is not fastest else [])
            if len(picks) == 1:
                picks = [("fastest file, largest speedup", fastest)]
            for which, (speed, r, dense) in picks:
                body.append([level(k), fw, which, f"`{r['artifact']}`", r["runtime"], us(r["p50_us"]),
                             f"{us(dense['p50_us'])} ({dense.get('variant')}, {dense['runtime']})", times(speed),
                             f"{pct(r['accuracy'])} ({r['accuracy'] - dense_acc[fw]:+.2f})", f"≥ {times(need)}",
                             "met" if speed >= need else "**missed**"])
    return body


def best_artifact_rows(rows: list[dict], dense_acc: dict, tolerance: float) -> list[list]:
    body = []
    for fw in sorted(dense_acc):
        good = [r for r in rows if r["framework"] == fw and r["accuracy"] >= dense_acc[fw] - tolerance]
        plain = facts.plain_kind("tflite", facts.FP32)
        dense = [r for r in rows if r["framework"] == fw and float(r["sparsity"]) == 0 and plain is not None
                 and (r["format"], r.get("variant")) == (plain.format, plain.variant)]
        if not good or not dense:
            continue
        best = min(good, key=lambda r: (r["p50_us"], r.get("bytes") or 0, r["artifact"]))
        ref = min(dense, key=lambda r: r["p50_us"])  # the fastest runtime for the dense fp32 file
        speed, shrink = ref["p50_us"] / best["p50_us"], best["bytes"] / ref["bytes"]
        body.append([fw, f"`{best['artifact']}` ({best['runtime']})", us(best["p50_us"]), pct(best["accuracy"]),
                     size(best["bytes"]), f"`{ref['artifact']}` ({ref['runtime']}) {us(ref['p50_us'])}, "
                     f"{size(ref['bytes'])}", times(speed), f"1/{1 / shrink:.0f}",
                     "met" if speed >= BEST_SPEEDUP and shrink <= BEST_SIZE else "**missed**"])
    return body


def accuracy_target_rows(curves: dict, tolerance: float) -> list[list]:
    body = []
    for (fw, method), points in sorted(curves.items()):
        base = base_method(method)
        if method == base or base not in ACCURACY_TARGETS:
            continue
        reach = analysis.highest_within(points, tolerance)
        need = ACCURACY_TARGETS[base]
        at = {p.sparsity: p.mean for p in points}
        dense = analysis.dense_point(points)
        body.append([fw, method, "—" if reach is None else level(reach.sparsity), f"≥ {level(need)}",
                     None if need not in at or dense is None else f"{pct(at[need])} ({at[need] - dense.mean:+.2f})",
                     "met" if reach is not None and reach.sparsity >= need else "**missed**"])
    return body


def auto_rows(inp) -> list[list]:
    b1 = analysis.ok_rows(inp.results)
    body = []
    for f in sorted((f for f in inp.manifest.get("files", []) if f.get("layer_formats")), key=lambda f: f["path"]):
        timed = sorted((r for r in b1 if r["artifact"] == f["path"]), key=lambda r: r["p50_us"])
        fastest = timed[0] if timed else None
        dense = same_precision_dense(fastest, b1) if fastest else None
        body.append([f"`{f['path']}`", " · ".join(f["layer_formats"]), (f.get("verify") or {}).get("status"),
                     f.get("delegate"), None if fastest is None else f"{us(fastest['p50_us'])} ({fastest['runtime']})",
                     None if dense is None else times(dense["p50_us"] / fastest["p50_us"])])
    return body


def delegate_rows(manifest: dict) -> list[list]:
    counts = Counter()
    sparse = facts.sparse_kernel_variants("tflite")
    for f in manifest.get("files", []):
        variant = f.get("variant") or ""
        if f.get("format") == "tflite" and variant in sparse:
            status = (f.get("verify") or {}).get("status")
            counts[(variant, f.get("delegate") if status == "passed" else "not shipped (failed)")] += 1
    return [[v, d or "—", n] for (v, d), n in sorted(counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))]


def int8_head_start(rows: list[dict]) -> str:
    """How much faster the dense int8 file is than the dense float32 one (fastest settings), in words."""
    dense = [r for r in rows if float(r["sparsity"]) == 0 and r["format"] == "tflite"]
    best = {p: min((r["p50_us"] for r in dense if facts.precision(r) == p), default=None)
            for p in {facts.precision(r) for r in dense}}
    int8 = [p for p in best if p.startswith("int8") and best[p]]
    if not best.get(facts.FP32) or not int8:
        return "often int8"
    fastest = min(int8, key=lambda p: best[p])
    return (f"often int8, whose dense {fastest} TFLite baseline is already "
            f"{times(best[facts.FP32] / best[fastest])} the speed of the float32 one")


def pruning_pays(inp, d, figs, cfg) -> list[str]:
    lines = ["## Does weight pruning pay at run time?", ""]
    if not inp.results or not inp.manifest:
        return lines + missing("benchmark results and export manifest", "make export && make bench")
    mlp = set(inp.of_network("mlp"))
    rows = [r for r in _shipped_rows(inp) if r["framework"] in mlp]
    if not rows:
        return lines + ["_No MLP in these results: the MLP's speed targets do not apply (the CNN has its own, "
                        "below)._", ""]
    dense_acc = analysis.dense_accuracy_by_framework(rows)
    tol = cfg.tolerance
    lines += [f"The MLP; batch 1, 1 thread, host; only files that passed verification; accuracy is each file's "
              f"own on the 10,000 test images and must stay within {tol:g} point of the same model's dense (k00) file.",
              "", "**Pruning pays on its own:** weight- or block-pruned files against the dense file of the same "
              f"precision on the same engine. Two readings: the fastest file at the level ({int8_head_start(rows)}), "
              "and the file with the largest speedup over its own precision.", ""]
    lines += table(["sparsity", "model", "reading", "file", "runtime", "p50", "dense (same precision)",
                    "speedup", "accuracy (Δ pt)", "target", ""], speed_target_rows(rows, dense_acc, tol))
    lines += ["**Best artifact overall** (any method, within tolerance) against the dense fp32 `.tflite` in its "
              "fastest runtime:", ""]
    lines += table(["model", "best artifact", "p50", "accuracy", "size", "dense fp32 TFLite", "speedup", "size",
                    ""], best_artifact_rows(rows, dense_acc, tol))
    curves = {k: v for k, v in analysis.curves(as_percent(manifest_accuracy(inp.manifest))).items()
              if k[0] in mlp}  # every method, seed 0
    lines += ["**Fine-tuned accuracy** (numpy reference of each stored model; `-ft` one-shot then fine-tuned, "
              "`-gp` gradual):", ""]
    lines += table(["model", "method", "within tolerance up to", "target", "accuracy at target", ""],
                   accuracy_target_rows(curves, tol))
    return lines + auto_part(inp) + delegate_part(inp)


def auto_part(inp) -> list[str]:
    auto = auto_rows(inp)
    lines = ["### Per-layer format choice (`auto`)", "",
             "For each block-pruned model every layer was timed in every LiteRT format on this machine "
             "(`export/layer_timings.json`, batch 1, 1 thread, each candidate checked against numpy first). "
             "The per-layer fastest mix and the uniform files were then built, checked and timed as whole "
             "files, and the fastest correct one ships: per-layer timings miss the cost between layers "
             "(leaving XNNPACK, and a file with any int8 sparse weight keeps all its layers off XNNPACK). "
             "`model.auto.tflite` may use dense or 1x4 block-sparse float32 layers, `model.auto-int8.tflite` "
             "also int8 and 1x16 block-sparse int8. Layers are listed input to output, as stored in each file.", ""]
    return lines + (table(["file", "layers", "verified", "delegate", "p50 (fastest runtime)",
                           "vs dense same precision"], auto) if auto else missing("auto files", "make export"))


def delegate_part(inp) -> list[str]:
    lines = ["### Which delegate the sparse LiteRT files ship with", "",
             "XNNPACK reads int8 sparse weights as if they were dense and returns wrong logits without an error. "
             "Sparse FULLY_CONNECTED ops are therefore marked with the sparse-float op version, which XNNPACK "
             "declines, and every file is verified under the default delegate first, then without delegates; "
             "the first setting that passes is recorded in the manifest and shipped, a file that passes under "
             "neither is marked failed and never shipped. `xnnpack` here means the default resolver: its dense "
             "layers run on XNNPACK and its marked sparse layers on LiteRT's own kernels.", ""]
    return lines + table(["variant", "shipped delegate", "files"], delegate_rows(inp.manifest))
