"""The table printed after an export run: one row per framework x method x sparsity x format.

Accuracy is measured from the file in its own runtime; "compute" says whether the runtime
multiplies by the sparse weights or densifies them first; "check" is the figure verification
judged (max |logit diff| for float32 files, top-1 agreement for fp16/int8); failed rows are
marked FAILED and their reasons listed under the table.
"""
from __future__ import annotations

from export.formats import FORMATS, REFERENCE

ORDER = {name: i for i, name in enumerate([REFERENCE.name, *FORMATS])}
COLUMNS = ("framework", "method", "k", "format", "runtime", "compute", "accuracy", "size", "status", "check")


def _size(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _check(entry: dict) -> str:
    v = entry.get("verify") or {}
    if v.get("max_abs_diff") is None:
        return "-"
    fmt = FORMATS.get(entry.get("name"))
    precision = entry.get("precision") or (fmt.precision if fmt else "fp32")
    if precision == "fp32":
        return f"|d| {v['max_abs_diff']:.1e}"
    return f"top1 {100 * v['top1_agreement']:.1f}%"


def _status(entry: dict) -> str:
    v = entry.get("verify") or {}
    if v.get("status") != "passed":
        return "FAILED"
    return "passed*" if v.get("reason") else "passed"  # * = shipped in a fallback runtime


def _model_name(entry: dict) -> str:
    """torch, tf, or an imported model's name: the first folder of the file's path."""
    return entry["path"].split("/")[0] if "/" in entry["path"] else (entry.get("framework") or "-")


def _sort_key(entry: dict):
    return (_model_name(entry), entry.get("method") or "", float(entry.get("sparsity") or 0),
            ORDER.get(entry.get("name"), len(ORDER)), entry["path"])


def rows(manifest: dict) -> list[dict]:
    out = []
    for e in sorted(manifest["files"], key=_sort_key):
        runtime = e.get("runtime") or "-"
        acc = e.get("accuracy")
        out.append({"framework": _model_name(e), "method": e.get("method") or "-",
                    "k": f"{float(e.get('sparsity') or 0):g}", "format": e.get("name") or e.get("format"),
                    "runtime": runtime, "compute": "sparse" if e.get("runs_sparse") else "dense",
                    "accuracy": "-" if acc is None else f"{100 * acc:.2f}%",
                    "size": _size(e.get("bytes")), "status": _status(e), "check": _check(e),
                    "path": e["path"], "reason": (e.get("verify") or {}).get("reason")})
    return out


def format_table(manifest: dict) -> str:
    table = rows(manifest)
    right = {"k", "accuracy", "size"}
    widths = {c: max([len(c)] + [len(r[c]) for r in table]) for c in COLUMNS}
    line = lambda r: "  ".join(r[c].rjust(widths[c]) if c in right else r[c].ljust(widths[c])
                               for c in COLUMNS).rstrip()
    lines = [line({c: c for c in COLUMNS}), line({c: "-" * widths[c] for c in COLUMNS})]
    lines += [line(r) for r in table]
    failed = [r for r in table if r["status"] == "FAILED"]
    fallback = [r for r in table if r["status"] == "passed*"]
    lines.append("")
    lines.append(f"{len(table)} files: {len(table) - len(failed)} passed, {len(failed)} failed"
                 + (f", {len(fallback)} passed only in a fallback runtime (passed*)" if fallback else ""))
    lines += [f"  FAILED {r['path']}: {r['reason']}" for r in failed]
    lines += [f"  passed* {r['path']}: {r['reason']}" for r in fallback]
    return "\n".join(lines)
