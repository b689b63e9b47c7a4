"""Run a function in a forked copy of this process and stream the records it sends back.

The bench child imports its runtime once, then measures each file in a fork of that state: every
file starts from the same process (as if freshly started, without paying for the import again),
its peak memory is its own, and a file that crashes its runtime takes down only its fork.
"""
from __future__ import annotations

import json
import os
import select
import signal
import time
from typing import Callable

Send = Callable[[dict], None]


def run_forked(fn: Callable[[Send], None], timeout_s: float, on_record: Send) -> str | None:
    """fn(send) in a fork; each record it sends reaches `on_record` as it arrives. Returns None when
    the fork finished, else why not (it raised, crashed, or sent nothing for `timeout_s` seconds)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the fork (coverage cannot see it)
        os.close(read_end)
        _child(fn, write_end)
    os.close(write_end)
    try:
        problem = _forward(read_end, pid, timeout_s, on_record)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if problem is not None:
        return problem
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by signal {sig} ({signal.Signals(sig).name})"
    code = os.waitstatus_to_exitcode(status)
    return None if code == 0 else f"exited with code {code}"


def _child(fn: Callable[[Send], None], fd: int) -> None:  # pragma: no cover - runs in the fork
    out = os.fdopen(fd, "w")

    def send(record: dict) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    code = 0
    try:
        fn(send)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, never raised past the fork
        lines = str(e).strip().splitlines()
        send({"kind": "fatal", "reason": f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]})
        code = 1
    finally:
        out.flush()
        os._exit(code)  # no cleanup handlers: they belong to the parent


def _forward(fd: int, pid: int, timeout_s: float, on_record: Send) -> str | None:
    """Pass each line on until the fork closes its end; kill it when it goes quiet too long."""
    buffer, fatal = b"", None
    while True:
        deadline = time.monotonic() + timeout_s
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            os.kill(pid, signal.SIGKILL)
            return f"timed out after {timeout_s:.0f} s"
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return fatal
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            record = json.loads(line)
            if record.get("kind") == "fatal":
                fatal = record["reason"]
            else:
                on_record(record)
