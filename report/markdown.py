"""Markdown formatting for the report: numbers as text, tables, images, "not available" notes."""
from __future__ import annotations

import re
from pathlib import Path


def pct(x: float) -> str:
    return f"{x:.2f}%"


def share(x: float) -> str:
    return f"{100 * x:.1f}%"


def us(x: float) -> str:
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.1f} µs"


def size(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def signed(x: float) -> str:
    """+0.30 / -1.20; a difference that rounds to zero prints +0.00, never -0.00."""
    return f"{round(x, 2) + 0.0:+.2f}"


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


def anchor(heading: str) -> str:
    """The link target GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def contents(lines: list[str]) -> list[str]:
    """A table of contents: one link per "## " heading in `lines` (repeated anchors numbered)."""
    seen: dict[str, int] = {}
    out = ["## Contents", ""]
    for line in lines:
        if line.startswith("## "):
            title = line[3:].strip()
            slug = anchor(title)
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.append(f"- [{title}](#{slug}{f'-{n}' if n else ''})")
    return out + [""]
