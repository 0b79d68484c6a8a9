"""The faces' (CLI and app) one place for the dependencies' noise."""

from __future__ import annotations

import os


def quiet_dependencies() -> None:
    """Keeps the dependencies' warnings (deprecations inside transformers and TransformerLens that a
    user cannot act on) and their logging chatter out of the output; ``INTERP_SHOW_WARNINGS=1``
    shows them."""
    import logging
    import warnings

    if os.environ.get("INTERP_SHOW_WARNINGS", "").strip() not in ("", "0"):
        return
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger().setLevel(logging.ERROR)
    for name in ("transformers", "transformer_lens", "accelerate", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
