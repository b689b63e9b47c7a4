"""The sweep: every exported artifact x every runtime that can run it -> results.csv / .json.

Artifacts come from artifacts/export/manifest.json (or the directory layout: bench.artifacts).
Each runtime's files are measured in a fresh child process per runtime (and per thread count
where the runtime fixes threads at start-up), one child after another so measurements never
share the CPU with each other (bench.plan, bench.children, bench.child). Measurements are cached
by file hash, runtime, setting and library versions (bench.cache): a second run with nothing
changed measures nothing. A failure becomes rows with status "failed" and the reason;
`strict=True` raises instead (for tests).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import artifacts as A
from bench.cache import CACHE_FILE, Store
from bench.child import write_test_set
from bench.children import run_job
from bench.latency import LatencyConfig
from bench.machine import load_average, machine_info, usable_cores
from bench.plan import plan, reuse_manifest_accuracy
from bench.results import COLUMNS, Results, build_rows, merge_earlier, to_csv, write_results  # noqa: F401
from bench.size import identify_all
from export.runtimes import RUNTIMES
from pipeline.errors import fail


class BenchFailure(RuntimeError):
    """A measurement failed and the sweep runs with strict=True."""


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
    timeout_s: float = 900.0  # per file and step in a child: a hung file, not a long child, is stopped
    files_per_child: int = 200  # a fresh child after this many files: bounds what a runtime leaks per load
    reuse: bool = True  # False: measure everything again (the cache is still updated)


def data_sha256(data_dir: str | None) -> tuple[str, str | None]:
    """(sha256 of the test files, of the data set as the export manifest records it; None when
    the training files are not there)."""
    import hashlib

    from pipeline.data import FILES, data_dir as resolve, files_sha256
    from pipeline.errors import PrunedgeError
    d = resolve(data_dir)
    test = hashlib.sha256(b"".join((d / name).read_bytes() for name in FILES["test"])).hexdigest()
    try:
        return test, files_sha256(d)
    except (PrunedgeError, OSError):
        return test, None


def context(machine: dict) -> dict:
    """What must match for a cached measurement to stand: the machine and the libraries."""
    return {k: machine.get(k) for k in ("cpu", "arch", "cores", "python", "versions")}


def sweep(config: SweepConfig, progress: bool = True) -> dict:
    """Measure everything selected by `config`; returns {"machine", "config", "rows", ...}."""
    started, machine = time.perf_counter(), machine_info()
    artifacts = A.select(A.discover(config.root), frameworks=config.frameworks, methods=config.methods,
                         levels=config.levels, quick=config.quick)
    if not artifacts:
        raise fail(config.root, "no exported artifacts match the selection "
                                "(run `make export` first, or relax --framework/--method/--levels)")
    test_sha, export_sha = data_sha256(config.data_dir)
    store = Store(Path(config.out) / CACHE_FILE, context(machine), latency=asdict(config.latency),
                  data_sha256=test_sha)
    if not config.reuse:
        store.records.clear()
    idents = identify_all(artifacts, store.files, workers=usable_cores())
    sized = time.perf_counter()
    from_manifest = reuse_manifest_accuracy(artifacts, idents, store, export_sha) if config.reuse else 0
    results = Results(store, idents, config.threads[0])
    results.paths = {a.rel: a.path for a in artifacts}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        jobs = plan(artifacts, idents, config, store, write_test_set(config.data_dir, Path(tmp)))
        child_s = _run(jobs, config, results, store, idents, progress)
    rows = build_rows(artifacts, config, results)
    store.save({str(Path(a.path).resolve()): idents[a.rel].sha256 for a in artifacts})
    machine["load_average_end"] = load_average()
    return {"machine": machine, "config": _config_json(config), "rows": rows,
            "baseline_rss_mb": results.baselines(artifacts, config.runtimes),
            "jobs": len(jobs), "files": len(artifacts), "accuracy_from_manifest": from_manifest,
            "child_seconds": child_s, "phase_seconds": results.phase_seconds(),
            "identify_s": round(sized - started, 1),
            "elapsed_s": round(time.perf_counter() - started, 1)}


def _run(jobs: list[dict], config: SweepConfig, results: Results, store: Store, idents: dict,
         progress: bool) -> dict:
    """Every job in turn; returns {runtime: {"wall", "cpu", "children"}} (where the budget goes)."""
    spent: dict[str, dict] = {}
    bar = _progress(sum(len(j["items"]) for j in jobs), progress)
    for job in jobs:
        t0, cpu0 = time.perf_counter(), _children_cpu()
        if bar is not None:
            bar.set_postfix_str(f"{job['runtime']} x{len(job['items'])}", refresh=False)

        def seen(record: dict, finished: bool) -> None:
            failure = results.add(job, record)
            if failure and config.strict:
                raise BenchFailure(failure)
            if finished and bar is not None:
                bar.update()

        problems = run_job(job, config.timeout_s, seen)
        for rel, text in problems:
            failure = results.problem(job, rel, text)
            if config.strict:
                raise BenchFailure(failure)
        if bar is not None:
            bar.update(len(problems))
        s = spent.setdefault(job["runtime"], {"wall": 0.0, "cpu": 0.0, "files": 0})
        s["wall"] += time.perf_counter() - t0
        s["cpu"] += _children_cpu() - cpu0
        s["files"] += len(job["items"])
        store.save({str(Path(results.paths[a]).resolve()): idents[a].sha256 for a in results.paths})
    if bar is not None:
        bar.close()
    return {k: {"wall": round(v["wall"], 1), "cpu": round(v["cpu"], 1), "files": v["files"]}
            for k, v in sorted(spent.items())}


def _children_cpu() -> float:
    """User + system CPU seconds of finished children (on a busy machine wall time overstates
    what the sweep itself needs)."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, dynamic_ncols=True, desc="bench", unit="file")


def _config_json(config: SweepConfig) -> dict:
    d = asdict(config)
    d["root"], d["out"] = str(config.root), str(config.out)
    return d
