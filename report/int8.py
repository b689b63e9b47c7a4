"""Report section: full-int8 or float32 TFLite, level by level, for each network.

Per model folder and level, the model with the best reference accuracy at that level (its method
named), its float32 `.tflite` against its full-int8 one: each file's own accuracy on the 10,000
test images (manifest), batch-1 1-thread p50 in its fastest LiteRT setting (results.csv) and
whether the int8 file passed verification. The file kinds come from export.formats (the plain
float32 and full-int8 rows of the tflite format), the pass rule from pipeline.checks.
"""
from __future__ import annotations

from collections import defaultdict

from report import facts
from report.inputs import as_percent
from report.markdown import level, missing, pct, table, times, us
from pipeline.train import NETS

FULL_INT8 = "int8-full"  # the precision (export.formats `precision`) of a fully integer file
FORMAT = "tflite"


def _kinds():
    return facts.plain_kind(FORMAT, facts.FP32), facts.plain_kind(FORMAT, FULL_INT8)


def kdirs(manifest: dict) -> dict[tuple[str, float], dict[str, dict]]:
    """(model folder, level) -> method -> {"npz", "fp32", "int8": manifest entry} (accuracy in %)."""
    fp32, int8 = _kinds()
    names = {facts.REFERENCE.name: "npz", fp32.name: "fp32", int8.name: "int8"}
    files = as_percent([f for f in manifest.get("files", []) if _name(f) in names])
    out: dict = defaultdict(lambda: defaultdict(dict))
    for f in files:
        out[(f["framework"], float(f["sparsity"]))][f["method"]][names[_name(f)]] = f
    return out


def _name(entry: dict) -> str | None:
    """The file kind of a manifest entry: its own "name", else the row of its format and variant."""
    found = entry.get("name") or facts.kind(entry.get("format"), entry.get("variant"))
    return found if isinstance(found, str) or found is None else found.name


def fastest(rows: list[dict], path: str) -> dict | None:
    timed = [r for r in rows if r["artifact"] == path]
    return min(timed, key=lambda r: r["p50_us"]) if timed else None


def _passed(entry: dict | None) -> bool:
    return entry is not None and (entry.get("verify") or {}).get("status") == "passed"


def level_rows(by_level: dict, rows: list[dict], folder: str) -> list[list]:
    body = []
    for (fw, k), methods in sorted(by_level.items()):
        both = {m: e for m, e in methods.items() if "fp32" in e and "int8" in e}
        if fw != folder or not both:
            continue
        method, e = max(both.items(), key=lambda me: ((me[1].get("npz") or {}).get("accuracy") or -1, me[0]))
        f32, i8 = fastest(rows, e["fp32"]["path"]), fastest(rows, e["int8"]["path"])
        a32, a8 = e["fp32"].get("accuracy"), e["int8"].get("accuracy")
        body.append([level(k), method, None if a32 is None else pct(a32),
                     None if a8 is None else pct(a8) + ("" if a32 is None else f" ({a8 - a32:+.2f})"),
                     None if f32 is None else f"{us(f32['p50_us'])} ({f32['runtime']})",
                     None if i8 is None else f"{us(i8['p50_us'])} ({i8['runtime']})",
                     None if f32 is None or i8 is None else times(f32["p50_us"] / i8["p50_us"]),
                     "passed" if _passed(e["int8"]) else "**failed**"])
    return body


def within_count(by_level: dict, tolerance: float) -> tuple[int, int, int]:
    """(models within tolerance of dense, their full-int8 files, of those that passed)."""
    dense = defaultdict(list)
    for (fw, k), methods in by_level.items():
        if k == 0:
            dense[fw] += [e["npz"]["accuracy"] for e in methods.values() if (e.get("npz") or {}).get("accuracy")]
    models = files = passed = 0
    for (fw, k), methods in by_level.items():
        for e in methods.values():
            acc = (e.get("npz") or {}).get("accuracy")
            if not dense[fw] or acc is None or acc < max(dense[fw]) - tolerance:
                continue
            models += 1
            files += "int8" in e
            passed += _passed(e.get("int8"))
    return models, files, passed


def failed_words(n: int) -> str:
    return f"{n} fails and is not shipped" if n == 1 else f"{n} fail and are not shipped"


def int8_section(inp, d, figs, cfg) -> list[str]:
    lines = ["## Full int8 or float32, level by level", ""]
    fp32, int8 = _kinds()
    by_level = kdirs(inp.manifest) if fp32 and int8 else {}
    if not by_level:
        return lines + missing("float32 and full-int8 TFLite files in the export manifest", "make export")
    lines += [f"`{fp32.suffix}` against `{int8.suffix}`" + (f" ({int8.notes})" if int8.notes else "") + ". "
              "At each level the model with the best reference accuracy; accuracy is each file's own on the 10,000 "
              f"test images, latency the p50 at batch 1, 1 thread in the file's fastest LiteRT setting. The int8 "
              f"file passes verification when {facts.check_rule({'format': FORMAT, 'variant': int8.variant})} "
              "against the model's numpy reference.", ""]
    for net in NETS:
        for folder in inp.of_network(net):
            body = level_rows(by_level, d.b1, folder)
            if body:
                lines += [f"**{folder}** ({net.upper()})", ""]
                lines += table(["sparsity", "method", "float32 acc.", "int8 acc. (Δ)", "float32 p50", "int8 p50",
                                "int8 speedup", "int8 verified"], body)
    models, files, passed = within_count(by_level, cfg.tolerance)
    lines.append(f"Of the {models} stored models within {cfg.tolerance:g} point of their dense model (reference "
                 f"accuracy), {files} have a full-int8 file and {passed} of those pass verification"
                 + ("." if passed == files else f"; {failed_words(files - passed)}."))
    return lines + [""]
