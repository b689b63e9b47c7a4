"""Run bench jobs in fresh child processes (bench/child.py), one after another.

A child measures many files. Its records arrive as they are measured; the watchdog gives it
`timeout_s` per record (a hung file, not a long batch of files, is what it stops). When a child
crashes or hangs, the file it was on gets the reason and a new child takes the files that still
need something, so one bad file never costs the measurements of the others.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from bench.child import MARK
from export.runtimes import RUNTIMES, thread_env

REPO = Path(__file__).resolve().parents[1]


def pending(item: dict) -> bool:
    return bool(item.get("memory") or item.get("accuracy") or item.get("latency"))


def account(items: dict[str, dict], record: dict) -> None:
    """Strike what `record` answers (a measurement or its failure) off its item's needs."""
    item = items.get(record.get("key"))
    if item is None:
        return
    kind, stage = record["kind"], record.get("stage")
    if kind == "memory" or (kind == "error" and stage == "memory"):
        item["memory"] = False
    elif kind == "accuracy" or (kind == "error" and stage == "accuracy"):
        item["accuracy"] = False
    elif kind == "done" or (kind == "error" and stage in ("import", "process")):
        item.update(memory=False, accuracy=False, latency=[])
    elif "threads" in record and "batch" in record:  # a latency or its load/latency error
        item["latency"] = [tb for tb in item["latency"] if tb != [record["threads"], record["batch"]]]


def run_job(job: dict, timeout_s: float, on_record: Callable[[dict, bool], None]) -> list[tuple[str, str]]:
    """Run `job` in as many children as crashes make necessary; `on_record(record, finished)` sees
    every record (finished: its file needs nothing more). Returns (file key, problem) for the files
    a child died or hung on (every remaining file when it died before any)."""
    items = {it["key"]: {**it, "latency": [list(tb) for tb in it.get("latency", [])]} for it in job["items"]}
    order = [it["key"] for it in job["items"]]
    problems = []

    def seen(record: dict) -> None:
        item = items.get(record.get("key"))
        was = item is not None and pending(item)
        account(items, record)
        on_record(record, was and not pending(item))

    while any(pending(items[k]) for k in order):
        todo = [items[k] for k in order if pending(items[k])]
        culprit, problem = run_child({**job, "items": todo}, timeout_s, seen)
        if problem is None:
            break
        if culprit is None:
            problems += [(it["key"], problem) for it in todo]
            break
        problems.append((culprit, problem))
        items[culprit].update(memory=False, accuracy=False, latency=[])
    return problems


def _env(job: dict) -> dict:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **thread_env(RUNTIMES[job["runtime"]], job["threads"][0]), "PYTHONPATH": path}


def run_child(job: dict, timeout_s: float, on_record: Callable[[dict], None]) -> tuple[str | None, str | None]:
    """One child: (key of the file it was on, why it ended badly) or (None, None) when it finished."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: TensorFlow's chatter cannot block it
        proc = subprocess.Popen([sys.executable, "-m", "bench.child"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, env=_env(job))
        try:
            proc.stdin.write(json.dumps({**job, "timeout_s": timeout_s}).encode())
            proc.stdin.close()
            current, hung = _follow(proc, timeout_s, on_record)
        finally:  # also when on_record raises (strict mode): never leave a child behind
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
            proc.stdout.close()
        if hung:
            return current, f"child timed out after {timeout_s:.0f} s"
        if code == 0:
            return None, None
        err.seek(0)
        tail = [line for line in err.read().decode(errors="replace").strip().splitlines() if line.strip()]
        return current, f"child exited with code {code}" + (f": {tail[-1][:200]}" if tail else "")


def _follow(proc: subprocess.Popen, timeout_s: float, on_record) -> tuple[str | None, bool]:
    """Hand each record on; (the file the child is on, whether it hung)."""
    current = None
    for record in _records(proc, timeout_s):
        if record is None:
            return current, True
        if record["kind"] == "start":
            current = record["key"]
        elif record["kind"] == "done":
            current = None
        on_record(record)
    return current, False


def _records(proc: subprocess.Popen, timeout_s: float):
    """The child's records as they arrive; None when none came for `timeout_s` seconds."""
    fd, buffer = proc.stdout.fileno(), b""
    while True:
        ready = select.select([fd], [], [], timeout_s)[0]
        if not ready:
            yield None
            return
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            if text.startswith(MARK):
                yield json.loads(text[len(MARK):])
