"""What earlier sweeps measured, so a second `make bench` with nothing changed measures nothing.

A measurement is keyed by the file's sha256, the runtime row, the setting (threads, batch,
latency config, test-set sha256) and a context digest (library versions, Python, CPU, cores,
this schema): change any of them and it is measured again. Only successful measurements are
kept; a failure is tried again next run. File hashes and gzip sizes are kept by path, size and
mtime so an unchanged tree is not re-read either. One JSON file in the output directory.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.fileio import write_json

CACHE_FILE = ".bench-cache.json"
SCHEMA = 1  # bump when a measurement's meaning changes (then everything is measured again)
MEASURING_CODE = ("child.py", "fork.py", "latency.py", "memory.py")  # a change retries cached failures


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_digest() -> str:
    here = Path(__file__).resolve().parent
    return digest([(here / name).read_text() for name in MEASURING_CODE])


class Store:
    """Measurement records by key, plus the per-path file fingerprints."""

    def __init__(self, path: Path | None, context: dict, *, latency: dict, data_sha256: str | None):
        self.path = Path(path) if path is not None else None
        self.context = digest({"schema": SCHEMA, **context})
        self.latency, self.data_sha256, self.code = latency, data_sha256, code_digest()
        doc = self._read()
        self.files: dict[str, list] = doc.get("files", {})  # abs path -> [size, mtime_ns, sha256, {level: gzip}]
        self.records: dict[str, dict] = {k: v for k, v in doc.get("records", {}).items()
                                         if k.startswith(self.context + "|")}
        self.reused = 0

    def _read(self) -> dict:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # a damaged cache costs a re-measurement, never a failure
        return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA else {}

    def key(self, sha256: str, runtime: str, kind: str, setting: dict) -> str:
        return f"{self.context}|{sha256}|{runtime}|{kind}|{digest(setting)}"

    def latency_key(self, sha256: str, runtime: str, threads: int, batch: int) -> str:
        return self.key(sha256, runtime, "latency", {"threads": threads, "batch": batch, "config": self.latency})

    def memory_key(self, sha256: str, runtime: str, threads: int) -> str:
        return self.key(sha256, runtime, "memory", {"threads": threads})

    def accuracy_key(self, sha256: str, runtime: str) -> str:
        return self.key(sha256, runtime, "accuracy", {"data": self.data_sha256})

    def get(self, key: str) -> dict | None:
        """The measurement, or {"error": reason} of a failure that still stands, or None."""
        record = self.records.get(key)
        if record is not None and "error" in record and record.get("code") != self.code:
            return None
        return record

    def fail(self, key: str, reason: str, path) -> None:
        self.put(key, {"error": reason, "code": self.code}, path)

    def put(self, key: str, record: dict, path) -> None:
        """`record` measured on the file at `path` (kept while that file still has this hash)."""
        self.records[key] = {**record, "file": str(Path(path).resolve())}

    def save(self, current: dict[str, str]) -> None:
        """Write the cache, dropping records of files that are gone or whose hash changed
        (`current`: resolved path -> sha256 of the files identified in this run)."""
        if self.path is None:
            return
        from pipeline.fileio import locked
        with locked(self.path):  # a bench run into the same place may have saved its records meanwhile
            disk = self._read()
            merged = {**disk.get("records", {}), **self.records}
            records = {k: v for k, v in merged.items() if Path(v["file"]).exists()
                       and current.get(v["file"], k.split("|")[1]) == k.split("|")[1]}
            files = {p: v for p, v in {**disk.get("files", {}), **self.files}.items() if Path(p).exists()}
            write_json(self.path, {"schema": SCHEMA, "files": files, "records": records})
