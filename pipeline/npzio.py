"""Read `.npz` files from strangers: no pickle, and no allocation the file's bytes cannot back.

A member's declared shape is checked against the member's declared size, and that size against
its compressed size (deflate expands at most ~1032x), before any array is allocated, so a
kilobyte file that declares a terabyte array is refused instead of exhausting memory.
"""
from __future__ import annotations

import zipfile
import zlib
from tokenize import TokenError
from pathlib import Path

import numpy as np

from pipeline.errors import fail

MAX_RATIO = 1100  # deflate's limit is 1032:1; stored members are 1:1
SLACK = 1 << 16  # npy headers and tiny members


def _header(f, path, name):
    """(shape, Fortran order, dtype, header bytes) of one .npy member, read without touching its data."""
    try:
        version = np.lib.format.read_magic(f)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in reader:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = reader[version](f, max_header_size=10_000)
    except (ValueError, EOFError, OSError, SyntaxError, TokenError) as e:  # numpy parses the header as Python
        raise fail(path, f"member {name!r} is not a valid .npy array ({' '.join(str(e).split())[:160]})") from None
    if dtype.hasobject:
        raise fail(path, f"member {name!r} holds Python objects (refused: loading them would unpickle)")
    return shape, fortran, dtype, f.tell()


def read_npz(path: str | Path, *, limit_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an .npz, validated as above; `limit_bytes` caps the total decompressed size."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found")
    arrays = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = 0
            for info in infos:
                if info.file_size > MAX_RATIO * info.compress_size + SLACK:
                    raise fail(path, f"member {info.filename!r} claims {info.file_size} bytes from "
                                     f"{info.compress_size} compressed (not a real array)")
                total += info.file_size
            if limit_bytes is not None and total > limit_bytes:
                raise fail(path, f"{total} bytes of arrays exceed the {limit_bytes}-byte limit")
            for info in infos:
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with zf.open(info) as f:
                    shape, fortran, dtype, offset = _header(f, path, name)
                    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
                    if count * dtype.itemsize != info.file_size - offset:
                        raise fail(path, f"member {name!r} declares shape {list(shape)} ({count * dtype.itemsize} "
                                         f"bytes) but holds {info.file_size - offset}")
                    data = f.read()
                arrays[name] = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C").copy()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError,
            UnicodeDecodeError) as e:  # RuntimeError: a member flagged encrypted; names that are not UTF-8
        raise fail(path, f"corrupt or truncated .npz ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    return arrays
