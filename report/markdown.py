"""Markdown formatting for the report: numbers as text, tables, images, "not available" notes."""
from __future__ import annotations

from pathlib import Path


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


def span(values, fmt: str | None) -> str:
    """"a to b" (or one value when equal), as shares when fmt is None."""
    f = share if fmt is None else fmt.format
    lo, hi = f(min(values)), f(max(values))
    return lo if lo == hi else f"{lo} to {hi}"
