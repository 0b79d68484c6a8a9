"""Where the workbench keeps what it fetches and trains: ``$INTERP_CACHE`` (default
``~/.cache/interp``).  ``models/<name>/`` holds a converted real model with its card;
tuned lenses are saved beside the model they belong to."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache root (not created here)."""
    root = os.environ.get("INTERP_CACHE", "").strip()
    return Path(root).expanduser() if root else Path.home() / ".cache" / "interp"


def models_dir() -> Path:
    return cache_dir() / "models"
