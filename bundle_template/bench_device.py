#!/usr/bin/env python3
"""Measure this bundle's latency on the device it runs on.

Writes rows in the project's bench results schema (source="device") so `make report
DEVICE_RESULTS=...` can put device numbers beside the host's: warm-up, then p50/p90/p99
over timed single calls, at 1 thread and all cores. Imports only numpy, the bundle's
runtime and the standard library; the bundle's hashes are checked before loading.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import predict
from predict import HERE, BundleError

# The bench results schema of docs/CONTRACTS.md, in order.
COLUMNS = ("source", "framework", "method", "sparsity", "artifact", "format", "variant", "runtime",
           "threads", "batch", "status", "reason", "p50_us", "p90_us", "p99_us", "mean_us",
           "per_sample_us", "reps", "ratio_vs_dense", "bytes", "gzip_bytes", "accuracy", "peak_rss_mb")


def time_calls(runner, x: np.ndarray, *, warmup: int, reps: int, max_seconds: float) -> np.ndarray:
    """Per-call wall times in microseconds; stops early (>= 5 reps) when max_seconds is spent."""
    for _ in range(warmup):
        runner(x)
    times = []
    deadline = time.perf_counter() + max_seconds
    for i in range(reps):
        t0 = time.perf_counter_ns()
        runner(x)
        times.append((time.perf_counter_ns() - t0) / 1e3)
        if i >= 4 and time.perf_counter() > deadline:
            break
    return np.asarray(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def base_row(bundle: predict.Bundle) -> dict:
    """The columns every row of this bundle shares; sizes are of the model file(s) as shipped."""
    prov, model = bundle.manifest["provenance"], bundle.manifest["model"]
    blobs = [bundle.read(name) for name in model["files"]]
    return {"source": "device", "framework": prov.get("framework", ""), "method": prov.get("method", ""),
            "sparsity": prov.get("sparsity", ""), "artifact": model["artifact"], "format": model["format"],
            "variant": model["variant"], "bytes": sum(len(b) for b in blobs),
            "gzip_bytes": sum(len(gzip.compress(b, 9, mtime=0)) for b in blobs)}


def bench_one(bundle: predict.Bundle, threads: int, batch: int, args, accuracy) -> dict:
    row = {"threads": threads, "batch": batch, "reason": "", "runtime": bundle.manifest["model"]["runtime"]}
    try:
        model = bundle.open_model(threads=threads)
        row["runtime"] = model.runtime or row["runtime"]
        shape = (batch, *bundle.manifest["input"]["sample_shape"])
        x = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32) / np.float32(255)
        t = time_calls(model, x, warmup=args.warmup, reps=args.reps, max_seconds=args.max_seconds)
    except BundleError:
        raise  # a tampered bundle is not a benchmark result
    except Exception as e:  # one failed configuration is a row, not a crash of the sweep
        row.update(status="failed", reason=predict.one_line(e))
        return row
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    prov = bundle.manifest["provenance"]
    dense = prov.get("method") == "dense" or prov.get("sparsity") == 0
    row.update(status="ok", p50_us=round(p50, 2), p90_us=round(p90, 2), p99_us=round(p99, 2),
               mean_us=round(float(t.mean()), 2), per_sample_us=round(p50 / batch, 3), reps=len(t),
               ratio_vs_dense=1.0 if dense else "", accuracy=accuracy if accuracy is not None else "",
               peak_rss_mb=round(peak_rss_mb(), 1))
    return row


def measure_accuracy(bundle: predict.Bundle, images: Path | None, labels: Path | None):
    if images is None:
        if labels is not None:
            raise BundleError("--labels: only used with --images")
        return None
    if labels is None:
        raise BundleError("--labels: needed with --images to measure accuracy")
    x = predict.load_images(images, bundle.manifest["input"])
    y = predict.load_labels(labels, bundle.manifest["output"]["n_classes"])
    if len(x) != len(y):
        raise BundleError(f"{labels}: {len(y)} labels for {len(x)} images")
    classes = predict.run_batched(bundle.open_model(), x).argmax(axis=1)
    return round(float((classes == y).mean()), 6)


def machine_info(bundle: predict.Bundle) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "CPU part") and value.strip():
                cpu = value.strip()
                break
    except OSError:
        pass
    module = predict.RUNNERS[bundle.manifest["model"]["runner"]].module
    versions = {"numpy": np.__version__, module: getattr(sys.modules.get(module), "__version__", "")}
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "bundle": bundle.manifest["name"]}


def write_outputs(path: Path, rows: list[dict], info: dict, config: dict) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in COLUMNS})
    doc = json.dumps({"machine": info, "config": config, "rows": rows}, indent=2, sort_keys=True) + "\n"
    for target, text in ((path, buf.getvalue()), (path.with_suffix(".json"), doc)):
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, target)
        except OSError as e:
            raise BundleError(f"{target}: cannot write ({e.strerror})") from None


MAX_BATCH = 65536  # a larger batch only measures swapping


def parse_list(option: str, text: str, word: dict) -> list[int]:
    """A comma list like 1,64 (and `word` spellings, e.g. all = every core), each 1..limit, deduplicated."""
    limit = {"--threads": predict.MAX_THREADS, "--batch": MAX_BATCH}[option]
    out = []
    for part in text.split(","):
        part = part.strip()
        n = word[part] if part in word else int(part) if part.isdigit() and len(part) < 10 else 0
        if not 1 <= n <= limit:
            raise BundleError(f"{option}: expected a comma list of integers in [1, {limit}]"
                              f"{' or ' + ', '.join(word) if word else ''}, got {text!r}")
        if n not in out:
            out.append(n)
    return out


# option -> (lowest, highest) accepted value
LIMITS = {"warmup": (0, 100_000), "reps": (1, 1_000_000), "max_seconds": (0.001, 86_400.0)}


def parse_args(argv):
    p = predict.ArgumentParser(prog="bench_device.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("device_results.csv"),
                   help="CSV to write (a .json with machine info goes beside it)")
    p.add_argument("--threads", default="1,all", help="comma list of thread counts; 'all' = every core")
    p.add_argument("--batch", default="1", help="comma list of batch sizes (default 1)")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls first (default 20)")
    p.add_argument("--reps", type=int, default=300, help="timed calls per configuration (default 300)")
    p.add_argument("--max-seconds", type=float, default=20.0,
                   help="stop a configuration early after this long, keeping >= 5 reps (default 20)")
    p.add_argument("--images", type=Path, help="test images (.npy or IDX) to also measure accuracy")
    p.add_argument("--labels", type=Path, help="labels for --images (.npy or IDX)")
    args = p.parse_args(argv)
    for name, (lo, hi) in LIMITS.items():
        if not lo <= getattr(args, name) <= hi:  # also refuses nan
            raise BundleError(f"--{name.replace('_', '-')}: must be in [{lo}, {hi}], got {getattr(args, name)}")
    args.thread_list = parse_list("--threads", args.threads, {"all": os.cpu_count() or 1})
    args.batches = sorted(parse_list("--batch", args.batch, {}))
    if not args.out.parent.is_dir():
        raise BundleError(f"{args.out}: directory {args.out.parent} does not exist")
    return args


def run(argv=None, bundle_dir: Path | None = None) -> int:
    args = parse_args(argv)
    bundle = predict.Bundle(bundle_dir or HERE)
    accuracy = measure_accuracy(bundle, args.images, args.labels)
    base = base_row(bundle)
    rows = []
    for threads in args.thread_list:
        for batch in args.batches:
            row = {**base, **bench_one(bundle, threads, batch, args, accuracy)}
            rows.append(row)
            print(f"{row['runtime']} threads={threads} batch={batch}: "
                  + (f"p50 {row['p50_us']:.1f} us, p90 {row['p90_us']:.1f}, p99 {row['p99_us']:.1f} "
                     f"({row['reps']} reps)" if row["status"] == "ok" else f"failed: {row['reason']}"))
    config = {"threads": args.threads, "batch": args.batches, "warmup": args.warmup, "reps": args.reps,
              "max_seconds": args.max_seconds}
    write_outputs(args.out, rows, machine_info(bundle), config)
    print(f"wrote {args.out}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def main(argv=None, bundle_dir: Path | None = None) -> int:
    try:
        return run(argv, bundle_dir)
    except BundleError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
