"""What the residual stream "says" at each layer, and which components write the answer.

- :func:`logit_lens`: each layer's residual stream (``pre`` / ``mid`` / ``post`` of a block;
  for recurrent and state-space models each layer's output) read through the final norm
  and the unembedding.  By default the norm recomputes its statistics from the residual it
  reads (``norm="recomputed"``); ``norm="frozen"`` reuses the final layer's scale at every
  layer (what an analysis that caches the final ``ln_final.hook_scale`` does, a known
  pitfall, TransformerLens issue #1076).  The last layer equals the model's logits.
- :class:`TunedLens` (Belrose et al. 2023): one affine translator per layer, trained so the
  translated residual read through the final norm and unembedding matches the model's final
  distribution (KL); saved as safetensors + a JSON card beside the model's cache.
- :func:`dla`: direct logit attribution: the final logit of a target (or the difference of
  two) split into the embedding, every head and every MLP (recurrent models: every layer's
  change of the stream), with the final norm's scale frozen at the run's own value, so the
  pieces add up to the logit exactly.

Frames are tidy: ``layer, pos, ...`` rows.  The lens ``layer`` column numbers the readings:
for ``post``, ``l`` is the output of block ``l``; for ``pre`` / ``mid``, ``l`` is block ``l``'s
input / middle and ``n_layers`` the final residual, so the last reading of every stage is
what the model itself unembeds.
"""

from interp.lens.dla import dla
from interp.lens.logit import NORMS, STAGES, lens_kl, logit_lens, residual_sites, residuals, token_set_probs
from interp.lens.tuned import TunedLens, default_path, train_tuned_lens, tuned_lens_for

__all__ = [
    "NORMS",
    "STAGES",
    "TunedLens",
    "default_path",
    "dla",
    "lens_kl",
    "logit_lens",
    "residual_sites",
    "residuals",
    "token_set_probs",
    "train_tuned_lens",
    "tuned_lens_for",
]
