"""Peak resident memory of the current process, read in a fresh child per artifact x runtime.

ru_maxrss only ever grows, so a child reads it twice: after importing the runtime
(the baseline) and after loading the artifact and running it once at batch 1 (the peak).
Both are absolute; the difference is what the model itself costs.
"""
from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """Peak RSS of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return raw / (1024.0 * 1024.0) if sys.platform == "darwin" else raw / 1024.0
