"""Fuzz one loader in this process under an address-space limit: `python tests/fuzz_runner.py TARGET N`.

Prints one JSON line {"target", "examples", "failures": [...]}; exit 0 when no example raised
anything but the project's one-line error, hung (per-example alarm) or ran out of memory.
"""
from __future__ import annotations

import io
import json
import random
import resource
import signal
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LIMIT_GB = {False: 4, True: 24}  # light loaders / ones that import TensorFlow or torch (huge reservations)
EXAMPLE_SECONDS = 20  # a loader taking longer on a kilobyte file is hanging


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"no answer within {EXAMPLE_SECONDS} s")


def mutate_bytes(data: bytes, ops) -> bytes:
    data = bytearray(data)
    for op in ops:
        kind, a, b = op
        at = int(a * len(data)) if isinstance(a, float) else a
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << b
        elif kind == "overwrite":
            data[at:at + len(b)] = b
        elif kind == "insert":
            data[at:at] = b
        elif kind == "delete":
            del data[at:at + b]
    return bytes(data)


def mutate_zip(data: bytes, member_pick: float, ops) -> bytes:
    """Mutate one member of a zip and re-pack it with valid CRCs, so the loader sees the damage."""
    src = zipfile.ZipFile(io.BytesIO(data))
    names = src.namelist()
    victim = names[int(member_pick * len(names)) % len(names)]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in names:
            body = src.read(name)
            dst.writestr(name, mutate_bytes(body, ops) if name == victim else body)
    return out.getvalue()


def mutate_json(text: str, rng: random.Random, values) -> str:
    doc = json.loads(text)
    for _ in range(rng.randint(1, 3)):
        node, parents = doc, []
        while isinstance(node, (dict, list)) and node and rng.random() < 0.7:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            parents.append((node, key))
            node = node[key]
        if not parents:
            return json.dumps(rng.choice(values))
        parent, key = parents[-1]
        if isinstance(parent, dict) and rng.random() < 0.3:
            del parent[key]
        else:
            parent[key] = rng.choice(values)
    return json.dumps(doc)


def run(target_name: str, examples: int) -> dict:
    from hypothesis import HealthCheck, given, settings, strategies as st
    from fuzz_targets import JSON_VALUES, TARGETS
    from pipeline.errors import PrunedgeError

    target = TARGETS[target_name]
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_GB[target.heavy] << 30,) * 2)
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{target_name}-"))
    seed_path = target.seed(work)
    seed_file = seed_path / "manifest.json" if seed_path.is_dir() else seed_path
    seed = seed_file.read_bytes()
    failures, count = [], [0]
    op = st.one_of(st.tuples(st.just("truncate"), st.floats(0, 1), st.none()),
                   st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
                   st.tuples(st.just("overwrite"), st.integers(0, 96), st.binary(min_size=1, max_size=8)),
                   st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
                   st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 64)))
    errors = (PrunedgeError, *target.errors())

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(how=st.sampled_from(["bytes", "zip", "json"]), ops=st.lists(op, min_size=1, max_size=4),
           pick=st.floats(0, 1), rnd=st.randoms(use_true_random=False))
    def example(how, ops, pick, rnd):
        count[0] += 1
        if how == "json" and target.json:
            data = mutate_json(seed.decode(), rnd, JSON_VALUES).encode()
        elif how == "zip" and zipfile.is_zipfile(io.BytesIO(seed)):
            data = mutate_zip(seed, pick, ops)
        else:
            data = mutate_bytes(seed, ops)
        seed_file.write_bytes(data)
        signal.alarm(EXAMPLE_SECONDS)
        try:
            target.load(seed_path)
        except errors as e:
            if "\n" in str(e) or not str(e):
                failures.append(f"not one line: {str(e)[:200]!r}")
        except Exception as e:  # noqa: BLE001 - what we are looking for
            failures.append(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")
        finally:
            signal.alarm(0)

    signal.signal(signal.SIGALRM, _alarm)
    example()
    seed_file.write_bytes(seed)
    return {"target": target_name, "examples": count[0], "failures": sorted(set(failures))[:20]}


if __name__ == "__main__":
    result = run(sys.argv[1], int(sys.argv[2]))
    print(json.dumps(result))
    sys.exit(1 if result["failures"] else 0)
