"""The one Model facade over transformers, recurrent / state-space models and custom modules.

Every analysis in the workbench talks to a :class:`Model`: it validates tokens, names the
hook sites (TransformerLens names: ``blocks.{l}.hook_resid_pre``, ``blocks.{l}.attn.hook_z``,
... and for recurrent models ``blocks.{l}.hook_hidden`` and friends), and runs forwards
with hooks.  Hooks entered with :meth:`Model.hooks` stay active for every run inside the
``with`` block, so steering vectors, ablations and patches compose.
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator, Sequence

import pandas as pd
import torch
from torch import nn

from interp.backends import Backend, HookFn, Hooks
from interp.vocab import WordVocab

FAMILIES = ("transformer", "rnn", "ssm", "custom")
Names = Sequence[str] | Callable[[str], bool] | None


@dataclass(frozen=True)
class ModelConfig:
    """Geometry of a model.  ``n_heads`` is 0 for attention-free models."""

    n_layers: int
    n_heads: int
    d_model: int
    d_vocab: int
    n_ctx: int
    family: str
    d_head: int = 0
    d_mlp: int = 0
    name: str = ""

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class Model:
    """A hooked sequence model: ``cfg``, tokens in, logits ``[batch, pos, d_vocab]`` out.

    Build one with :func:`interp.load`.  ``module`` is the underlying hooked module (a
    TransformerLens ``TransformerBridge``, an ``interp.recurrent.HookedRecurrent``, or the
    user's module under nnsight); ``card`` holds the zoo card for shipped models.
    """

    def __init__(self, backend: Backend, cfg: ModelConfig, *, tokenizer=None, vocab: WordVocab | None = None,
                 card: dict | None = None):
        self.backend = backend
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.card = card or {}
        self._stack: list[tuple[str, HookFn]] = []
        self._names = backend.site_names()
        self._name_set = set(self._names)
        self._shapes: pd.DataFrame | None = None

    # --- basics -----------------------------------------------------------------------
    @property
    def module(self) -> nn.Module:
        return self.backend.module

    @property
    def name(self) -> str:
        return self.cfg.name

    def __repr__(self) -> str:
        c = self.cfg
        return (f"Model({c.name or 'unnamed'!r}, family={c.family}, n_layers={c.n_layers}, n_heads={c.n_heads}, "
                f"d_model={c.d_model}, d_vocab={c.d_vocab}, n_ctx={c.n_ctx})")

    @property
    def has_attention(self) -> bool:
        return self.cfg.n_heads > 0

    # --- tokens -----------------------------------------------------------------------
    def to_tokens(self, inputs: str | Sequence[str] | Sequence[int] | torch.Tensor,
                  prepend_bos: bool = True) -> torch.Tensor:
        """Tokens ``[batch, pos]`` (int64) from text, a list of texts, ids, or a tensor (validated)."""
        if isinstance(inputs, torch.Tensor):
            tokens = inputs
        elif isinstance(inputs, str):
            tokens = torch.tensor([self._encode(inputs, prepend_bos)])
        elif isinstance(inputs, Sequence) and inputs and all(isinstance(x, str) for x in inputs):
            rows = [self._encode(x, prepend_bos) for x in inputs]
            if len({len(r) for r in rows}) != 1:
                raise ValueError(f"the prompts tokenize to different lengths {[len(r) for r in rows]}; "
                                 "pass them one at a time or make them the same length")
            tokens = torch.tensor(rows)
        elif isinstance(inputs, Sequence) and inputs and all(isinstance(x, int) for x in inputs):
            tokens = torch.tensor([list(inputs)])
        else:
            raise TypeError("tokens must be a string, a list of strings, a list of ints or a tensor; "
                            f"got {type(inputs).__name__}" + (" (empty)" if not inputs else ""))
        return self.validate_tokens(tokens)

    def _encode(self, text: str, prepend_bos: bool) -> list[int]:
        if not text.strip():
            raise ValueError("empty prompt")
        if self.vocab is not None:
            return self.vocab.encode(text, prepend_bos)
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass token ids (a list of ints or a tensor)")
        ids = self.tokenizer(text)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if prepend_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + list(ids)
        elif not prepend_bos and ids and bos is not None and ids[0] == bos:
            ids = ids[1:]
        return list(ids)

    def validate_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Checks dtype, rank, vocabulary range and length; returns ``[batch, pos]`` int64."""
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be integers, got {tokens.dtype}")
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
        if tokens.shape[1] == 0:
            raise ValueError("tokens are empty (0 positions)")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.cfg.d_vocab:
            raise ValueError(f"token ids must be in [0, {self.cfg.d_vocab}); got values in [{lo}, {hi}]")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"sequence of {tokens.shape[1]} tokens is longer than the model's context n_ctx={self.cfg.n_ctx}")
        return tokens.long().to(self.device)

    def to_str_tokens(self, tokens: torch.Tensor | str | Sequence[int]) -> list[str]:
        """String form of each token of one sequence."""
        if not isinstance(tokens, torch.Tensor):
            tokens = self.to_tokens(tokens)
        if tokens.ndim == 2:
            if tokens.shape[0] != 1:
                raise ValueError("to_str_tokens takes one sequence")
            tokens = tokens[0]
        if self.vocab is not None:
            return self.vocab.decode(tokens)
        if self.tokenizer is not None:
            return [self.tokenizer.decode([int(t)]) for t in tokens]
        return [str(int(t)) for t in tokens]

    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    # --- hooks ------------------------------------------------------------------------
    def hook_names(self) -> pd.DataFrame:
        """Every hook site with its shape on a one-sequence probe (``batch`` / ``pos`` symbolic)."""
        if self._shapes is None:
            n = min(self.cfg.n_ctx, 7)
            probe = torch.zeros(1, n, dtype=torch.long, device=self.device)
            _, cache = self.run_with_cache(probe)
            rows = []
            for name in self._names:
                shape = tuple(cache[name].shape) if name in cache else ()
                sym = ["batch" if i == 0 else ("pos" if s == n else str(s)) for i, s in enumerate(shape)]
                rows.append({"name": name, "shape": "[" + ", ".join(sym) + "]"})
            self._shapes = pd.DataFrame(rows)
        return self._shapes.copy()

    @property
    def site_names(self) -> list[str]:
        return list(self._names)

    def check_site(self, name: str) -> str:
        """Returns ``name`` if the model has that hook site, else raises with close matches."""
        if name not in self._name_set:
            near = difflib.get_close_matches(name, self._names, n=6, cutoff=0.5)
            raise ValueError(f"unknown hook site {name!r} for {self.cfg.name or 'this model'}; "
                             f"close matches: {near or self._names[:12]} (see Model.hook_names())")
        return name

    def _resolve(self, hooks: Iterable[tuple[str | Callable[[str], bool], HookFn]]) -> list[tuple[str, HookFn]]:
        out = []
        for name, fn in hooks:
            if callable(name):
                out.extend((n, fn) for n in self._names if name(n))
            else:
                out.append((self.check_site(name), fn))
        return out

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str | Callable[[str], bool], HookFn]]) -> Iterator["Model"]:
        """Keeps ``fwd_hooks`` active for every run inside the ``with`` block (they compose)."""
        added = self._resolve(fwd_hooks)
        self._stack.extend(added)
        try:
            yield self
        finally:
            for item in added:
                self._stack.remove(item)

    # --- running ----------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, pos, d_vocab]``; active hooks (see :meth:`hooks`) apply."""
        return self.backend.run(self.validate_tokens(tokens), list(self._stack))

    __call__ = forward

    def run_with_hooks(self, tokens: torch.Tensor, fwd_hooks: Hooks = ()) -> torch.Tensor:
        """One forward with extra hooks ``[(site, fn(activation, hook))]`` after the active ones."""
        return self.backend.run(self.validate_tokens(tokens), list(self._stack) + self._resolve(fwd_hooks))

    def run_with_cache(self, tokens: torch.Tensor, names: Names = None, *, detach: bool = True,
                       fwd_hooks: Hooks = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and a dict site -> activation (``[batch, pos, ...]``) for the chosen sites.

        ``names``: a list of sites, a filter function, or None for all.  Cached values are
        the activations after any active hooks.  ``detach=False`` keeps them in the graph
        (for gradients).
        """
        if names is None:
            chosen = list(self._names)
        elif callable(names):
            chosen = [n for n in self._names if names(n)]
        else:
            chosen = [self.check_site(n) for n in names]
        cache: dict[str, torch.Tensor] = {}

        def storer(name: str) -> HookFn:
            # keyed by the requested name: a hook on an alias reports the canonical one
            def store(x: torch.Tensor, hook) -> None:
                cache[name] = x.detach() if detach else x
            return store

        logits = self.run_with_hooks(tokens, list(fwd_hooks) + [(n, storer(n)) for n in chosen])
        return logits, cache

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new_tokens: int = 8) -> torch.Tensor:
        """Greedy decoding: returns ``[batch, pos + max_new_tokens]`` (active hooks apply)."""
        tokens = self.validate_tokens(tokens)
        if max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if tokens.shape[1] + max_new_tokens > self.cfg.n_ctx:
            raise ValueError(f"prompt ({tokens.shape[1]}) + {max_new_tokens} new tokens exceeds n_ctx={self.cfg.n_ctx}")
        for _ in range(max_new_tokens):
            nxt = self.forward(tokens)[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, nxt], dim=1)
        return tokens

    # --- geometry helpers used by analyses ---------------------------------------------
    def require_attention(self, analysis: str) -> None:
        """Raises a clear error when an attention analysis is asked of an attention-free model."""
        if not self.has_attention:
            raise ValueError(f"{analysis} needs attention heads, but {self.cfg.name or 'this model'} is a "
                             f"{self.cfg.family} model without attention; for it use hidden-state analyses "
                             "(run_with_cache on blocks.{l}.hook_hidden, hidden-state patching, probes, steering)")

    def check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.cfg.n_layers:
            raise ValueError(f"layer {layer} is out of range: this model has layers 0..{self.cfg.n_layers - 1}")
        return layer
