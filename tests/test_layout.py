"""The layout keeps showing the design: stages import one way, files and functions stay small,
docs/CONTRACTS.md names only what exists, README's layout lists every module."""
import ast
import importlib
import re
import subprocess
import sys

import pytest

from helpers import REPO

PACKAGES = ("pipeline", "export", "bench", "report", "bundle")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 350, 60
EXEMPT = {"bundle_template/predict.py"}  # self-contained on the device: one file by design


def _modules():
    for package in PACKAGES + ("bundle_template",):
        yield from sorted((REPO / package).rglob("*.py"))


def test_stages_import_one_way():
    """import-linter's layers contract (.importlinter): pipeline < export < bench < report | bundle."""
    exe = REPO / ".venv" / "bin" / "lint-imports"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "importlinter.cli"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(REPO)))
def test_modules_and_functions_stay_small(path):
    rel = str(path.relative_to(REPO))
    source = path.read_text()
    if rel not in EXEMPT:
        assert source.count("\n") <= MAX_MODULE_LINES, f"{rel}: {source.count(chr(10))} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES and rel not in EXEMPT]
    assert not long, f"{rel}: {', '.join(long)}"


def _contract_names():
    text = (REPO / "docs" / "CONTRACTS.md").read_text()
    names = re.findall(r"`((?:%s)(?:\.\w+)+)" % "|".join(PACKAGES), text)
    return sorted(set(names))


@pytest.mark.parametrize("name", _contract_names())
def test_contracts_name_only_what_exists(name):
    """Every `package.module.name` docs/CONTRACTS.md promises can be imported."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attr in parts[split:]:
            assert hasattr(obj, attr), f"{name}: {'.'.join(parts[:split])} has no {attr!r}"
            obj = getattr(obj, attr)
        return
    pytest.fail(f"{name}: no such module")


def test_readme_layout_lists_every_module():
    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    for path in _modules():
        if path.name == "__init__.py":
            continue
        rel = path.relative_to(REPO)
        name = path.name if path.parent.name in PACKAGES + ("bundle_template",) else f"{path.parent.name}/{path.name}"
        assert name in layout or str(rel) in layout, f"README's layout does not list {rel}"
