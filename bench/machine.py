"""What machine and library versions produced a set of numbers (stored in results.json)."""
from __future__ import annotations

import os
import platform
import sys

# Distribution names (not module names): reading their metadata imports nothing heavy.
PACKAGES = ("numpy", "scipy", "torch", "tensorflow-cpu", "tensorflow", "keras", "onnx",
            "onnxruntime", "ai-edge-litert", "threadpoolctl", "tqdm")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (affinity), which is what 'all cores' means here."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def versions() -> dict[str, str]:
    from pipeline.versions import installed
    return installed(PACKAGES)


def blas() -> list[dict]:
    """numpy's BLAS as threadpoolctl sees it (library, version, default threads)."""
    try:
        import numpy  # noqa: F401  (loads the BLAS so threadpoolctl can see it)
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("internal_api", "version", "num_threads", "architecture")
    return [{k: info.get(k) for k in keep} for info in threadpool_info()]


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def machine_info() -> dict:
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions(),
        "blas": blas(),
        "load_average_start": load_average(),
    }
