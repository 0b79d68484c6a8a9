"""What the tests that start real processes share: a free port, waiting for a condition,
a server's health, and stopping a process (with its children)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def streamlit_healthy(port: int) -> bool:
    """Whether a Streamlit server answers its health check on ``port``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen) -> None:
    """Stops ``proc`` and, if it leads its own process group (``start_new_session=True``), its children."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    group = pgid == proc.pid
    (os.killpg(pgid, signal.SIGTERM) if group else proc.terminate())
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        (os.killpg(pgid, signal.SIGKILL) if group else proc.kill())
        proc.wait(10)
