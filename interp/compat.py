"""Compatibility shims between the pinned libraries, each with the measurement that needs it.

- KV cache through TransformerBridge attention (TransformerLens 4.3 with transformers 5.x).
  transformers 5 renamed the attention modules' ``past_key_values`` argument to ``cache``;
  the bridge's reimplemented attention (``_update_kv_cache``) still looks only for the old
  name, so a cached decoding step attends to the new token alone (measured on
  SmolLM2-135M: a cached step's logits differed from the full recomputation by 23 logits;
  with the shim by 5e-5).  :func:`enable_kv_cache` hands the renamed argument to the
  bridge's method, per attention module, and leaves every other behaviour alone.
  ``tests/test_decoding.py`` checks cached against uncached decoding, so the shim is
  noticed when a library update makes it unnecessary or wrong.
"""

from __future__ import annotations

from torch import nn


def enable_kv_cache(bridge: nn.Module) -> bool:
    """Makes the bridge's attention modules extend their keys / values from a transformers
    ``Cache`` passed as ``cache=``; returns whether the bridge has such modules."""
    patched = False
    for module in bridge.modules():
        update = getattr(module, "_update_kv_cache", None)
        if update is None or getattr(update, "_interp_shim", False):
            continue

        def renamed(k, v, _update=update, **kwargs):
            if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
                kwargs["past_key_values"] = kwargs["cache"]
            return _update(k, v, **kwargs)

        renamed._interp_shim = True  # type: ignore[attr-defined]
        # torch types Module.__setattr__ as taking only a Tensor or a Module; any other value
        # (here a function) is stored as a plain attribute
        module._update_kv_cache = renamed  # type: ignore[assignment]
        patched = True
    return patched


class TokenizedPrompts:
    """What TransformerLens's string-only functions (``head_detector.detect_head``) need of a
    model, for token ids rather than text: prompt ``"i"`` means row ``i`` of ``tokens``
    (``[batch, pos]``).  So their results can be compared with ours on the same tokens, for
    models without a tokenizer too (the zoo) and without retokenizing."""

    def __init__(self, model, tokens):
        self.bridge, self.cfg, self.tokens = model.module, model.module.cfg, tokens

    def prompts(self) -> list[str]:
        return [str(i) for i in range(len(self.tokens))]

    def to_tokens(self, seq):
        return self.tokens if isinstance(seq, list) else self.tokens[int(seq)][None]

    def run_with_cache(self, *args, **kwargs):
        return self.bridge.run_with_cache(*args, **kwargs)
