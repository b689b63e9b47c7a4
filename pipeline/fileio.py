"""Atomic writes and hashing: a reader never sees a half-written file."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the target's directory; rename it onto `path` only on success.

    The temp name carries the writer's pid, so the next write of the same file removes what a
    killed writer (SIGKILL, power loss) left behind, and never a live writer's temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp" + path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete temp files of `path` whose writer process no longer exists; returns them."""
    path = Path(path)
    prefix = f".{path.name}."
    name = re.compile(rf"{re.escape(prefix)}(\d+)\.[^.]+\.tmp{re.escape(path.suffix)}")  # as atomic_path names them
    removed = []
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp*"):
        match = name.fullmatch(tmp.name)
        if match and not _alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def staging_dir(parent: str | os.PathLike, name: str) -> Path:
    """A fresh private directory `parent/.<name>.<pid>.<random>.staging` to assemble a directory in
    before renaming it into place; first removes ones a killed writer (now dead) left behind."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"\.{re.escape(name)}\.(\d+)\.[^.]+\.staging")
    for old in parent.glob(f".{glob.escape(name)}.*.staging"):
        match = pattern.fullmatch(old.name)
        if match and old.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".staging", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


LOCK_TIMEOUT_S = 600  # a concurrent run holding the lock this long is stuck, not busy


@contextlib.contextmanager
def locked(path: str | os.PathLike, timeout: float = LOCK_TIMEOUT_S) -> Iterator[Path]:
    """Hold an inter-process lock on `path` (a `.<name>.lock` file beside it, via filelock) for a
    read-modify-write of shared state: two runs writing into one root never lose each other's entries."""
    from filelock import FileLock, Timeout
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.parent / f".{path.name}.lock"), timeout=timeout)
    try:
        with lock:
            yield path
    except Timeout:
        from pipeline.errors import fail
        raise fail(path, f"another run has held its lock for {timeout:.0f} s; is it stuck?") from None


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
