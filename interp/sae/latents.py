"""A dictionary's latents in the core's analyses: splicing it into the forward, ablating or
clamping features (:func:`interp.interventions.edit_latents`), steering with a feature's
decoder direction (a :class:`interp.steering.SteeringVector`), and attribution patching over
latents (which features matter for a metric; the site's gradient from
:func:`interp.gradients.site_gradients`).

Positions: a dictionary trained with ``skip_bos`` never saw position 0, so by default these
act from position 1 on (position 0 is left as it is).  Transcoders (``site -> out_site``) are
spliced and edited at ``out_site`` from the activation read at ``site`` in the same forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import pandas as pd
import torch

from interp import interventions as I
from interp.errors import InputError, Unsupported
from interp.sae.dictionary import Dictionary


def default_positions(d: Dictionary) -> I.Positions:
    return 1 if d.cfg.skip_bos else None


def _latent_list(d: Dictionary, latents: int | Sequence[int]) -> list[int]:
    items = [latents] if isinstance(latents, int) and not isinstance(latents, bool) else list(latents)  # type: ignore[arg-type]
    if not items:
        raise InputError("give at least one latent")
    return [d.check_latent(i) for i in items]


@contextlib.contextmanager
def _reading(model, d: Dictionary) -> Iterator[dict]:
    """For a transcoder: keeps the input site's activation of the current run in a dict."""
    held: dict = {}
    if not d.cfg.transcoder:
        yield held
        return

    def keep(x, hook):
        held["x"] = x

    with model.hooks([(d.cfg.site, keep)]):
        yield held


def _source(d: Dictionary, held: dict):
    """The dictionary's input for an activation at its target site."""
    if not d.cfg.transcoder:
        return lambda act: act
    return lambda act: held["x"]


@contextlib.contextmanager
def splice(model, d: Dictionary, *, positions: I.Positions | str = "default") -> Iterator[object]:
    """Replaces the target site by the dictionary's reconstruction for every run in the block
    (``positions``: default from 1 when the dictionary skipped the BOS)."""
    d.check(model)
    pos = default_positions(d) if positions == "default" else positions
    with _reading(model, d) as held:
        src = _source(d, held)
        iv = I.replace_with(d.cfg.target_site, lambda act: d(src(act)).to(act.dtype), positions=pos)  # type: ignore[arg-type]
        with I.apply(model, [iv]):
            yield model


@contextlib.contextmanager
def edit(model, d: Dictionary, fn, *, positions: I.Positions | str = "default") -> Iterator[object]:
    """Edits the latents with ``fn(latents [batch, pos, width]) -> latents`` for every run in
    the block, keeping the dictionary's reconstruction error (see
    :func:`interp.interventions.edit_latents`)."""
    d.check(model)
    pos = default_positions(d) if positions == "default" else positions
    with _reading(model, d) as held:
        src = _source(d, held)
        iv = I.edit_latents(
            d.cfg.target_site,
            lambda act: d.encode(src(act)),
            lambda f: d.decode(f),
            fn,
            positions=pos,  # type: ignore[arg-type]
        )
        with I.apply(model, [iv]):
            yield model


def ablate(model, d: Dictionary, latents: int | Sequence[int], **kw):
    """Context manager: the given latents set to 0 (the rest of the activation unchanged)."""
    idx = _latent_list(d, latents)

    def zero(f: torch.Tensor) -> torch.Tensor:
        f[..., idx] = 0
        return f

    return edit(model, d, zero, **kw)


def clamp(model, d: Dictionary, latent: int, value: float, **kw):
    """Context manager: one latent clamped to ``value`` (in its activation units) everywhere."""
    i = d.check_latent(latent)
    value = float(value)

    def set_value(f: torch.Tensor) -> torch.Tensor:
        f[..., i] = value
        return f

    return edit(model, d, set_value, **kw)


def steering_vector(d: Dictionary, latent: int, model=None):
    """Latent ``latent``'s decoder direction (site units, unit norm in the dictionary's
    normalised units) as a :class:`interp.steering.SteeringVector` at the target site:
    ``vec.apply(model, coef=...)`` adds ``coef`` times it, i.e. ``coef`` units of activation."""
    from interp.steering import SteeringVector

    if model is not None:
        d.check(model)
    direction = d.direction(latent)
    return SteeringVector(
        direction,
        d.cfg.target_site,
        d.cfg.model_name,
        int(direction.shape[-1]),
        "sae_latent",
        meta={"latent": int(latent), "dictionary": repr(d)},
    )


def attribute(model, d: Dictionary, clean, corrupt, metric, *, direction: str = "denoise") -> pd.DataFrame:
    """Attribution patching over latents: the first-order estimate of patching each latent
    (summed over positions and prompts) from the source run into the base run,
    ``sum_pos (f_source - f_base) * (W_dec[i] / scale) . dMetric/dx`` at the base run, where ``x``
    is the site (the reconstruction error kept, so ``dx/df_i`` is the latent's decoder row).
    denoise: base = corrupt, source = clean; noise: the reverse.  ``metric``: an
    :class:`interp.metrics.Metric` (or any ``logits -> scalar``).  Returns columns ``latent``,
    ``effect``, ``f_clean``, ``f_corrupt`` (mean activations), sorted by ``|effect|``."""
    from interp.gradients import site_gradients
    from interp.sae.store import read_sites

    if d.cfg.transcoder:
        raise Unsupported("attribution over a transcoder's latents is not implemented (its input and output differ)")
    if direction not in ("denoise", "noise"):
        raise InputError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    d.check(model)
    site = d.cfg.site
    clean_b, corrupt_b = model.tokenize(clean), model.tokenize(corrupt)
    if clean_b.tokens.shape != corrupt_b.tokens.shape:
        raise InputError(
            f"clean and corrupt prompts must tokenize to the same shape, got {tuple(clean_b.tokens.shape)} "
            f"and {tuple(corrupt_b.tokens.shape)}"
        )
    base, source = (corrupt_b, clean_b) if direction == "denoise" else (clean_b, corrupt_b)
    fn = metric if callable(metric) else None
    if fn is None:
        raise InputError("metric must be an interp.metrics.Metric or a function of the logits")
    _, grads = site_gradients(model, base, lambda logits: fn(logits).mean(), [site])
    g = grads[site]  # [batch, pos, d]
    acts = {
        "base": read_sites(model, base.tokens, [site])[site],
        "source": read_sites(model, source.tokens, [site])[site],
    }
    with torch.no_grad():
        f_base, f_source = d.encode(acts["base"]), d.encode(acts["source"])
        if d.cfg.skip_bos:
            f_base[:, 0] = 0
            f_source[:, 0] = 0
        mask = base.mask.to(g.device)[..., None]
        per_latent_grad = g.float() @ (d.W_dec.T / d.out_scale)  # [batch, pos, width]: dMetric/df_i
        effect = ((f_source - f_base) * per_latent_grad * mask).sum((0, 1))
        n = mask.sum()
        fc = (f_source if direction == "denoise" else f_base) * mask
        fr = (f_base if direction == "denoise" else f_source) * mask
    frame = pd.DataFrame(
        {
            "latent": range(d.width),
            "effect": effect.cpu().numpy(),
            "f_clean": (fc.sum((0, 1)) / n).cpu().numpy(),
            "f_corrupt": (fr.sum((0, 1)) / n).cpu().numpy(),
        }
    )
    return frame.reindex(frame["effect"].abs().sort_values(ascending=False).index).reset_index(drop=True)
