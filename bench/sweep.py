"""The sweep: every exported artifact x every runtime that can run it -> results.csv / .json.

Artifacts come from artifacts/export/manifest.json (or, without one, from the
`<framework>/<method>/k<NN>/model[.<variant>].<ext>` layout). Each artifact x runtime is
measured in a fresh child process (bench/child.py), one after another so measurements
never share the CPU with each other. A runtime that fails becomes rows with status
"failed" and the reason; `strict=True` raises instead (for tests).
"""
from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.child import MARK
from bench.latency import LatencyConfig, ratio_vs_dense
from bench.machine import load_average, machine_info, usable_cores
from export.runtimes import RUNTIMES, runs, thread_env
from bench.size import file_sizes
from pipeline.errors import fail
from pipeline.fileio import write_json, write_text

COLUMNS = ("source", "framework", "method", "sparsity", "artifact", "format", "variant", "runtime",
           "threads", "batch", "status", "reason", "p50_us", "p90_us", "p99_us", "mean_us",
           "per_sample_us", "reps", "ratio_vs_dense", "bytes", "gzip_bytes", "accuracy",
           "peak_rss_mb")
FORMATS = {".npz": "npz", ".onnx": "onnx", ".tflite": "tflite"}
QUICK_LEVELS = (0.0, 90.0)
REPO = Path(__file__).resolve().parents[1]


class BenchFailure(RuntimeError):
    """A measurement failed and the sweep runs with strict=True."""


@dataclass(frozen=True, kw_only=True)
class Artifact:
    path: Path
    rel: str  # relative to the export root, as in the manifest
    format: str
    variant: str
    framework: str
    method: str
    sparsity: float


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    root: Path = Path("artifacts/export")
    out: Path = Path("artifacts/bench")
    data_dir: str | None = None  # None: $PRUNEDGE_DATA or the Debian package's location
    runtimes: tuple[str, ...] = tuple(RUNTIMES)
    frameworks: tuple[str, ...] | None = None  # None = all found
    methods: tuple[str, ...] | None = None
    levels: tuple[float, ...] | None = None
    threads: tuple[int, ...] = field(default_factory=lambda: tuple(sorted({1, usable_cores()})))
    batches: tuple[int, ...] = (1, 64)
    latency: LatencyConfig = LatencyConfig()
    quick: bool = False  # levels 0 and 90 only (unless levels is given)
    strict: bool = False
    timeout_s: float = 900.0  # per child; TF import plus a slow CSR accuracy pass fit easily


# ------------------------------------------------------------------ which artifacts

def discover(root: Path) -> list[Artifact]:
    """Artifacts listed in root/manifest.json, else found by the directory layout."""
    root = Path(root)
    manifest = root / "manifest.json"
    if manifest.is_file():
        return _from_manifest(manifest, root)
    return _from_layout(root)


def _from_manifest(manifest: Path, root: Path) -> list[Artifact]:
    try:
        files = json.loads(manifest.read_text())["files"]
        out = []
        for f in files:
            if f["format"] not in FORMATS.values():
                continue
            out.append(Artifact(path=root / f["path"], rel=f["path"], format=f["format"],
                                variant=f.get("variant") or "fp32", framework=f["framework"],
                                method=f["method"], sparsity=float(f["sparsity"])))
        return out
    except (ValueError, KeyError, TypeError) as e:
        raise fail(manifest, f"unreadable manifest ({type(e).__name__}: {e})") from None


def _from_layout(root: Path) -> list[Artifact]:
    out = []
    for path in sorted(root.glob("*/*/k*/model*")):
        fmt = FORMATS.get(path.suffix)
        k = path.parent.name[1:]
        if fmt is None or not k.isdigit():
            continue
        parts = path.name.split(".")  # model.npz | model.<variant>.<ext>
        variant = ".".join(parts[1:-1]) or "fp32"
        out.append(Artifact(path=path, rel=path.relative_to(root).as_posix(), format=fmt,
                            variant=variant, framework=path.parents[2].name,
                            method=path.parents[1].name, sparsity=float(k)))
    return out


def select(artifacts: list[Artifact], config: SweepConfig) -> list[Artifact]:
    levels = config.levels if config.levels is not None else (QUICK_LEVELS if config.quick else None)
    keep = [a for a in artifacts
            if (config.frameworks is None or a.framework in config.frameworks)
            and (config.methods is None or a.method in config.methods)
            and (levels is None or a.sparsity in levels)]
    return sorted(keep, key=lambda a: (a.framework, a.method, a.sparsity, a.format, a.variant))


# ------------------------------------------------------------------ jobs for child processes

