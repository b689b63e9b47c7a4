"""PNG figures for the report. Each function takes already-loaded data and one output path.

Sparsity axes place level k at -log10(1 - k/100) (labelled with k), so 90/95/97/99 are
spread out where the interesting changes happen instead of piling up at the right edge.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from report import analysis
from report.facts import framework_of
from pipeline.fileio import atomic_path
from pipeline.methods import base_name as base_method

METHOD_COLORS = {"weight": "tab:blue", "unit": "tab:orange", "dense": "tab:gray"}
OTHER_COLORS = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
LINE_STYLES = ("-", "--", "-.")  # one per training framework, in pipeline.train.FRAMEWORKS order
NET_MARKERS = {"mlp": "o", "cnn": "s"}  # one per pipeline.train.NETS network
DPI = 110


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)  # constrained layout already fits the labels
    _plt().close(fig)
    return Path(path)


def _color(method: str) -> str:
    """Fixed colours for weight/unit; other registered methods get a stable colour from their name."""
    return METHOD_COLORS.get(method) or OTHER_COLORS[sum(map(ord, method)) % len(OTHER_COLORS)]


# How a method was retrained -> marker and line: one-shot solid, one-shot + fine-tune dashed, gradual dash-dot.
TUNING_STYLES = {"": "o-", "-ft": "s--", "-gp": "^-."}


def tuning_of(method: str) -> str:
    return method[len(base_method(method)):]


def _style(framework: str) -> str:
    from pipeline.train import FRAMEWORKS
    order = list(FRAMEWORKS)
    return LINE_STYLES[order.index(framework) % len(LINE_STYLES)] if framework in order else ":"


def sparsity_position(k) -> np.ndarray:
    return -np.log10(1.0 - np.asarray(k, dtype=float) / 100.0)


def _sparsity_axis(ax, levels) -> None:
    levels = sorted({float(k) for k in levels})
    ax.set_xticks(sparsity_position(levels))
    ax.set_xticklabels([f"{k:g}" for k in levels])
    ax.set_xlabel("sparsity (%)  [spacing: -log10 of the fraction kept]")
    ax.grid(True, alpha=0.3)


def _log_axis(axis) -> None:
    """Log scale with plain numbers (250, not 2.5x10^2); minor ticks labelled only when the range
    spans less than a decade, otherwise they would crowd."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    lo, hi = axis.get_view_interval()
    axis.set_minor_formatter(plain if lo > 0 and hi / lo < 10 else NullFormatter())


def preferred_variant(variants) -> str | None:
    """fp32 when there is one: the variant every sparsity level and runtime has."""
    variants = sorted({v for v in variants if v is not None})
    from report.facts import REFERENCE
    return REFERENCE.variant if REFERENCE.variant in variants else (variants[0] if variants else None)


# ---------------------------------------------------------------- training

