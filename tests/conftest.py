"""Shared test set-up: import paths, the `slow` marker, and fixtures used by several test files."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains, exports many files or runs subprocesses; "
                                       "`make test` runs them, `make test-fast` skips them")
