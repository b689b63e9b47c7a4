"""Installed library versions, recorded with every result so it can be reproduced."""
from __future__ import annotations

from importlib import metadata


def installed(names) -> dict[str, str]:
    """Distribution name -> version for those of `names` that are installed."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
