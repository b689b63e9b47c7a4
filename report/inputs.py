"""Load everything the report reads into typed rows (accuracy always in percent), then derive
what the sections need: accuracy curves, per-layer weight statistics, pruning structure.

Missing optional inputs give empty tables (the report then says what to run); a file
that exists but cannot be parsed is a user error naming the file.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from report import analysis, facts
from pipeline.errors import fail

# results.csv column -> type (docs/CONTRACTS.md); everything else stays a string.
NUMERIC = {"threads": int, "batch": int, "sparsity": float, "p50_us": float, "p90_us": float,
           "p99_us": float, "mean_us": float, "per_sample_us": float, "reps": int,
           "ratio_vs_dense": float, "bytes": int, "gzip_bytes": int, "accuracy": float,
           "peak_rss_mb": float}
Q4_WEIGHT_SHARES = (0.05, 0.10, 0.20)  # "top x% of weights" columns of the Q4 table
Q4_SV_SHARES = (0.10, 0.25)  # "top r% of singular values" columns
NEAR_ZERO = 0.10  # |w| below this fraction of the layer's largest |w| counts as "near zero"
ENERGY_RANK = 0.90  # energy share used for the effective rank r90
REQUIRED = ("framework", "method", "sparsity", "artifact", "format", "runtime", "threads", "batch", "status")


@dataclass
class Inputs:
    root: Path
    accuracy: list[dict] = field(default_factory=list)  # framework, method, seed, sparsity, accuracy (%)
    accuracy_source: str = ""
    curves: dict[str, dict[int, dict]] = field(default_factory=dict)  # framework -> seed -> curves.json
    train_info: dict[str, dict[int, dict]] = field(default_factory=dict)  # framework -> seed -> train.json
    results: list[dict] = field(default_factory=list)  # host rows of results.csv
    results_path: Path | None = None
    machine: dict = field(default_factory=dict)
    device: list[dict] = field(default_factory=list)
    device_paths: list[Path] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    weights: dict[str, tuple[Path, object]] = field(default_factory=dict)  # framework -> (npz, Model)
    networks: dict[str, str] = field(default_factory=dict)  # model folder -> "mlp" | "cnn"
    peer: dict | None = None  # artifacts/peer/tfmot.json (report.peer), None when absent
    peer_path: Path | None = None

    def of_network(self, net: str) -> list[str]:
        """The model folders (the report's "frameworks") of one kind of network."""
        return [fw for fw in self.frameworks if self.networks.get(fw, "mlp") == net]

    @property
    def frameworks(self) -> list[str]:
        names = {r["framework"] for r in self.accuracy} | set(self.curves) | set(self.weights)
        names |= {r["framework"] for r in self.results}
        return sorted(names)


def _number(value, kind, path, column):
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "null")):
        return None
    try:
        x = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise fail(path, f"column {column}: not a number: {value!r}") from None
    return None if isinstance(x, float) and not math.isfinite(x) else x


def typed_row(raw: dict, path) -> dict:
    row = {k: (_number(v, NUMERIC[k], path, k) if k in NUMERIC else v) for k, v in raw.items()}
    row["variant"] = row.get("variant") or None
    return by_folder(row, "artifact")


def by_folder(row: dict, key: str = "path") -> dict:
    """The row with "framework" set to its model folder (torch, cnn-tf, an import's name): the
    manifest and results.csv record the training framework only, so the MLP and the CNN trained
    in torch would otherwise fall into one group. The recorded value stays in "trained_with"."""
    name = facts.folder(row.get(key), row.get("framework"))
    return row if name == row.get("framework") else {**row, "framework": name, "trained_with": row.get("framework")}


def as_percent(rows, key: str = "accuracy") -> list[dict]:
    """Accuracy in percent: a table whose accuracies are all <= 1 is taken to hold fractions."""
    values = [r[key] for r in rows if r.get(key) is not None]
    if values and max(values) <= 1.0:
        rows = [{**r, key: None if r.get(key) is None else 100.0 * r[key]} for r in rows]
    return rows