def plan(artifacts: list[Artifact], config: SweepConfig) -> list[dict]:
    """One fresh child per artifact x runtime (memory, accuracy, every in-process thread count);
    plus, for runtimes whose threads are fixed at start-up, one child per further thread
    count that times all their artifacts (latency only)."""
    jobs = []
    for a in artifacts:
        for name in config.runtimes:
            rt = RUNTIMES[name]
            if runs(rt, fmt=a.format, method=a.method):
                threads = config.threads if rt.threads_in_process else config.threads[:1]
                jobs.append(_job(name, [a], threads, config, memory=True, accuracy=True))
    for name in config.runtimes:
        rt = RUNTIMES[name]
        items = [a for a in artifacts if runs(rt, fmt=a.format, method=a.method)]
        if not rt.threads_in_process and items:
            for t in config.threads[1:]:
                jobs.append(_job(name, items, (t,), config, memory=False, accuracy=False))
    return jobs


def _job(runtime: str, items: list[Artifact], threads, config: SweepConfig, *, memory: bool,
         accuracy: bool) -> dict:
    return {"runtime": runtime, "threads": list(threads), "batches": list(config.batches),
            "latency": asdict(config.latency), "data_dir": config.data_dir,
            "memory": memory, "accuracy": accuracy,
            "items": [{"key": a.rel, "path": str(Path(a.path).resolve())} for a in items]}


