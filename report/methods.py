"""Report section: every pruning method side by side, one-shot next to its fine-tuned forms.

Accuracy comes from the export manifest (the numpy reference of each model.npz on the
full test set, seed 0), so the section covers every method `make export` produced,
not only the two the multi-seed sweep repeats."""
from __future__ import annotations

from report import analysis
from report.markdown import image
from report.inputs import as_percent, manifest_accuracy
from pipeline.methods import TUNINGS, base_name as base_method


def _order(methods) -> list[str]:
    """One-shot method, then its fine-tuned forms (-ft, -gp); weight and unit first."""
    first = {"weight": 0, "unit": 1}  # the challenge's two methods lead
    bases = sorted({base_method(m) for m in methods}, key=lambda m: (first.get(m, 2), m))
    return [m for b in bases for m in (b + t for t in TUNINGS) if m in methods]


def methods_section(inp, d, figs, cfg) -> list[str]:
    lines = ["## Every method side by side: one-shot, fine-tuned and gradual", ""]
    by_key = analysis.curves(as_percent(manifest_accuracy(inp.manifest)))
    if not by_key:
        return lines + ["Not available: no export manifest (run `make export`).", ""]
    lines += ["Test accuracy of each stored model (numpy reference, 10,000 images, seed 0); "
              "`-ft` = pruned once, then fine-tuned with the mask fixed; `-gp` = gradual: each level "
              "prunes the previous level's fine-tuned model further, then fine-tunes.", ""]
    for framework in sorted({fw for fw, _ in by_key}):
        methods = _order({m for fw, m in by_key if fw == framework})
        points = {m: {p.sparsity: p.mean for p in by_key[(framework, m)]} for m in methods}
        levels = sorted({k for m in methods for k in points[m]})
        lines += [f"**{framework}**", ""] + image(figs.get(f"methods_{framework}"),
                                                  f"{framework}: accuracy vs sparsity, every method")
        lines += ["| sparsity | " + " | ".join(methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for k in levels:
            cells = [f"{points[m][k]:.2f}%" if k in points[m] else "—" for m in methods]
            lines.append(f"| {k:g}% | " + " | ".join(cells) + " |")
        reach = [analysis.highest_within(by_key[(framework, m)], cfg.tolerance) for m in methods]
        lines.append(f"| **within {cfg.tolerance:g} pt up to** | "
                     + " | ".join("—" if p is None else f"**{p.sparsity:g}%**" for p in reach) + " |")
        lines.append("")
    return lines
