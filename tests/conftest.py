"""Shared test set-up: import paths, the `slow` marker, and fixtures used by several test files."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains, exports many files or runs subprocesses; "
                                       "`make test` runs them, `make test-fast` skips them")


# Modules whose tests each train a network, export and verify several files in TF/LiteRT/torch, or
# run the CLIs in subprocesses (seconds per test): all of them are `slow`, so `make test-fast` is the
# numpy-level inner loop (model, layers, pruning, shrinking, CSR, schedules, tables, layout).
SLOW_MODULES = {
    "test_bad_input", "test_bench", "test_bundle", "test_bundle_ncnn", "test_bundle_schema", "test_bundle_sources",
    "test_crash_safety", "test_determinism", "test_export", "test_finetune", "test_fuzz", "test_import_cnn",
    "test_import_cnn_refusals", "test_importers", "test_int8", "test_keras_net", "test_torch_net", "test_train",
    "test_stages", "test_tflite_auto", "test_tflite_block", "test_report", "test_report_cnn", "test_report_pay",
    "test_report_sections", "test_plots", "test_autoformat", "test_lowrank", "test_import_e2e", "test_runtimes",
}


def pytest_collection_modifyitems(config, items):
    import pytest
    for item in items:
        if item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