def run_child(job: dict, timeout_s: float) -> tuple[list[dict], str | None]:
    """Run one job in a fresh interpreter: (records, why it ended badly or None)."""
    env = {**os.environ, **thread_env(RUNTIMES[job["runtime"]], job["threads"][0]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.child"], input=json.dumps(job),
                              capture_output=True, text=True, timeout=timeout_s, env=env)
        stdout, problem = proc.stdout, None
        if proc.returncode != 0:
            tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            problem = f"child exited with code {proc.returncode}" + (f": {tail[-1][:200]}" if tail else "")
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ""
        stdout = out.decode(errors="replace") if isinstance(out, bytes) else out
        problem = f"child timed out after {timeout_s:.0f} s"
    records = [json.loads(line[len(MARK):]) for line in stdout.splitlines() if line.startswith(MARK)]
    return records, problem


# ------------------------------------------------------------------ rows

class Results:
    """Collects child records and turns them into one row per artifact x runtime x threads x batch."""

    def __init__(self):
        self.latency, self.errors, self.memory, self.accuracy = {}, {}, {}, {}
        self.job_problems: dict[tuple, str] = {}

    def add(self, job: dict, records: list[dict], problem: str | None) -> list[str]:
        """Store a child's records; returns the failure reasons found (for strict mode)."""
        rt = job["runtime"]
        failures = []
        for r in records:
            key = (r["key"], rt)
            if r["kind"] == "latency":
                self.latency[key + (r["threads"], r["batch"])] = r
            elif r["kind"] == "memory":
                self.memory[key] = r
            elif r["kind"] == "accuracy":
                self.accuracy[key] = r["accuracy"]
            elif r["kind"] == "error":
                where = key + ((r["threads"], r["batch"]) if "threads" in r else (r["stage"],))
                self.errors[where] = f"{r['stage']}: {r['reason']}"
                failures.append(f"{rt} on {r['key']}: {r['stage']}: {r['reason']}")
        if problem:
            for item in job["items"]:
                for t in job["threads"]:
                    self.job_problems[(item["key"], rt, t)] = problem
            failures.append(f"{rt}: {problem}")
        return failures

    def reason(self, key: tuple, threads: int, batch: int) -> str:
        """The most specific failure explaining a missing measurement."""
        if key + (threads, batch) in self.errors:
            return self.errors[key + (threads, batch)]
        for stage in ("import", "load", "data"):
            if key + (stage,) in self.errors:
                return self.errors[key + (stage,)]
        return self.job_problems.get(key + (threads,), "no result from the child process")

    def row(self, a: Artifact, runtime: str, threads: int, batch: int, sizes) -> dict:
        key = (a.rel, runtime)
        lat = self.latency.get(key + (threads, batch))
        mem = self.memory.get(key)
        acc = self.accuracy.get(key)
        row = dict.fromkeys(COLUMNS)
        row.update(source="host", framework=a.framework, method=a.method, sparsity=a.sparsity,
                   artifact=a.rel, format=a.format, variant=a.variant, runtime=runtime,
                   threads=threads, batch=batch, bytes=sizes[0], gzip_bytes=sizes[1],
                   accuracy=_round(acc, 5), peak_rss_mb=_round(mem and mem["peak_mb"], 1))
        if lat is None:
            row.update(status="failed", reason=self.reason(key, threads, batch))
            return row
        notes = [self.errors[key + ("accuracy",)]] if key + ("accuracy",) in self.errors else []
        row.update(status="ok", reason="; ".join(notes), reps=lat["reps"],
                   **{k: _round(lat[k], 3) for k in ("p50_us", "p90_us", "p99_us", "mean_us")},
                   per_sample_us=_round(lat["p50_us"] / batch, 4))
        return row

    def baselines(self) -> dict[str, float]:
        """Median RSS of a child that imported each runtime but loaded no model, MiB."""
        by_rt: dict[str, list[float]] = {}
        for (_, rt), m in self.memory.items():
            by_rt.setdefault(rt, []).append(m["baseline_mb"])
        return {rt: round(statistics.median(v), 1) for rt, v in sorted(by_rt.items())}


def _round(x, digits):
    return None if x is None else round(float(x), digits)


SIZES_CACHE = ".sizes-cache.json"  # in the output dir: gzip -9 of ~1 GB of artifacts takes minutes


def artifact_sizes(artifacts: list[Artifact], cache_path: Path | None = None,
                   progress: bool = False) -> dict[str, tuple]:
    """rel -> (bytes, gzip bytes); re-used from the cache while a file's size and mtime match."""
    cache = {}
    if cache_path is not None and cache_path.is_file():
        try:
            cache = json.loads(cache_path.read_text())
        except ValueError:
            cache = {}
    out, fresh = {}, {}
    for a in _progress(artifacts, progress, desc="sizes", unit="file"):
        try:
            st = Path(a.path).stat()
        except OSError:
            out[a.rel] = (None, None)
            continue
        stamp = [st.st_size, st.st_mtime_ns]
        hit = cache.get(str(Path(a.path).resolve()))
        if hit and hit[:2] == stamp:
            out[a.rel] = (hit[0], hit[2])
        else:
            out[a.rel] = file_sizes(a.path)
        fresh[str(Path(a.path).resolve())] = stamp + [out[a.rel][1]]
    if cache_path is not None and fresh != {k: cache.get(k) for k in fresh}:
        write_json(cache_path, {**cache, **fresh})
    return out


def build_rows(artifacts: list[Artifact], config: SweepConfig, results: Results,
               sizes: dict[str, tuple] | None = None) -> list[dict]:
    sizes = sizes if sizes is not None else artifact_sizes(artifacts)
    rows = []
    for a in artifacts:
        for name in config.runtimes:
            if runs(RUNTIMES[name], fmt=a.format, method=a.method):
                for t in config.threads:
                    for b in config.batches:
                        rows.append(results.row(a, name, t, b, sizes[a.rel]))
    for row, ratio in zip(rows, ratio_vs_dense(rows)):
        row["ratio_vs_dense"] = _round(ratio, 4)
    return rows


# ------------------------------------------------------------------ the sweep and its files

def sweep(config: SweepConfig, progress: bool = True) -> dict:
    """Measure everything selected by `config`; returns {"machine", "config", "rows", ...}."""
    started = time.perf_counter()
    machine = machine_info()
    artifacts = select(discover(config.root), config)
    if not artifacts:
        raise fail(config.root, "no exported artifacts match the selection "
                                "(run `make export` first, or relax --framework/--method/--levels)")
    sizes = artifact_sizes(artifacts, Path(config.out) / SIZES_CACHE, progress)
    jobs = plan(artifacts, config)
    results = Results()
    child_s: dict[str, list[float]] = {}  # [wall, cpu] s per runtime: where the budget goes
    bar = _progress(jobs, progress, desc="bench", unit="child")
    for job in bar:
        if progress:
            bar.set_postfix_str(f"{job['runtime']} {job['items'][0]['key']}", refresh=False)
        t0, cpu0 = time.perf_counter(), _children_cpu()
        records, problem = run_child(job, config.timeout_s)
        wall, cpu = child_s.setdefault(job["runtime"], [0.0, 0.0])
        child_s[job["runtime"]] = [wall + time.perf_counter() - t0, cpu + _children_cpu() - cpu0]
        failures = results.add(job, records, problem)
        if failures and config.strict:
            raise BenchFailure(failures[0])
    rows = build_rows(artifacts, config, results, sizes)
    machine["load_average_end"] = load_average()
    return {"machine": machine, "config": _config_json(config), "rows": rows,
            "baseline_rss_mb": results.baselines(), "jobs": len(jobs),
            "child_seconds": {k: {"wall": round(w, 1), "cpu": round(c, 1)}
                              for k, (w, c) in sorted(child_s.items())},
            "elapsed_s": round(time.perf_counter() - started, 1)}


def _children_cpu() -> float:
    """User + system CPU seconds of finished children (on a busy machine wall time overstates
    what the sweep itself needs)."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _progress(items, enabled: bool, **kwargs):
    if not enabled:
        return items
    from tqdm import tqdm
    return tqdm(items, dynamic_ncols=True, **kwargs)


def _config_json(config: SweepConfig) -> dict:
    d = asdict(config)
    d["root"], d["out"] = str(config.root), str(config.out)
    return d


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
    runs = earlier.get("earlier_runs", []) + [earlier.get("config")]
    return {**results, "rows": kept + results["rows"], "earlier_runs": runs}


def write_results(results: dict, out: Path) -> tuple[Path, Path]:
    """results.csv (COLUMNS, in order) and results.json, both atomically."""
    out = Path(out)
    csv_path = write_text(out / "results.csv", to_csv(results["rows"]))
    json_path = write_json(out / "results.json", results)
    return csv_path, json_path
