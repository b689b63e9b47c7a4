"""Figures that compare many things at once: accuracy vs latency of every file (the Pareto plot)
and the MLP and CNN accuracy curves side by side. Built for ~1,600 points: small translucent dots,
only the front labelled, with numbers a table in REPORT.md explains (report.speed)."""
from __future__ import annotations

from pathlib import Path

from report import analysis, facts
from report.plots import (TUNING_STYLES, _batch_title, _color, _log_axis, _plt, _save, _sparsity_axis, _style,
                          base_method, sparsity_position, tuning_of)

ZOOM_POINTS = analysis.CLIFF_POINTS  # the right panel shows files within this many points of the best


def _scatter(ax, rows, front, colors) -> None:
    for runtime in sorted({r["runtime"] for r in rows}):
        rs = [r for r in rows if r["runtime"] == runtime]
        ax.scatter([r["p50_us"] for r in rs], [r["accuracy"] for r in rs], s=6, alpha=0.35, lw=0,
                   color=colors[runtime], label=facts.runtime_label(runtime), rasterized=True)
    fx, fy = [r["p50_us"] for r in front], [r["accuracy"] for r in front]
    ax.step(fx, fy, where="post", color="black", lw=1.0, label="Pareto front")
    ax.scatter(fx, fy, s=36, facecolors="none", edgecolors="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency (µs, log)")
    ax.grid(True, alpha=0.3)


OFFSETS = ((3, 4), (3, -11), (-11, 4), (-11, -11), (3, 14), (3, -21), (-11, 14), (-11, -21))  # points


def _number(ax, front, ylim) -> None:
    """Number the front points 1..n; each label takes the first offset whose box (in display
    pixels) overlaps no label placed before it, so neighbours on a crowded front stay readable."""
    scale = ax.figure.dpi / 72.0  # points -> pixels
    marks = [ax.transData.transform((r["p50_us"], r["accuracy"])) for r in front]
    placed = [(x - 4 * scale, y - 4 * scale, x + 4 * scale, y + 4 * scale) for x, y in marks]  # the circles
    for i, r in enumerate(front, start=1):
        if not ylim[0] <= r["accuracy"] <= ylim[1]:
            continue
        x, y = ax.transData.transform((r["p50_us"], r["accuracy"]))
        w, h = (4.5 * len(str(i)) + 2) * scale, 9 * scale
        for dx, dy in OFFSETS:
            box = (x + dx * scale, y + dy * scale, x + dx * scale + w, y + dy * scale + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(str(i), (r["p50_us"], r["accuracy"]), fontsize=7, fontweight="bold",
                    xytext=(dx, dy), textcoords="offset points")


def pareto(rows, path: Path) -> Path:
    """Every file x runtime as a dot (colour = runtime); the front drawn and numbered as in
    analysis.front_rows. Left: all accuracies; right: the files within ZOOM_POINTS of the best."""
    plt = _plt()
    front = analysis.front_rows(rows)
    runtimes = sorted({r["runtime"] for r in rows})
    palette = plt.get_cmap("tab10" if len(runtimes) <= 10 else "tab20").colors
    colors = {rt: palette[i % len(palette)] for i, rt in enumerate(runtimes)}
    fig, (full, zoom) = plt.subplots(1, 2, figsize=(13, 5.2), layout="constrained")
    best = max(r["accuracy"] for r in rows)
    for ax in (full, zoom):
        _scatter(ax, rows, front, colors)
    lo = min(r["accuracy"] for r in rows)
    full.set_ylim(lo - 1, best + 1)
    top = best + 0.1 * ZOOM_POINTS  # room for the labels above the most accurate file
    zoom.set_ylim(best - ZOOM_POINTS, top)
    for ax in (full, zoom):
        ax.set_xlim(*ax.get_xlim())  # fix the limits the labels are placed in
    fig.canvas.draw()  # run the layout, so data -> pixel transforms are final
    _number(full, front, (lo - 1, best - ZOOM_POINTS))
    _number(zoom, front, (best - ZOOM_POINTS, top))
    for ax in (full, zoom):
        _log_axis(ax.xaxis)
    full.set_ylabel("test accuracy (%)")
    full.set_title("every file (front points below the zoom numbered here)", fontsize=9)
    zoom.set_title(f"within {ZOOM_POINTS:g} points of the most accurate file", fontsize=9)
    full.legend(fontsize=7, loc="lower right", markerscale=2.5)
    fig.suptitle(_batch_title(rows, f"accuracy vs latency: {len(rows)} files x runtimes, {len(front)} on the front"))
    return _save(fig, path)


def networks_side_by_side(curves, networks: dict[str, str], path: Path, tolerance: float) -> Path:
    """One panel per network (shared accuracy axis): mean accuracy per model folder and method, a
    min-max band over seeds, and a dotted line at each folder's dense - tolerance."""
    plt = _plt()
    from pipeline.train import NETS
    nets = [n for n in NETS if n in set(networks.values())] + sorted(set(networks.values()) - set(NETS))
    fig, axes = plt.subplots(1, len(nets), figsize=(6.2 * len(nets), 4.4), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, net in zip(axes.flat, nets):
        levels = []
        for (folder, method), points in sorted(curves.items()):
            if networks.get(folder) != net:
                continue
            k = [p.sparsity for p in points]
            levels += k
            x = sparsity_position(k)
            n = max(p.n for p in points)
            ls = _style(facts.framework_of(folder))
            ax.plot(x, [p.mean for p in points], marker=TUNING_STYLES[tuning_of(method)][0], ms=4, ls=ls,
                    color=_color(base_method(method)), label=f"{folder} {method} ({n} seed{'s' if n > 1 else ''})")
            if n > 1:
                ax.fill_between(x, [p.lo for p in points], [p.hi for p in points], color=_color(method), alpha=0.18)
            dense = analysis.dense_point(points)
            if dense is not None:
                ax.axhline(dense.mean - tolerance, color="gray", ls=ls, lw=0.8, alpha=0.6)
        _sparsity_axis(ax, levels or [0])
        ax.set_title(f"{net.upper()} (grey: dense − {tolerance:g} point)", fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
    axes.flat[0].set_ylabel("test accuracy (%), mean over seeds, band = min-max")
    fig.suptitle("accuracy vs sparsity, MLP and CNN side by side (10k test images)")
    return _save(fig, path)
