"""Artifact size on disk and gzipped (what a download or flash image would cost), and its sha256.

The export manifest carries each file's sha256 and gzip size (`export.manifest.file_entry`); the
bench re-hashes the file (a changed file must not reuse old numbers) but takes the gzip size from
the manifest when the hash and the gzip level match, and computes it otherwise. Hashes and gzip
sizes are also kept by path, size and mtime in the bench cache, so an unchanged tree is not re-read.
A model of several files (NCNN's .param + .bin) counts all of them.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# gzip -6 (gzip's own default): within 0.1% of -9's size on every file kind measured here at a
# fraction of its time (see README, "Benchmark"); export.manifest.file_entry uses the same level.
GZIP_LEVEL = 6


def gzip_bytes(data: bytes, level: int = GZIP_LEVEL) -> int:
    """Length of `data` gzip-compressed in memory (mtime fixed so it is reproducible)."""
    return len(gzip.compress(data, compresslevel=level, mtime=0))


def file_sizes(path: str | os.PathLike, level: int = GZIP_LEVEL) -> tuple[int, int]:
    """(file bytes, gzip bytes) of one file."""
    data = Path(path).read_bytes()
    return len(data), gzip_bytes(data, level)


@dataclass(frozen=True)
class Identity:
    sha256: str | None  # of the file; of its parts' names and hashes for a multi-file model
    bytes: int | None  # all parts together
    gzip_bytes: int | None


def _part(path: Path, files: dict, known: dict[str, int]) -> tuple[str, int, int]:
    """(sha256, bytes, gzip bytes) of one file: from `files` (path -> [size, mtime_ns, sha, {level: gz}])
    while its size and mtime match; else hashed, with the gzip size from `known` (sha256 -> gzip
    bytes the manifest recorded) when it has this hash, else compressed here."""
    st = path.stat()
    key, level = str(path.resolve()), str(GZIP_LEVEL)
    hit = files.get(key)
    if hit and hit[:2] == [st.st_size, st.st_mtime_ns] and level in hit[3]:
        return hit[2], st.st_size, hit[3][level]
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    gz = known[sha] if sha in known else gzip_bytes(data)
    files[key] = [st.st_size, st.st_mtime_ns, sha, {level: gz}]
    return sha, len(data), gz


def manifest_gzip(entry: dict | None) -> dict[str, int]:
    """sha256 -> gzip bytes of a manifest entry and its companions, when taken at GZIP_LEVEL."""
    entry = entry or {}
    if entry.get("gzip_level") != GZIP_LEVEL:
        return {}
    return {r["sha256"]: r["gzip_bytes"] for r in [entry, *(entry.get("companions") or [])]
            if r.get("sha256") and r.get("gzip_bytes") is not None}


def identify(artifact, files: dict) -> Identity:
    """sha256 and sizes of an artifact (bench.artifacts.Artifact); Nones when a part is missing."""
    known = manifest_gzip(artifact.manifest)
    try:
        parts = [_part(Path(p), files, known) for p in artifact.files]
    except OSError:
        return Identity(None, None, None)
    if len(parts) == 1:
        sha = parts[0][0]
    else:
        sha = hashlib.sha256("".join(f"{Path(p).name}:{s}\n" for p, (s, _, _) in
                                     zip(artifact.files, parts)).encode()).hexdigest()
    return Identity(sha, sum(p[1] for p in parts), sum(p[2] for p in parts))


def identify_all(artifacts, files: dict, workers: int = 1) -> dict[str, Identity]:
    """rel -> Identity; hashing and gzip release the GIL, so `workers` threads use that many cores."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return dict(zip([a.rel for a in artifacts], pool.map(lambda a: identify(a, files), artifacts)))
