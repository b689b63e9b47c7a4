"""Peak resident memory of a process that imported a runtime, loaded one file and ran it once.

A bench child imports its runtime once and measures each file in a fork of itself (bench.fork),
made before the child loaded anything: every file starts from the same state, and VmHWM (a
high-water mark) counts that file alone. The peak is read in the fork after loading the file and
running it once at batch 1; the baseline is the child's after the import.

On Linux this is VmHWM from /proc/self/status (the high-water mark of this process's own
address space). ru_maxrss is NOT used there: the kernel carries the parent's high-water mark
across fork+exec, so every child of an 80 MB sweep would report at least 80 MB. A fork starts
its VmHWM at the RSS it inherits, which leaves out the shared-library pages only the import
touched (the kernel does not copy those page-table entries): the fork reads one byte of each
page the parent had resident (`touch(resident_file_pages())`), so its peak is what a fresh
process's would be (within 1 MiB, measured against one fresh process per file).
"""
from __future__ import annotations

import os
import resource
import sys

STATUS = "/proc/self/status"


def vm_hwm_kib(status_text: str) -> int | None:
    """VmHWM in KiB from the text of /proc/<pid>/status, or None if absent."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def peak_rss_mb() -> float:
    """Peak RSS of this process so far, in MiB."""
    try:
        with open(STATUS) as f:
            kib = vm_hwm_kib(f.read())
        if kib is not None:
            return kib / 1024.0
    except OSError:
        pass
    raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return raw / (1024.0 * 1024.0) if sys.platform == "darwin" else raw / 1024.0


def resident_file_pages() -> list[int]:
    """Addresses of the file-backed pages this process has resident (its RssFile), from
    /proc/self/pagemap; [] where that cannot be read."""
    import numpy as np
    page, out = os.sysconf("SC_PAGE_SIZE"), []
    try:
        with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pagemap:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) < 6 or not fields[5].startswith("/") or not fields[1].startswith("r"):
                    continue
                start, end = (int(x, 16) for x in fields[0].split("-"))
                pagemap.seek(start // page * 8)
                entries = np.frombuffer(pagemap.read((end - start) // page * 8), dtype=np.uint64)
                present = np.flatnonzero(entries >> np.uint64(63))
                out.extend((start + present * page).tolist())
    except (OSError, ValueError):
        return []
    return out


def touch(addresses: list[int]) -> None:
    """Read one byte of each page, so a fork counts the pages its parent counted."""
    import ctypes
    for address in addresses:
        ctypes.c_char.from_address(address).value