def learning_curves(runs: dict[int, dict[str, list]], framework: str, path: Path) -> Path:
    """runs: seed -> {"train_loss": [...], "val_loss", "train_acc", "val_acc"} per epoch."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (seed, c) in enumerate(sorted(runs.items())):
        color = colors[i % len(colors)]
        for ax, what in zip(axes, ("loss", "acc")):
            for split, style in (("train", "-"), ("val", "--")):
                values = [np.nan if v is None else v for v in c.get(f"{split}_{what}") or []]
                if values:
                    values = np.asarray(values, dtype=float)
                    if what == "acc" and np.nanmax(values) <= 1.0:
                        values = 100 * values
                    epochs = np.arange(1, len(values) + 1)
                    label = f"seed {seed} {'validation' if split == 'val' else 'train'}"
                    ax.plot(epochs, values, "o" + style, ms=3, color=color, label=label)
    from matplotlib.ticker import MaxNLocator
    for ax, title in zip(axes, ("loss", "accuracy (%)")):
        ax.set_title(f"{framework}: {title}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


# ---------------------------------------------------------------- accuracy

def accuracy_vs_sparsity(curves, framework: str, path: Path) -> Path:
    """Mean accuracy per method with a min-max band over seeds (no band for a single seed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    levels = []
    for (fw, method), points in sorted(curves.items()):
        if fw != framework:
            continue
        k = [p.sparsity for p in points]
        levels += k
        x = sparsity_position(k)
        n = max(p.n for p in points)
        label = f"{method} pruning" + (f" (mean of {n} seeds, band = min-max)" if n > 1 else " (1 seed)")
        ax.plot(x, [p.mean for p in points], TUNING_STYLES[tuning_of(method)], color=_color(base_method(method)),
                label=label)
        if n > 1:
            ax.fill_between(x, [p.lo for p in points], [p.hi for p in points], color=_color(method), alpha=0.2)
    dense = next((analysis.dense_point(p) for (fw, _), p in curves.items() if fw == framework), None)
    if dense is not None:
        ax.axhline(dense.mean - analysis.TOLERANCE, color="gray", ls=":", lw=1,
                   label=f"dense - {analysis.TOLERANCE:g} point")
    _sparsity_axis(ax, levels)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{framework}: accuracy vs sparsity (10k test images, numpy reference)")
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


# ---------------------------------------------------------------- latency / size

def latency_vs_sparsity(rows, path: Path, networks: dict[str, str] | None = None) -> Path:
    """One panel per runtime: p50 latency per model folder and method (log y), each folder's dense
    k00 as a grey line. Colour = method, line = training framework, marker = network; one legend
    for the figure, so it stays short however many folders and methods there are."""
    plt = _plt()
    networks = networks or {}
    runtimes = sorted({r["runtime"] for r in rows})
    cols = min(3, max(1, len(runtimes)))
    nrows = max(1, -(-len(runtimes) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False,
                             layout="constrained")
    seen = {"method": set(), "framework": set(), "network": set()}
    for ax, runtime in zip(axes.flat, runtimes):
        rs = [r for r in rows if r["runtime"] == runtime]
        variant = preferred_variant(r.get("variant") for r in rs)
        rs = [r for r in rs if r.get("variant") == variant]
        groups = defaultdict(list)
        for r in rs:
            groups[(r["framework"], r["method"])].append(r)
        for (fw, method), g in sorted(groups.items()):
            g = sorted((r for r in g if float(r["sparsity"]) > 0), key=lambda r: float(r["sparsity"]))
            net = networks.get(fw, "mlp")
            if g:
                ax.plot(sparsity_position([float(r["sparsity"]) for r in g]), [r["p50_us"] for r in g],
                        marker=NET_MARKERS.get(net, "^"), ls=_style(framework_of(fw)), color=_color(method), ms=4)
                for key, value in (("method", method), ("framework", framework_of(fw)), ("network", net)):
                    seen[key].add(value)
        for fw in sorted({r["framework"] for r in rs}):
            dense = [r["p50_us"] for r in rs if r["framework"] == fw and float(r["sparsity"]) == 0]
            if dense:
                ax.axhline(float(np.median(dense)), color="gray", ls=_style(framework_of(fw)), lw=1, alpha=0.7)
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
        _sparsity_axis(ax, [float(r["sparsity"]) for r in rs] or [0])
        ax.set_ylabel("p50 latency (µs)")
        ax.set_title(f"{runtime} ({variant})", fontsize=10)
    for ax in list(axes.flat)[len(runtimes):]:
        ax.axis("off")
    fig.legend(handles=_legend_handles(seen), loc="outside right upper", fontsize=7)
    fig.suptitle(_batch_title(rows, "latency vs sparsity (grey: each model's dense k00)"))
    return _save(fig, path)


def _legend_handles(seen: dict) -> list:
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=_color(m), lw=2, label=m) for m in sorted(seen["method"])]
    handles += [Line2D([], [], color="black", ls=_style(fw), label=f"trained in {fw}")
                for fw in sorted(seen["framework"])]
    handles += [Line2D([], [], color="black", ls="", marker=NET_MARKERS.get(n, "^"), label=n.upper())
                for n in sorted(seen["network"])]
    return handles


