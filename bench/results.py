"""results.csv / results.json: one row per artifact x runtime x threads x batch (docs/CONTRACTS.md).

Measurements live in the bench cache (bench.cache.Store), whether this run or an earlier one
took them; a row is built from the cache, or, where a number is missing, from the most specific
failure this run saw.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

from bench.latency import ratio_vs_dense
from export.runtimes import RUNTIMES, runs
from pipeline.errors import fail
from pipeline.fileio import write_json, write_text

COLUMNS = ("source", "framework", "method", "sparsity", "artifact", "format", "variant", "runtime",
           "threads", "batch", "status", "reason", "p50_us", "p90_us", "p99_us", "mean_us",
           "per_sample_us", "reps", "ratio_vs_dense", "bytes", "gzip_bytes", "accuracy",
           "peak_rss_mb")
LATENCY = ("p50_us", "p90_us", "p99_us", "mean_us", "reps")


class Results:
    """Takes child records into the store, keeps this run's failures, builds the rows."""

    def __init__(self, store, idents: dict, memory_threads: int):
        self.store, self.idents, self.memory_threads = store, idents, memory_threads
        self.paths = {}  # artifact rel -> path, for the store's records
        self.errors: dict[tuple, str] = {}
        self.problems: dict[tuple, str] = {}
        self.phases: dict[str, dict[str, list[float]]] = {}  # runtime -> phase -> [wall s, cpu s]

    def add(self, job: dict, record: dict) -> str | None:
        """Store one record; the failure it reports, if any (for strict mode)."""
        rel, rt, kind = record["key"], job["runtime"], record["kind"]
        sha = self.idents[rel].sha256
        if kind == "phase":
            spent = self.phases.setdefault(rt, {}).setdefault(record["phase"], [0.0, 0.0])
            spent[0] += record["s"]
            spent[1] += record["cpu_s"]
        elif kind == "latency":
            key = self.store.latency_key(sha, rt, record["threads"], record["batch"])
            self.store.put(key, {k: record[k] for k in LATENCY}, self.paths[rel])
        elif kind == "memory":
            key = self.store.memory_key(sha, rt, record["threads"])
            self.store.put(key, {"baseline_mb": record["baseline_mb"], "peak_mb": record["peak_mb"]}, self.paths[rel])
        elif kind == "accuracy":
            self.store.put(self.store.accuracy_key(sha, rt), {"accuracy": record["accuracy"]}, self.paths[rel])
        elif kind == "error":
            text = f"{record['stage']}: {record['reason']}"
            key = self._failure_key(sha, rt, record)
            if key is not None:  # the file fails in this runtime: kept, not retried every run
                self.store.fail(key, text, self.paths[rel])
            else:  # the runtime or process failed (import, crash, hang): this run only
                self.errors[(rel, rt, record["stage"])] = text
            return f"{rt} on {rel}: {text}"
        return None

    def _failure_key(self, sha: str, rt: str, record: dict) -> str | None:
        if "threads" in record and "batch" in record:
            return self.store.latency_key(sha, rt, record["threads"], record["batch"])
        if record["stage"] == "memory":
            return self.store.memory_key(sha, rt, self.memory_threads)
        if record["stage"] == "accuracy":
            return self.store.accuracy_key(sha, rt)
        return None

    def problem(self, job: dict, rel: str, text: str) -> str:
        for t in job["threads"]:
            self.problems[(rel, job["runtime"], t)] = text
        return f"{job['runtime']} on {rel}: {text}"

    def reason(self, rel: str, runtime: str, threads: int, batch: int) -> str:
        """The most specific failure explaining a missing measurement."""
        key = (rel, runtime)
        if self.idents[rel].sha256 is None:
            return "file not found"
        for stage in ("import", "process"):
            if key + (stage,) in self.errors:
                return self.errors[key + (stage,)]
        return self.problems.get(key + (threads,), "no result from the child process")

    def measured(self, rel: str, runtime: str, threads: int, batch: int):
        sha = self.idents[rel].sha256
        if sha is None:
            return None, None, None
        store = self.store
        return (store.get(store.latency_key(sha, runtime, threads, batch)),
                store.get(store.memory_key(sha, runtime, self.memory_threads)),
                store.get(store.accuracy_key(sha, runtime)))

    def row(self, a, runtime: str, threads: int, batch: int) -> dict:
        lat, mem, acc = self.measured(a.rel, runtime, threads, batch)
        ident = self.idents[a.rel]
        row = dict.fromkeys(COLUMNS)
        row.update(source="host", framework=a.framework, method=a.method, sparsity=a.sparsity,
                   artifact=a.rel, format=a.format, variant=a.variant, runtime=runtime,
                   threads=threads, batch=batch, bytes=ident.bytes, gzip_bytes=ident.gzip_bytes,
                   accuracy=_round(_value(acc, "accuracy"), 5), peak_rss_mb=_round(_value(mem, "peak_mb"), 1))
        if lat is None or "error" in lat:
            row.update(status="failed", reason=lat["error"] if lat else self.reason(a.rel, runtime, threads, batch))
            return row
        notes = [r["error"] for r in (mem, acc) if r is not None and "error" in r]
        row.update(status="ok", reason="; ".join(notes), reps=lat["reps"],
                   **{k: _round(lat[k], 3) for k in LATENCY if k != "reps"},
                   per_sample_us=_round(lat["p50_us"] / batch, 4))
        return row

    def phase_seconds(self) -> dict:
        """runtime -> {phase: {"wall", "cpu"}}; "file" is a file's whole fork (the rest is fork,
        test-set mapping and exit)."""
        return {rt: {name: {"wall": round(w, 1), "cpu": round(c, 1)} for name, (w, c) in sorted(p.items())}
                for rt, p in sorted(self.phases.items())}

    def baselines(self, artifacts, runtimes) -> dict[str, float]:
        """Median RSS of a child that imported each runtime but loaded no model, MiB."""
        by_rt: dict[str, list[float]] = {}
        for a in artifacts:
            for rt in runtimes:
                mem = self.measured(a.rel, rt, self.memory_threads, 1)[1]
                if mem is not None and "baseline_mb" in mem:
                    by_rt.setdefault(rt, []).append(mem["baseline_mb"])
        return {rt: round(statistics.median(v), 1) for rt, v in sorted(by_rt.items())}


