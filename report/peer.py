"""Report section: our gradual (-gp) chains against the peer, TensorFlow Model Optimization's
prune_low_magnitude with PolynomialDecay, one single-target run per level from the same trained model.

The peer's numbers come from `<root>/peer/tfmot.json`, written by `scripts/peer_tfmot.py` (own venv: tfmot needs Keras 2):
    {"runs": [{"framework": "tf", "sparsity": 97.0, "epochs": 16, "accuracy": 0.896,
               "dense_accuracy": 0.8994, "versions": {...}}, ...], ...}
Optional per run: "model" (the model folder, default the framework), "method" (the prunedge method
it matches, default "weight": magnitude pruning of single weights), "seed". Accuracy as a fraction
or in percent. Ours: each -gp level's numpy-reference accuracy from the manifest, and the epochs
the chain trained to reach it (pipeline.finetune's budget per level, summed over the chain's levels).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from report import analysis
from report.inputs import as_percent, manifest_accuracy
from report.markdown import level, missing, pct, signed, table
from pipeline.errors import fail
from pipeline.finetune import EPOCHS_BY_NET

PEER = Path("peer") / "tfmot.json"  # under the artifacts root
COMMAND = "scripts/peer_tfmot.py (see its docstring)"
SAME_BUDGET = 1.0  # epochs: a peer run this close to the chain's cumulative epochs had the same budget
EVEN = 0.1  # points: closer than this (10 test images) is called even, below single-run seed noise
REQUIRED = {"framework": str, "sparsity": (int, float), "epochs": (int, float), "accuracy": (int, float)}


def read_peer(path: Path) -> dict:
    """The peer file with its runs checked (accuracy in percent); a one-line error naming the file."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise fail(path, f"unreadable peer results ({e})") from None
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if not isinstance(runs, list):
        raise fail(path, 'expected {"runs": [...]} (see report/peer.py)')
    for i, run in enumerate(runs):
        for key, kind in REQUIRED.items():
            value = run.get(key) if isinstance(run, dict) else None
            if not isinstance(value, kind) or isinstance(value, bool) or (
                    isinstance(value, float) and not math.isfinite(value)):
                raise fail(path, f"runs[{i}].{key}: expected {'a name' if kind is str else 'a number'}, got {value!r}")
        if not 0 <= run["sparsity"] < 100 or run["epochs"] < 0:
            raise fail(path, f"runs[{i}]: sparsity must be in [0, 100) and epochs >= 0")
    runs = as_percent(as_percent(runs), "dense_accuracy")
    return {**doc, "runs": runs}


def chain_epochs(levels, per_level: float) -> dict[float, float]:
    """Level -> epochs a gradual chain through `levels` has trained when it reaches that level
    (every level above 0 fine-tunes `per_level` epochs)."""
    epochs, total = {}, 0.0
    for k in sorted(float(k) for k in levels):
        total += per_level if k > 0 else 0.0
        epochs[k] = total
    return epochs


def comparison_rows(peer: dict, curves: dict, networks: dict | None = None) -> list[dict]:
    """One dict per peer run: the peer's numbers next to the -gp level at its sparsity (if any)."""
    out = []
    for run in peer["runs"]:
        model, method = run.get("model") or run["framework"], (run.get("method") or "weight") + "-gp"
        points = curves.get((model, method), [])
        ours = {p.sparsity: p.mean for p in points}
        dense = analysis.dense_point(points)
        epochs = chain_epochs(ours, EPOCHS_BY_NET[(networks or {}).get(model, "mlp")]) if ours else {}
        k = float(run["sparsity"])
        out.append({"model": model, "method": method, "sparsity": k, "peer": run["accuracy"],
                    "peer_epochs": float(run["epochs"]), "peer_dense": run.get("dense_accuracy"),
                    "ours": ours.get(k), "epochs": epochs.get(k), "dense": None if dense is None else dense.mean})
    return sorted(out, key=lambda r: (r["model"], r["method"], r["sparsity"], r["peer_epochs"]))


def _delta(acc, dense) -> str:
    return "—" if acc is None else pct(acc) + ("" if dense is None else f" ({signed(acc - dense)})")


def verdict(r: dict) -> str | None:
    if r["ours"] is None:
        return None
    gap = r["ours"] - r["peer"]
    return "even" if abs(gap) < EVEN else ("gradual better" if gap > 0 else "peer better")


def same_budget(r: dict) -> bool:
    return r["epochs"] is not None and abs(r["epochs"] - r["peer_epochs"]) <= SAME_BUDGET


def summary(rows: list[dict]) -> str:
    fair = [r for r in rows if r["ours"] is not None and same_budget(r)]
    if not fair:
        return (f"No peer run had the same epoch budget (within {SAME_BUDGET:g} epoch) as the gradual chain "
                "at its level; the rows above compare different budgets.")
    wins = sum(verdict(r) == "gradual better" for r in fair)
    losses = sum(verdict(r) == "peer better" for r in fair)
    mean = sum(r["ours"] - r["peer"] for r in fair) / len(fair)
    lead = ("Gradual pruning is the more accurate" if mean >= EVEN else
            "The peer is the more accurate" if mean <= -EVEN else "The two are even")
    return (f"{lead} at equal budgets: over {len(fair)} level(s) with the same epochs (within {SAME_BUDGET:g}), "
            f"gradual − peer = {signed(mean)} points on average; gradual better at {wins}, peer better at {losses}, "
            f"even (within {EVEN:g} point) at {len(fair) - wins - losses}.")


def versions(peer: dict) -> str:
    found = {}
    for run in peer["runs"]:
        found.update({k: v for k, v in (run.get("versions") or {}).items() if isinstance(v, str)})
    found.update({k: v for k, v in (peer.get("versions") or {}).items() if isinstance(v, str)})
    return ", ".join(f"{k} {v}" for k, v in sorted(found.items()))


def peer_section(inp, d, figs, cfg) -> list[str]:
    lines = ["## Gradual pruning vs TensorFlow Model Optimization", ""]
    if inp.peer is None:
        return lines + missing(f"the peer's results `{PEER.as_posix()}` under the artifacts root (tfmot "
                               "prune_low_magnitude with PolynomialDecay, one run per level)", COMMAND)
    curves = analysis.curves(as_percent(manifest_accuracy(inp.manifest)))
    rows = comparison_rows(inp.peer, curves, inp.networks)
    lines += [f"From `{inp.peer_path}`" + (f" ({versions(inp.peer)})" if versions(inp.peer) else "") + ". "
              "Each peer run prunes the trained model once to its level with tfmot's PolynomialDecay; our "
              "gradual chain reaches the same level through the lower ones. Accuracy on the 10,000 test images "
              "(ours: numpy reference of the stored model); Δ is against each side's own dense model; "
              "epochs are fine-tuning epochs (ours: summed over the chain up to that level).", ""]
    body = [[r["model"], r["method"], level(r["sparsity"]), _delta(r["ours"], r["dense"]),
             None if r["epochs"] is None else f"{r['epochs']:.1f}", _delta(r["peer"], r["peer_dense"]),
             f"{r['peer_epochs']:g}", "yes" if same_budget(r) else "no",
             None if r["ours"] is None else signed(r["ours"] - r["peer"]), verdict(r)] for r in rows]
    lines += table(["model", "ours", "sparsity", "gradual accuracy (Δ)", "gradual epochs",
                    "peer accuracy (Δ)", "peer epochs", "same budget", "gradual − peer", ""], body)
    return lines + [summary(rows), ""]
