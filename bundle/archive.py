"""The deterministic `<name>.tar.gz` of a bundle directory: equal contents give equal bytes."""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from pipeline.fileio import atomic_path

TAR_MTIME = 946684800  # 2000-01-01: fixed so the archive's bytes depend only on its contents


def mode(path: Path) -> int:
    """Scripts and directories executable, everything else read-only for others."""
    return 0o755 if path.is_dir() or path.suffix == ".py" else 0o644


def write_tar_gz(src_dir: Path, out: Path, arcroot: str) -> Path:
    """Deterministic archive: sorted names, fixed mtime, uid/gid 0, fixed modes, gzip mtime 0."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        def add(name: str, data: bytes | None, file_mode: int):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = TAR_MTIME, 0, 0, "", "", file_mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add(arcroot, None, 0o755)
        for path in sorted(src_dir.iterdir(), key=lambda p: p.name):
            add(f"{arcroot}/{path.name}", path.read_bytes(), mode(path))
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.getvalue())
    return out
