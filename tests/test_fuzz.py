"""Property-based fuzzing of every loader (tests/fuzz_targets.py), each in a child process with an
address-space limit: only the project's one-line error may come out; no traceback, no hang, no
memory blow-up. `make test` runs a bounded number of examples per loader; `make fuzz` (FUZZ_EXAMPLES)
runs many more."""
import json
import os
import subprocess
import sys

import pytest

from fuzz_targets import TARGETS
from helpers import REPO

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))  # 0: the quick counts below
QUICK = {False: 150, True: 40}  # per light / heavy (TF, torch) loader in `make test`


@pytest.mark.parametrize("name", list(TARGETS))
def test_loader_survives_mutated_files(name):
    target = TARGETS[name]
    n = EXAMPLES or QUICK[target.heavy]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "fuzz_runner.py"), name, str(n)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=max(600, n * 3))
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[-1])
    print(json.dumps(result))
    assert result["examples"] >= n * 0.9 and not result["failures"], result
