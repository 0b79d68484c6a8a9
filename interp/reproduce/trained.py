"""The models a finding trains for itself (the recall gap, flip-flop glitches, interpretable LSTM
cells, training dynamics): the shipped weights, loaded through :func:`interp.load`, or, with
``retrain``, the same recipes trained again (minutes; nothing shipped is overwritten)."""

from __future__ import annotations

from collections.abc import Sequence

from interp.model import Model


def models(
    names: Sequence[str],
    *,
    series: str | None = None,
    retrain: bool = False,
    progress: bool = False,
    steps: int | None = None,
) -> dict[str, Model]:
    """``{name: model}`` for zoo recipes ``names``: shipped (``series``: their sub-folder of the
    zoo's weights) or, with ``retrain``, trained from their recipes now (``steps`` overrides the
    recipes' steps: a quick check that retraining works; the shipped weights are not touched)."""
    import interp
    from interp import zoo

    out: dict[str, Model] = {}
    for name in names:
        if retrain:
            from interp.training import train

            out[name], _ = train(name, progress=progress, steps=steps)
        else:
            out[name] = interp.load(str(zoo.shipped(name, series)) if series else name)
    return out
