"""Atomic writes: leftovers of a killed writer are removed by the next write, a live one's never."""
import os
import subprocess
import sys

from pipeline.fileio import remove_stale_temps, staging_dir, write_text


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_write_removes_a_dead_writers_temp_file_only(tmp_path):
    target = tmp_path / "a.json"
    dead = tmp_path / f".a.json.{dead_pid()}.x1.tmp.json"
    live = tmp_path / f".a.json.{os.getpid()}.x2.tmp.json"
    for p in (dead, live):
        p.write_text("half")
    write_text(target, "{}")
    assert target.read_text() == "{}" and not dead.exists() and live.exists()
    assert remove_stale_temps(target) == []


def test_staging_dir_removes_a_dead_runs_leftover(tmp_path):
    leftover = tmp_path / f".bundle.{dead_pid()}.abc.staging"
    (leftover / "model.onnx").parent.mkdir()
    (leftover / "model.onnx").write_bytes(b"partial")
    live = tmp_path / f".bundle.{os.getpid()}.def.staging"
    live.mkdir()
    other = tmp_path / ".bundle2.1.abc.staging"  # another bundle's name is not touched
    other.mkdir()
    fresh = staging_dir(tmp_path, "bundle")
    assert fresh.is_dir() and fresh.name.startswith(f".bundle.{os.getpid()}.") and fresh.name.endswith(".staging")
    assert not leftover.exists() and live.exists() and other.exists()