def read_results(path: Path, *, source: str | None = None) -> tuple[list[dict], dict]:
    """Rows of a results .csv or .json (typed, accuracy in %) and the JSON's machine block."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "results file not found")
    machine = {}
    try:
        if path.suffix == ".json":
            doc = json.loads(path.read_text())
            raw, machine = doc["rows"], doc.get("machine", {})
            columns = set(raw[0]) if raw else set(REQUIRED)
        else:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                raw, columns = list(reader), set(reader.fieldnames or ())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise fail(path, f"unreadable results ({type(e).__name__}: {e})") from None
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw) or not isinstance(machine, dict):
        raise fail(path, '"rows" must be a list of objects and "machine" an object (schema in docs/CONTRACTS.md)')
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise fail(path, f"missing columns {', '.join(missing)} (schema in docs/CONTRACTS.md)")
    rows = [typed_row(r, path) for r in raw]
    for i, row in enumerate(rows, start=2 if path.suffix != ".json" else 0):
        empty = [c for c in REQUIRED if row.get(c) in (None, "")]
        if empty:
            where = f"line {i}" if path.suffix != ".json" else f"row {i}"
            raise fail(path, f"{where}: empty {', '.join(empty)}")
    if source:
        rows = [{**r, "source": source} for r in rows]
    return as_percent(rows), machine


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise fail(path, f"unreadable JSON ({e})") from None


def manifest_accuracy(manifest: dict) -> list[dict]:
    """Single-seed accuracy rows from the export manifest: the numpy reference of each npz."""
    rows = []
    for f in manifest.get("files", []):
        if f.get("format") == facts.REFERENCE.format and f.get("accuracy") is not None:
            rows.append({"framework": facts.folder(f.get("path"), f["framework"]), "method": f["method"], "seed": 0,
                         "sparsity": float(f["sparsity"]), "accuracy": float(f["accuracy"])})
    return rows


def _seed_of(directory: Path) -> int | None:
    name = directory.name
    return int(name[1:]) if name.startswith("s") and name[1:].isdigit() else None


def read_training(root: Path) -> tuple[dict, dict]:
    curves: dict[str, dict[int, dict]] = {}
    info: dict[str, dict[int, dict]] = {}
    for path in sorted((root / "train").glob("*/s*/curves.json")):
        seed = _seed_of(path.parent)
        if seed is None:
            continue
        framework = path.parent.parent.name
        curves.setdefault(framework, {})[seed] = _curves(_read_json(path), path)
        if (path.parent / "train.json").is_file():
            info.setdefault(framework, {})[seed] = _read_json(path.parent / "train.json")
    return curves, info


def _curves(doc, path) -> dict[str, list]:
    """curves.json as {"train_loss": [...], ...}; a list of per-epoch dicts is accepted too."""
    if isinstance(doc, list):
        doc = {k: [row.get(k) for row in doc] for k in (doc[0] if doc else {})}
    if not isinstance(doc, dict):
        raise fail(path, "expected per-epoch lists of train_loss, train_acc, val_loss, val_acc")
    return doc


def model_for_weights(root: Path, framework: str) -> Path | None:
    """The trained (dense) model of the lowest seed, else the exported dense k00 model."""
    trained = sorted((root / "train" / framework).glob("s*/model.npz"),
                     key=lambda p: _seed_of(p.parent) if _seed_of(p.parent) is not None else 1 << 30)
    if trained:
        return trained[0]
    return next(iter(sorted((root / "export" / framework).glob("*/k00/model.npz"))), None)


def read_accuracy(root: Path, manifest: dict) -> tuple[list[dict], str]:
    """Accuracy rows (%) and where they come from: seeds.csv, with the manifest's single seed for the
    model folders seeds.csv does not cover (e.g. a CNN exported after the last seeds run), at the
    methods seeds.csv has; without seeds.csv, the manifest alone."""
    from report.seeds import read_seeds_csv
    seeds_csv, manifest_path = root / "bench" / "seeds.csv", root / "export" / "manifest.json"
    single = as_percent(manifest_accuracy(manifest))
    if not seeds_csv.is_file():
        return single, f"{manifest_path} (single seed)" if single else ""
    rows = as_percent(read_seeds_csv(seeds_csv))
    covered, methods = {r["framework"] for r in rows}, {r["method"] for r in rows}
    extra = [r for r in single if r["framework"] not in covered and r["method"] in methods]
    folders = ", ".join(sorted({r["framework"] for r in extra}))
    return rows + extra, str(seeds_csv) + (f"; {manifest_path} (single seed) for {folders}" if extra else "")


def load_inputs(root: Path, device_results=()) -> Inputs:
    """Read seeds.csv (else the manifest), training runs, results and device results under root."""
    from pipeline import model_io
    root = Path(root)
    inputs = Inputs(root=root)
    manifest_path = root / "export" / "manifest.json"
    if manifest_path.is_file():
        inputs.manifest = _read_json(manifest_path)
        files = inputs.manifest.get("files") if isinstance(inputs.manifest, dict) else None
        if isinstance(files, list):
            inputs.manifest = {**inputs.manifest, "files": [by_folder(f) if isinstance(f, dict) else f for f in files]}
    inputs.accuracy, inputs.accuracy_source = read_accuracy(root, inputs.manifest)
    inputs.curves, inputs.train_info = read_training(root)
    for name in ("results.csv", "results.json"):
        path = root / "bench" / name
        if path.is_file():
            rows, machine = read_results(path)
            if name == "results.csv" and (root / "bench" / "results.json").is_file():
                machine = _read_json(root / "bench" / "results.json").get("machine", {})
            inputs.results = [r for r in rows if r.get("source", "host") != "device"]
            inputs.device += [r for r in rows if r.get("source") == "device"]
            inputs.results_path, inputs.machine = path, machine
            break
    for path in device_results:
        rows, _ = read_results(Path(path), source="device")
        inputs.device += rows
        inputs.device_paths.append(Path(path))
    for framework in inputs.frameworks:
        path = model_for_weights(root, framework)
        if path is not None:
            inputs.weights[framework] = (path, model_io.load(path))
        inputs.networks[framework] = _network(framework, inputs.weights.get(framework), root)
    from report.peer import PEER, read_peer
    if (root / PEER).is_file():
        inputs.peer_path, inputs.peer = root / PEER, read_peer(root / PEER)
    if not (inputs.accuracy or inputs.results or inputs.curves):
        raise fail(root, "nothing to report: no seeds.csv, manifest accuracies, results or training "
                         "runs found (run `make export` and `make bench` first)")
    return inputs


def _network(framework: str, weights, root: Path) -> str:
    if framework in facts.built_in_folders() or weights is None:
        return facts.network_of(framework, root)
    model = weights[1]
    return str(model.meta.get("net") or ("mlp" if model.is_mlp else "cnn"))


# ---------------------------------------------------------------- derived data

@dataclass
class Derived:
    curves: dict = field(default_factory=dict)  # (framework, method) -> [CurvePoint]
    layers: dict = field(default_factory=dict)  # framework -> [per-layer stats]
    structure: dict = field(default_factory=dict)  # framework -> level -> {weight, unit, widths}
    sel: list = field(default_factory=list)  # host ok rows at the configured batch and threads
    b1: list = field(default_factory=list)  # host ok rows at batch 1, 1 thread (the targets)


def layer_stats(model) -> list[dict]:
    """Q4 statistics of every layer of a dense model; "pruned" is False for the output layer."""
    stats = []
    for i, layer in enumerate(model.layers):
        w = layer.dense_weight()
        s = analysis.singular_values(w)
        stats.append({"shape": w.shape, "weights": w, "sv": s, "pruned": i < len(model.layers) - 1,
                      "near_zero": analysis.near_zero_fraction(w, NEAR_ZERO),
                      "kurtosis": analysis.excess_kurtosis(w),
                      "top_w": {f: analysis.top_weight_energy(w, f) for f in Q4_WEIGHT_SHARES},
                      "top_sv": {f: analysis.top_sv_energy(s, f) for f in Q4_SV_SHARES},
                      "r90": analysis.rank_for_energy(s, ENERGY_RANK)})
    return stats


def stored_weights(model) -> int:
    """Weights a physical model stores: nnz for CSR layers, full size for dense (shrunk) ones."""
    return sum(l.nnz if l.is_sparse else int(np.prod(l.shape)) for l in model.layers)


def structure(model, levels) -> dict[float, dict]:
    """Per level: share of weights removed by weight and by unit pruning, and hidden widths left."""
    from pipeline.methods import prune
    from pipeline.methods import physical
    total = sum(int(np.prod(l.shape)) for l in model.layers)
    out = {}
    for k in levels:
        w = physical(prune(model, "weight", k))
        u = physical(prune(model, "unit", k))
        out[k] = {"weight": 1 - stored_weights(w) / total, "unit": 1 - stored_weights(u) / total,
                  "widths": u.widths[1:-1]}
    return out


def derive(inp: Inputs, *, batch: int = 1, threads: int = 1) -> Derived:
    """Accuracy curves, per-layer weight statistics, pruning structure and the selected bench rows."""
    d = Derived(curves=analysis.curves(inp.accuracy), b1=analysis.ok_rows(inp.results),
                sel=analysis.ok_rows(inp.results, batch=batch, threads=threads))
    levels = sorted({p.sparsity for pts in d.curves.values() for p in pts} | {0.0})
    for fw, (_, model) in inp.weights.items():
        if not model.is_mlp:  # the per-layer questions are about the MLP; report.networks compares the CNN
            continue
        d.layers[fw] = layer_stats(model)
        d.structure[fw] = structure(model, levels)
    return d
