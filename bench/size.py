"""Artifact size on disk and after gzip -9: what a download or flash image would cost."""
from __future__ import annotations

import gzip
import os
from pathlib import Path


def gzip_bytes(data: bytes, level: int = 9) -> int:
    """Length of `data` gzip-compressed in memory (mtime fixed so it is reproducible)."""
    return len(gzip.compress(data, compresslevel=level, mtime=0))


def file_sizes(path: str | os.PathLike) -> tuple[int, int]:
    """(file bytes, gzip -9 bytes) of one artifact."""
    data = Path(path).read_bytes()
    return len(data), gzip_bytes(data)
