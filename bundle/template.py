"""bundle_template/: the scripts every bundle ships. The build loads its predict.py as a module, so
the bundle's own loading code (runners, layouts, schema) is what measures and checks the bundle."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "bundle_template"
MODULE = "prunedge_bundle_predict"


def load_template_predict():
    """bundle_template/predict.py as a module (loaded once)."""
    if MODULE not in sys.modules:  # dataclasses look their module up in sys.modules
        spec = importlib.util.spec_from_file_location(MODULE, TEMPLATE_DIR / "predict.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[MODULE]
