"""The one Model facade over transformers, recurrent / state-space models and custom modules.

Every analysis in the workbench talks to a :class:`Model`: it tokenizes and validates
inputs (text of any length becomes a right-padded :class:`~interp.tokens.TokenBatch`),
names the hook sites (:meth:`Model.site`; TransformerLens names such as
``blocks.{l}.attn.hook_z``, and ``blocks.{l}.hook_hidden`` for recurrent models), reads
per-head weights (:meth:`Model.weights`), and runs forwards with hooks.  Hooks entered with
:meth:`Model.hooks` stay active for every run inside the ``with`` block, so steering
vectors, ablations and patches compose; :attr:`Model.active_hooks` shows them.

Position-aware hooks (interventions that act from a position on, or at each row's last
token) read :attr:`Model.context`: the absolute position of the first token of the run
(non-zero while decoding from a key-value cache) and each row's real length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import cast

import pandas as pd
import torch
from torch import nn

from interp import sites as S
from interp.backends import Backend, HookFn, Hooks
from interp.errors import InputError, Unsupported
from interp.memory import check_total
from interp.tokens import TokenBatch, encode

FAMILIES = ("transformer", "hybrid", "rnn", "ssm", "custom")
Names = Sequence[str] | Callable[[str], bool] | None
Tokens = torch.Tensor | TokenBatch


def reshaping(fn: HookFn) -> HookFn:
    """Marks an internal hook that returns a smaller tensor on purpose (e.g. only the last
    position into the unembedding): :meth:`Model.hooks` then skips its shape check."""
    fn.reshapes = True  # type: ignore[attr-defined]
    return fn


def _guarded(name: str, fn: HookFn, model: Model) -> HookFn:
    """``fn`` with its result checked: a tensor of the activation's shape (or None), and with
    :attr:`Model.check_finite`, no NaN / inf (a clear error naming the site, not a torch error
    three layers later or a silent NaN)."""
    if getattr(fn, "reshapes", False):
        return fn

    def hook(x, hook):
        out = fn(x, hook)
        if out is not None:
            if not isinstance(out, torch.Tensor):
                raise InputError(
                    f"the hook on {name} returned an object of type {type(out).__name__}: return a tensor of the "
                    "activation's shape, or None to leave it as it is"
                )
            if out.shape != x.shape:
                raise InputError(
                    f"the hook on {name} returned shape {tuple(out.shape)}, but the activation there "
                    f"has shape {tuple(x.shape)}: return a tensor of the same shape (or None)"
                )
        if model.check_finite and not torch.isfinite(x if out is None else out).all():
            raise InputError(
                f"non-finite values (NaN or inf) at {name} after its hook: an intervention there wrote "
                "them (check the value it sets or adds)"
            )
        return out

    hook.__wrapped__ = fn  # type: ignore[attr-defined]
    return hook


@dataclass(frozen=True)
class ModelConfig:
    """Geometry of a model.  ``family``: ``transformer`` (attention in every layer), ``hybrid``
    (attention in some layers, recurrent or state-space mixers in the others: ``attn_layers``
    lists the attention layers), ``ssm`` / ``rnn`` (no attention) or ``custom``.  ``n_heads`` is
    the heads of an attention layer (0 for attention-free models); ``n_kv_heads`` the number of
    key-value heads (< n_heads for grouped-query attention, 0 without attention); ``causal``: a
    position depends on itself and earlier positions only."""

    n_layers: int
    n_heads: int
    d_model: int
    d_vocab: int
    n_ctx: int
    family: str
    d_head: int = 0
    d_mlp: int = 0
    name: str = ""
    n_kv_heads: int = 0
    causal: bool = True
    attn_layers: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise InputError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.n_heads and not self.n_kv_heads:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.attn_layers is None:  # every layer of a model with heads, none without
            object.__setattr__(self, "attn_layers", tuple(range(self.n_layers)) if self.n_heads else ())
        object.__setattr__(self, "attn_layers", tuple(int(l) for l in self.attn_layers))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunContext:
    """What a hook needs to place a run in absolute positions: ``offset`` (the absolute
    position of the run's first token; > 0 for a cached decoding step) and ``lengths``
    ([batch] real tokens per row, counted from position 0; None = every row is full)."""

    offset: int = 0
    lengths: torch.Tensor | None = None
    positions: torch.Tensor | None = None  # explicit absolute positions (an engine recomputing some rows)
    rows: torch.Tensor | None = None  # the caller's batch indices of the run's rows (decoding groups)

    def row_index(self, n: int, n_spec: int, device=None) -> torch.Tensor:
        """``[n]`` indices into a per-row spec of ``n_spec`` rows for the run's ``n`` rows."""
        base = self.rows.to(device) if self.rows is not None else torch.arange(n, device=device)
        if len(base) != n:
            base = torch.arange(n, device=device)
        return base % n_spec

    def key_positions(self, n_keys: int, n_queries: int, device=None) -> torch.Tensor:
        """``[n_keys]`` absolute positions of an attention pattern's key axis in a run of
        ``n_queries`` positions: the keys end at the run's last position (a cached step attends
        to the cached positions too; a sliding-window layer's cache keeps only the last ones)."""
        if self.positions is not None:  # an engine recomputing chosen rows: keys from position 0
            return torch.arange(n_keys, device=device)
        end = self.offset + n_queries
        return torch.arange(end - n_keys, end, device=device)

    def positions_of(self, n: int, device=None) -> torch.Tensor:
        """``[n]`` absolute positions of a run's position axis of length ``n``."""
        if self.positions is not None:
            if len(self.positions) != n:
                raise RuntimeError(f"the run context holds {len(self.positions)} positions, the activation {n}")
            return self.positions.to(device)
        return torch.arange(self.offset, self.offset + n, device=device)


class Model:
    """A hooked sequence model: ``cfg``, tokens in, logits ``[batch, pos, d_vocab]`` out.

    Build one with :func:`interp.load`.  ``module`` is the underlying hooked module (a
    TransformerLens ``TransformerBridge``, an ``interp.recurrent.HookedRecurrent``, or the
    user's module under nnsight); ``card`` holds the zoo card; ``prepend_bos`` is whether
    text gets the tokenizer's beginning-of-sequence token in front (see the README's BOS
    table; override per call with ``prepend_bos=``).
    """

    def __init__(
        self, backend: Backend, cfg: ModelConfig, *, tokenizer=None, card: dict | None = None, prepend_bos: bool = True
    ):
        self.backend = backend
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.card = card or {}
        self.prepend_bos = bool(prepend_bos)
        self._stack: list[tuple[str, HookFn]] = []
        self._names = backend.site_names()
        self._name_set = set(self._names)
        self._shapes: pd.DataFrame | None = None
        self._context = RunContext()
        self._weights: dict = {}
        #: when True, every hook's result is checked for NaN / inf (raises naming the site)
        self.check_finite = False
        #: how :func:`interp.load` made this model (its source and options), so that another process
        #: can load the same one (:mod:`interp.executor`); None for a model built in memory
        self.load_spec: dict | None = None

    # --- basics -----------------------------------------------------------------------
    @property
    def module(self) -> nn.Module:
        return self.backend.module

    @property
    def name(self) -> str:
        return self.cfg.name

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"Model({c.name or 'unnamed'!r}, family={c.family}, n_layers={c.n_layers}, n_heads={c.n_heads}, "
            f"d_model={c.d_model}, d_vocab={c.d_vocab}, n_ctx={c.n_ctx})"
        )

    @property
    def has_attention(self) -> bool:
        return self.cfg.n_heads > 0

    @property
    def device(self) -> torch.device:
        """Where inputs go (a model placed by a device map: where its embedding runs)."""
        p = next(self.module.parameters(), None)
        if p is not None and p.device.type == "meta":  # offloaded by accelerate (interp.sharding)
            from interp.sharding import input_device

            return input_device(self.module)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.module.parameters(), None)
        return p.dtype if p is not None else torch.float32

    @property
    def supports_cache(self) -> bool:
        """Whether decoding continues from a key-value cache (else it recomputes the prompt)."""
        return bool(getattr(self.backend, "supports_cache", False))

    # --- tokens -----------------------------------------------------------------------
    def _bos(self, prepend_bos: bool | None) -> bool:
        return self.prepend_bos if prepend_bos is None else bool(prepend_bos)

    def encode(self, text: str, prepend_bos: bool | None = None) -> list[int]:
        """Token ids of one text (BOS per :attr:`prepend_bos` unless given)."""
        if self.tokenizer is None:
            raise InputError("this model has no tokenizer: pass token ids (a list of ints or a tensor)")
        return encode(self.tokenizer, text, self._bos(prepend_bos))

    def tokenize(
        self,
        inputs: str | Sequence[str] | Sequence[Sequence[int]] | Sequence[int] | Tokens,
        prepend_bos: bool | None = None,
    ) -> TokenBatch:
        """Any prompts as a validated, right-padded :class:`TokenBatch` (rows may differ in length)."""
        if isinstance(inputs, TokenBatch):
            return TokenBatch(self.validate_tokens(inputs.tokens), inputs.lengths, inputs.pad_id)
        if isinstance(inputs, torch.Tensor):
            return TokenBatch.full(self.validate_tokens(inputs))
        if isinstance(inputs, str):
            inputs = [inputs]
        if isinstance(inputs, (bytes, bytearray)):
            raise InputError("prompts must be text (str), not bytes: decode them first, e.g. data.decode('utf-8')")
        rows = list(inputs) if isinstance(inputs, Sequence) else None
        if rows == []:
            raise InputError("no prompts given: pass a string, a non-empty list of strings or of token-id lists")
        if not rows:
            raise InputError(
                "prompts must be a string, a non-empty list of strings or of token-id lists, or a "
                f"tensor; got {type(inputs).__name__}"
            )
        if all(isinstance(r, str) for r in rows):
            ids = [self.encode(cast(str, r), prepend_bos) for r in rows]
        elif all(
            isinstance(r, (list, tuple)) and r and all(isinstance(t, int) and not isinstance(t, bool) for t in r)
            for r in rows
        ):
            ids = [list(cast(Sequence[int], r)) for r in rows]
        elif all(isinstance(r, int) and not isinstance(r, bool) for r in rows):
            ids = [list(cast(list[int], rows))]
        else:
            kinds = sorted({type(r).__name__ for r in rows})
            raise InputError(f"prompts must all be strings or all token-id lists, got {kinds}")
        batch = TokenBatch.from_rows(ids, pad_id=self.pad_id)
        return TokenBatch(self.validate_tokens(batch.tokens), batch.lengths, batch.pad_id)

    @property
    def pad_id(self) -> int:
        """The id right-padding is filled with (never read at real positions of a causal model)."""
        tok = self.tokenizer
        for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
            value = getattr(tok, attr, None) if tok is not None else None
            if value is not None and 0 <= int(value) < self.cfg.d_vocab:
                return int(value)
        return 0

    def to_tokens(
        self, inputs: str | Sequence[str] | Sequence[int] | torch.Tensor, prepend_bos: bool | None = None
    ) -> torch.Tensor:
        """Tokens ``[batch, pos]`` (int64) from text, equally long texts, ids, or a tensor
        (validated).  Texts of different token lengths: use :meth:`tokenize`."""
        if isinstance(inputs, torch.Tensor):
            return self.validate_tokens(inputs)
        batch = self.tokenize(inputs, prepend_bos)
        if batch.padded:
            raise InputError(
                f"the prompts tokenize to different lengths {batch.lengths.tolist()}; use "
                "model.tokenize(prompts) for a padded batch (analyses accept it)"
            )
        return batch.tokens

    def validate_tokens(self, tokens: Tokens) -> torch.Tensor:
        """Checks dtype, rank, vocabulary range and length; returns ``[batch, pos]`` int64."""
        if isinstance(tokens, TokenBatch):
            tokens = tokens.tokens
        if not isinstance(tokens, torch.Tensor):
            if isinstance(tokens, (bytes, bytearray, str)):
                raise InputError(f"expected token ids, got {type(tokens).__name__}: use model.to_tokens(text)")
            tokens = torch.as_tensor(tokens)
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.is_complex():
            raise InputError(f"tokens must be integers, got {tokens.dtype}")
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2:
            raise InputError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
        if tokens.shape[1] == 0 or tokens.shape[0] == 0:
            raise InputError(f"tokens are empty (shape {tuple(tokens.shape)})")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.cfg.d_vocab:
            raise InputError(f"token ids must be in the vocabulary [0, {self.cfg.d_vocab}); got values in [{lo}, {hi}]")
        if tokens.shape[1] > self.cfg.n_ctx:
            raise InputError(
                f"sequence of {tokens.shape[1]} tokens is longer than the model's context n_ctx={self.cfg.n_ctx}"
            )
        return tokens.long().to(self.device)

    def to_str_tokens(self, tokens: torch.Tensor | str | Sequence[int]) -> list[str]:
        """String form of each token of one sequence."""
        if not isinstance(tokens, torch.Tensor):
            tokens = self.to_tokens(tokens) if isinstance(tokens, str) else torch.as_tensor(list(tokens))
        if tokens.ndim == 2:
            if tokens.shape[0] != 1:
                raise InputError("to_str_tokens takes one sequence")
            tokens = tokens[0]
        ids = [int(t) for t in tokens]
        if self.tokenizer is not None:
            return [self.tokenizer.decode([i]) for i in ids]
        return [str(i) for i in ids]

    @property
    def word_level(self) -> bool:
        """Whether prompts are named tokens separated by spaces (the zoo's vocabularies)."""
        return bool(getattr(self.tokenizer, "word_level", False))

    def vocabulary(self) -> list[str]:
        """Every token's string form, by id."""
        if self.tokenizer is None:
            return [str(i) for i in range(self.cfg.d_vocab)]
        return self.to_str_tokens(torch.arange(self.cfg.d_vocab))

    def decode(self, tokens: torch.Tensor | Sequence[int], *, skip_bos: bool = False) -> str:
        """Text of a sequence of ids (named tokens joined by spaces for word-level vocabularies);
        ``skip_bos`` drops a leading BOS, giving text that :meth:`to_tokens` turns back into the ids."""
        ids = [int(t) for t in torch.as_tensor(tokens).reshape(-1)]
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if skip_bos and ids and bos is not None and ids[0] == bos:
            ids = ids[1:]
        if self.tokenizer is None:
            return " ".join(map(str, ids))
        if self.word_level:
            return " ".join(self.tokenizer.decode([i]) for i in ids)
        return self.tokenizer.decode(ids)

    def token_id(self, token: str | int) -> int:
        """The id of one token given as an id or as text that must be a single token
        (raises saying how it tokenizes otherwise)."""
        if isinstance(token, bool):
            raise InputError("a token must be text or an int id")
        if isinstance(token, int):
            tid = token
        else:
            ids = self.encode(str(token), prepend_bos=False)
            if len(ids) != 1:
                hint = ""
                if (
                    not self.word_level
                    and not str(token).startswith(" ")
                    and len(self.encode(" " + str(token), prepend_bos=False)) == 1
                ):
                    hint = f"; {' ' + str(token)!r}, with a leading space, is one token"
                raise InputError(
                    f"{token!r} is {len(ids)} tokens, not one: {self.to_str_tokens(torch.tensor(ids))}{hint}"
                )
            tid = ids[0]
        if not 0 <= tid < self.cfg.d_vocab:
            raise InputError(f"token id {tid} is outside the vocabulary [0, {self.cfg.d_vocab})")
        return tid

    # --- sites ------------------------------------------------------------------------
    def hook_names(self) -> pd.DataFrame:
        """Every hook site with its shape on a one-sequence probe (``batch`` / ``pos`` symbolic)."""
        if self._shapes is None:
            n = min(self.cfg.n_ctx, 7)
            probe = torch.zeros(1, n, dtype=torch.long, device=self.device)
            with torch.no_grad():
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

    def has_site(self, name: str) -> bool:
        return name in self._name_set

    def check_site(self, name: str) -> str:
        """Returns ``name`` if the model has that hook site, else raises with close matches."""
        if not isinstance(name, str) or name not in self._name_set:
            near = difflib.get_close_matches(str(name), self._names, n=6, cutoff=0.5)
            raise InputError(
                f"unknown hook site {name!r} for {self.cfg.name or 'this model'}; "
                f"close matches: {near or self._names[:12]} (see Model.hook_names())"
            )
        return name

    def site_kinds(self) -> list[str]:
        """The site kinds (:mod:`interp.sites`) this model has in every layer (or once, for whole-model kinds)."""
        return [k for k, spec in S.KINDS.items() if self._has_kind(spec)]

    def _has_kind(self, spec: S.Kind) -> bool:
        if not spec.per_layer:
            return spec.template in self._name_set
        return self.cfg.n_layers > 0 and all(spec.hook(l) in self._name_set for l in range(self.cfg.n_layers))

    def site(self, kind: str, layer: int | None = None) -> str:
        """The hook name of site ``kind`` (``z``, ``resid_pre``, ``hidden``, ...) in ``layer``."""
        spec = S.kind(kind)
        if spec.per_layer:
            if layer is None:
                raise InputError(f"site {spec.name!r} is per layer: give a layer (0..{self.cfg.n_layers - 1})")
            layer = self.check_layer(layer)
        present = spec.hook(layer) in self._name_set if spec.per_layer else self._has_kind(spec)
        if not present:
            why = ""
            if spec.layout in ("head", "pattern") and not self.has_attention:
                why = f" ({self.cfg.name or 'this model'} is a {self.cfg.family} model without attention heads)"
            elif spec.per_layer and self.layers_with(spec.name):
                why = f" in layer {layer} (only in layers {self.layers_with(spec.name)})"
            partial = {k: self.layers_with(k) for k in S.KINDS if k not in self.site_kinds() and self.layers_with(k)}
            raise InputError(
                f"site {spec.name!r} is not in {self.cfg.name or 'this model'}{why}; its site kinds: "
                f"{self.site_kinds()}" + (f"; in some layers only: {partial}" if partial else "")
            )
        return spec.hook(layer)

    def layers_with(self, kind: str) -> list[int]:
        """The layers that have site ``kind`` (a hybrid's recurrent sites are in its recurrent layers only)."""
        spec = S.kind(kind)
        if not spec.per_layer:
            return []
        return [l for l in range(self.cfg.n_layers) if spec.hook(l) in self._name_set]

    def sites(self, kind: str) -> list[str]:
        """The hook names of site ``kind`` in every layer, in order."""
        return [self.site(kind, l) for l in range(self.cfg.n_layers)]

    def attn_sites(self, kind: str) -> list[str]:
        """The hook names of an attention site ``kind`` (``z``, ``pattern``, ...) in every layer that
        has attention (all layers of a transformer; some of a hybrid), in order."""
        return [self.site(kind, l) for l in self.cfg.attn_layers or ()]

    # --- hooks ------------------------------------------------------------------------
    @property
    def active_hooks(self) -> tuple[tuple[str, HookFn], ...]:
        """The hooks every run applies now (entered with :meth:`hooks`), in order (read-only)."""
        return tuple(self._stack)

    @property
    def context(self) -> RunContext:
        """Where the current run sits in absolute positions (see :class:`RunContext`)."""
        return self._context

    @contextlib.contextmanager
    def running(self, **fields) -> Iterator[RunContext]:
        """Sets fields of :attr:`context` (``offset``, ``lengths``, ``positions``, ``rows``) for
        the runs inside the block (the decoder, padded batches and the patching engines use it)."""
        old = self._context
        self._context = dataclasses.replace(old, **fields)
        try:
            yield self._context
        finally:
            self._context = old

    def _resolve(self, hooks: Iterable[tuple[str | Callable[[str], bool], HookFn]]) -> list[tuple[str, HookFn]]:
        out: list[tuple[str, HookFn]] = []
        for name, fn in hooks:
            if not callable(fn):
                raise InputError(f"the hook for {name!r} is not callable")
            if callable(name):
                out.extend((n, _guarded(n, fn, self)) for n in self._names if name(n))
            else:
                site = self.check_site(name)
                out.append((site, _guarded(site, fn, self)))
        return out

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str | Callable[[str], bool], HookFn]]) -> Iterator[Model]:
        """Keeps ``fwd_hooks`` active for every run inside the ``with`` block (they compose)."""
        added = self._resolve(fwd_hooks)
        self._stack.extend(added)
        try:
            yield self
        finally:
            for item in added:
                self._stack.remove(item)

    @contextlib.contextmanager
    def without_hooks(self) -> Iterator[Model]:
        """Suspends the active hooks inside the block (to measure the unedited model)."""
        stack, self._stack = self._stack, []
        try:
            yield self
        finally:
            self._stack = stack

    # --- running ----------------------------------------------------------------------
    def _run(self, tokens: Tokens, hooks: list[tuple[str, HookFn]]) -> torch.Tensor:
        lengths = tokens.lengths if isinstance(tokens, TokenBatch) and tokens.padded else None
        ids = self.validate_tokens(tokens)
        if lengths is not None and not self.cfg.causal:
            # a non-causal model would read the padding: run each length alone
            batch = tokens if isinstance(tokens, TokenBatch) else TokenBatch.full(ids)
            out = None
            for idx in batch.by_length():
                part = self._run(batch.select(idx), hooks)
                if out is None:
                    out = part.new_zeros((ids.shape[0], ids.shape[1], part.shape[-1]))
                out[idx.to(part.device), : part.shape[1]] = part
            assert out is not None  # a batch has at least one row, so one length group
            return out
        if lengths is None:
            return self.backend.run(ids, hooks)
        with self.running(lengths=lengths):
            return self.backend.run(ids, hooks)

    def forward(self, tokens: Tokens) -> torch.Tensor:
        """Logits ``[batch, pos, d_vocab]``; active hooks (see :meth:`hooks`) apply.  A padded
        :class:`TokenBatch` gives valid logits at each row's real positions."""
        return self._run(tokens, list(self._stack))

    __call__ = forward

    def run_with_hooks(self, tokens: Tokens, fwd_hooks: Hooks = ()) -> torch.Tensor:
        """One forward with extra hooks ``[(site, fn(activation, hook))]`` after the active ones."""
        return self._run(tokens, list(self._stack) + self._resolve(fwd_hooks))

    def run_with_cache(
        self, tokens: Tokens, names: Names = None, *, detach: bool = True, fwd_hooks: Hooks = (), logits: bool = True
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Logits and a dict site -> activation (``[batch, pos, ...]``) for the chosen sites.

        ``names``: a list of sites, a filter function, or None for all.  Cached values are
        the activations after any active hooks.  ``detach=False`` keeps them in the graph
        (for gradients).  ``logits=False``: the caller needs only the cache, so the
        unembedding is skipped where the model lets it be (the logits returned are None).
        """
        if names is None:
            chosen = list(self._names)
        elif callable(names):
            chosen = [n for n in self._names if names(n)]
        else:
            chosen = [self.check_site(n) for n in names]
        if isinstance(tokens, TokenBatch) and tokens.padded and not self.cfg.causal:
            raise InputError("run_with_cache on a padded batch needs a causal model; run each length separately")
        cache: dict[str, torch.Tensor] = {}
        held = [0]

        def storer(name: str) -> HookFn:
            # keyed by the requested name: a hook on an alias reports the canonical one
            def store(x: torch.Tensor, hook) -> None:
                held[0] += x.numel() * x.element_size()
                # stop during the forward, before a cache the user sized grows past the budget
                check_total(held[0], f"the activation cache of {len(chosen)} sites (so far)")
                cache[name] = x.detach() if detach else x

            return store

        skip = []
        if not logits and "unembed_in" in self.site_kinds() and self.site("unembed_in") not in chosen:
            skip = [(self.site("unembed_in"), reshaping(lambda x, hook: x[:, :1]))]  # one position, not [pos, d_vocab]
        out = self.run_with_hooks(tokens, list(fwd_hooks) + [(n, storer(n)) for n in chosen] + skip)
        return (out if logits else None), cache

    def step(self, tokens: torch.Tensor, cache, hooks: Hooks = ()) -> tuple[torch.Tensor, object]:
        """One cached forward: logits of ``tokens`` ``[batch, new]`` following the positions
        held in ``cache`` (None: a fresh prompt) and the extended cache.  Active hooks apply;
        :attr:`context` gives them the absolute position of the new tokens."""
        ids = self.validate_tokens(tokens)
        offset = 0 if cache is None else int(cache.get_seq_length())
        if offset + ids.shape[1] > self.cfg.n_ctx:
            raise InputError(f"{offset} cached + {ids.shape[1]} new tokens exceed n_ctx={self.cfg.n_ctx}")
        with self.running(offset=offset):
            return self.backend.step(ids, list(self._stack) + self._resolve(hooks), cache)

    def generate(
        self, tokens: Tokens | str | Sequence[str], max_new_tokens: int = 8, *, use_cache: bool = True
    ) -> Tokens:
        """Greedy decoding (active hooks apply at every step).  Returns the prompts with
        ``max_new_tokens`` tokens appended: ``[batch, pos + n]`` for a tensor, else a
        :class:`TokenBatch` (see :func:`interp.decoding.greedy`)."""
        from interp.decoding import greedy

        batch = self.tokenize(tokens)
        new = greedy(self, batch, max_new_tokens, use_cache=use_cache)
        rows = [torch.cat([r, new[i].to(r.device)]) for i, r in enumerate(batch.rows())]
        out = TokenBatch.from_rows(rows, pad_id=batch.pad_id)
        return out.tokens.to(self.device) if isinstance(tokens, torch.Tensor) else out

    def intervene(self, interventions) -> contextlib.AbstractContextManager:
        """Keeps :class:`interp.interventions.Intervention` edits (one, or a sequence) active inside
        the ``with`` block."""
        from interp import interventions as I

        if isinstance(interventions, I.Intervention):
            interventions = [interventions]
        return I.apply(self, list(interventions))

    # --- weights ----------------------------------------------------------------------
    def weights(self, *, fold_ln: bool = False):
        """Per-head attention weights, norms, embedding and unembedding
        (:class:`interp.weights.Weights`; GQA keys / values per key-value head, zeros for
        absent biases; ``fold_ln`` folds each norm's gain into the weights that read it)."""
        from interp.weights import read_weights

        key = bool(fold_ln)
        if key not in self._weights:
            self._weights[key] = read_weights(self, fold_ln=key)
        return self._weights[key]

    # --- checks used by analyses ----------------------------------------------------
    def require_attention(self, analysis: str) -> None:
        """Raises a clear error when an attention analysis is asked of an attention-free model."""
        if not self.has_attention:
            recurrent = [k for k in ("hidden", "state", "cell") if k in self.site_kinds()]
            raise Unsupported(
                f"{analysis} needs attention heads, but {self.cfg.name or 'this model'} is a "
                f"{self.cfg.family} model without attention; for it use the residual-stream and layer "
                "analyses (patching resid_pre / resid_post, attribution, steering, the logit lens, DLA per layer"
                + (f", the {' / '.join(recurrent)} sites" if recurrent else "")
                + ")"
            )

    def check_layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int):
            try:
                if isinstance(layer, bool) or int(layer) != layer:
                    raise TypeError
                layer = int(layer)
            except (TypeError, ValueError):
                raise InputError(f"a layer must be an int, got {layer!r}") from None
        if not 0 <= layer < self.cfg.n_layers:
            raise InputError(f"layer {layer} is out of range: this model has layers 0..{self.cfg.n_layers - 1}")
        return layer

    def check_head(self, layer: int, head: int) -> tuple[int, int]:
        """A validated ``(layer, head)`` of a query head."""
        self.require_attention("a head")
        layer = self.check_layer(layer)
        if layer not in (self.cfg.attn_layers or ()):
            raise InputError(
                f"layer {layer} has no attention heads; attention layers: {list(self.cfg.attn_layers or ())}"
            )
        if isinstance(head, bool) or int(head) != head or not 0 <= int(head) < self.cfg.n_heads:
            raise InputError(f"head {head!r} is out of range: layers have heads 0..{self.cfg.n_heads - 1}")
        return layer, int(head)

    def heads(self) -> list[tuple[int, int]]:
        """Every (layer, head) of the attention layers, layer-major."""
        return [(l, h) for l in self.cfg.attn_layers or () for h in range(self.cfg.n_heads)]