def _value(record: dict | None, name: str):
    return None if record is None else record.get(name)


def _round(x, digits):
    return None if x is None else round(float(x), digits)


def build_rows(artifacts, config, results: Results) -> list[dict]:
    rows = []
    for a in artifacts:
        for name in config.runtimes:
            if runs(RUNTIMES[name], fmt=a.format, method=a.method):
                for t in config.threads:
                    for b in config.batches:
                        rows.append(results.row(a, name, t, b))
    for row, ratio in zip(rows, ratio_vs_dense(rows)):
        row["ratio_vs_dense"] = _round(ratio, 4)
    return rows


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in COLUMNS])
    return buf.getvalue()


def merge_earlier(results: dict, out: Path) -> dict:
    """`results` plus the rows of an earlier results.json in `out` for artifacts this run did not
    measure (`bench run --append`: a sweep in parts); the earlier configs are kept in order."""
    path = Path(out) / "results.json"
    if not path.is_file():
        return results
    try:
        earlier = json.loads(path.read_text())
        rows = list(earlier["rows"])
    except (ValueError, KeyError, TypeError) as e:
        raise fail(path, f"cannot append to it ({e})") from None
    measured = {r["artifact"] for r in results["rows"]}
    kept = [r for r in rows if r.get("artifact") not in measured]
    earlier_runs = earlier.get("earlier_runs", []) + [earlier.get("config")]
    return {**results, "rows": kept + results["rows"], "earlier_runs": earlier_runs}


def write_results(results: dict, out: Path) -> tuple[Path, Path]:
    """results.csv (COLUMNS, in order) and results.json, both atomically."""
    out = Path(out)
    csv_path = write_text(out / "results.csv", to_csv(results["rows"]))
    json_path = write_json(out / "results.json", results)
    return csv_path, json_path