def _batch_title(rows, what: str) -> str:
    batches = sorted({r.get("batch") for r in rows if r.get("batch") is not None})
    threads = sorted({r.get("threads") for r in rows if r.get("threads") is not None})
    return f"{what}: batch {', '.join(map(str, batches))}, {', '.join(map(str, threads))} thread(s)"


def size_vs_sparsity(artifacts, path: Path, framework: str | None = None) -> Path:
    """One panel per format: raw (solid) and gzip (dashed) bytes per method, log y."""
    plt = _plt()
    frameworks = sorted({a["framework"] for a in artifacts})
    framework = framework or ("torch" if "torch" in frameworks else frameworks[0])
    arts = [a for a in artifacts if a["framework"] == framework]
    formats = sorted({a["format"] for a in arts})
    n = max(1, len(formats))
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False, layout="constrained")
    for ax, fmt in zip(axes.flat, formats):
        fa = [a for a in arts if a["format"] == fmt]
        variant = preferred_variant(a.get("variant") for a in fa)
        fa = [a for a in fa if a.get("variant") == variant]
        for method in sorted({a["method"] for a in fa}):
            ma = sorted((a for a in fa if a["method"] == method), key=lambda a: float(a["sparsity"]))
            x = sparsity_position([float(a["sparsity"]) for a in ma])
            ax.plot(x, [a["bytes"] / 1e6 for a in ma], "o-", color=_color(method), ms=4, label=f"{method} raw")
            gz = [(xi, a["gzip_bytes"] / 1e6) for xi, a in zip(x, ma) if a.get("gzip_bytes")]
            if gz:
                ax.plot(*zip(*gz), "x--", color=_color(method), ms=5, label=f"{method} gzip")
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
        _sparsity_axis(ax, [float(a["sparsity"]) for a in fa] or [0])
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("file size (MB)")
        ax.set_title(f"{fmt} ({variant})", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(f"artifact size vs sparsity ({framework})")
    return _save(fig, path)


# ---------------------------------------------------------------- weights (Q4)

def weight_histograms(weights: list[np.ndarray], framework: str, path: Path, *,
                      names: list[str] | None = None, pruned: list[bool] | None = None,
                      prune_at: float = 90.0) -> Path:
    """Histogram of each layer's weights (log counts); on pruned layers, shade |w| below the cut
    that `prune_at`% weight pruning applies."""
    plt = _plt()
    n = len(weights)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, layout="constrained")
    for i, (ax, w) in enumerate(zip(axes.flat, weights)):
        flat = np.ravel(w)
        counts, edges = np.histogram(flat, bins=200)
        ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.8)  # one polygon, not 200 bars
        if pruned is None or pruned[i]:
            cut = float(np.quantile(np.abs(flat), prune_at / 100.0))
            ax.axvspan(-cut, cut, color="tab:red", alpha=0.15, label=f"|w| < {cut:.3g}: {prune_at:g}% pruned")
            ax.legend(fontsize=6)
        ax.set_yscale("log")
        ax.set_title(f"{names[i] if names else f'layer {i}'} {list(np.shape(w))}", fontsize=9)
        ax.set_xlabel("weight")
        if i % cols == 0:
            ax.set_ylabel("count (log)")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{framework}: trained weight distribution per layer")
    return _save(fig, path)


def singular_spectra(spectra: list[np.ndarray], framework: str, path: Path, *,
                     names: list[str] | None = None) -> Path:
    """Left: sigma_i / sigma_1 (log); right: cumulative energy; x = i / number of singular values."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for i, s in enumerate(spectra):
        x = np.arange(1, s.size + 1) / s.size
        name = names[i] if names else f"layer {i}"
        ax1.plot(x, s / s[0], label=f"{name} ({s.size} values)")
        ax2.plot(x, analysis.cumulative_energy(s), label=name)
    ax1.set_yscale("log")
    ax1.set_ylabel("sigma_i / sigma_1")
    ax2.set_ylabel("cumulative energy (sum sigma^2)")
    ax2.axhline(0.9, color="gray", ls=":", lw=1)
    for ax in (ax1, ax2):
        ax.set_xlabel("fraction of singular values")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{framework}: singular value spectrum per layer (normalized)")
    return _save(fig, path)
