"""Peak resident memory of the current process, read in a fresh child per artifact x runtime.

The child reads it twice: after importing the runtime (the baseline) and after loading the
artifact and running it once at batch 1 (the peak). Both are absolute; the difference is
what the model itself costs.

On Linux this is VmHWM from /proc/self/status (the high-water mark of this process's own
address space). ru_maxrss is NOT used there: the kernel carries the parent's high-water
mark across fork+exec, so every child of an 80 MB sweep would report at least 80 MB.
"""
from __future__ import annotations

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
