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

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.memory import rows_per_chunk
from interp.model import Model, Tokens
from interp.weights import Readout, readout

STAGES = ("pre", "mid", "post")
NORMS = ("recomputed", "frozen")


def residual_sites(model: Model, stage: str = "post") -> list[str]:
    """The hook sites a lens reads, the final residual last: ``resid_pre`` / ``resid_mid`` of
    each block then the last ``resid_post``, or every ``resid_post``.  Recurrent and
    state-space models: each layer's output (``post``), with the embedding first (``pre``:
    each layer's input); they have no ``mid``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if stage == "post":
        return model.sites("resid_post")
    if model.cfg.family in ("rnn", "ssm"):
        if stage == "mid":
            raise ValueError(
                f"{model.cfg.name or 'this model'} is recurrent: its layers have no middle; use stage 'pre' or 'post'"
            )
        return [model.site("embed")] + model.sites("resid_post")
    kind = {"pre": "resid_pre", "mid": "resid_mid"}[stage]
    if kind not in model.site_kinds():
        raise ValueError(f"{model.cfg.name or 'this model'} has no {kind} site (attention-only models have no mid)")
    return model.sites(kind) + model.sites("resid_post")[-1:]


def _target(model: Model, target) -> int | None:
    return None if target is None else model.token_id(target)


@torch.no_grad()
def residuals(model: Model, tokens: Tokens, stage: str = "post") -> tuple[torch.Tensor, torch.Tensor]:
    """``(stack [readings, batch, pos, d_model], logits)``: the residual read at each layer (the
    final residual last) and the model's logits (one forward)."""
    names = residual_sites(model, stage)
    logits, cache = model.run_with_cache(tokens, names=names)
    return torch.stack([cache[n].float() for n in names]), logits.float()


def _read(
    ro: Readout, x: torch.Tensor, layer: int | None, lens: TunedLens | None, frozen_scale: torch.Tensor | None
) -> torch.Tensor:
    """Logits ``[..., d_vocab]`` of residuals ``x`` of reading ``layer``: through the tuned
    lens's translator if any, then the final norm (recomputed, or at ``frozen_scale``)."""
    if lens is not None:
        x = lens.translate(layer, x)
    return ro.logits(x) if frozen_scale is None else ro.logits_frozen(x, frozen_scale)


def _readings(layers, n: int, stage: str) -> list[int]:
    if layers is None:
        return list(range(n))
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise ValueError(f"layer {layer!r} is out of range: the {stage} lens has readings 0..{n - 1} (or -{n}..-1)")
        out.append(layer % n)
    return out


def _one_prompt(model: Model, tokens: Tokens):
    batch = model.tokenize(tokens)
    if len(batch) != 1:
        raise ValueError(f"the lens reads one prompt at a time, got {len(batch)}")
    return batch


@torch.no_grad()
def logit_lens(
    model: Model,
    tokens: Tokens,
    *,
    target=None,
    stage: str = "post",
    norm: str = "recomputed",
    k: int = 5,
    lens: TunedLens | None = None,
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The lens of one prompt: ``DataFrame[layer, pos, input, rank_k, token, token_id, prob,
    logprob]`` with the ``k`` most probable tokens per (layer, pos) (``rank_k`` 1..k), and, with
    ``target`` (a token, as text or id), ``target_prob``, ``target_logprob`` and ``target_rank``
    (1 = the top token) on every row.  ``lens``: a :class:`TunedLens` whose translators are
    applied first (``stage`` is then the lens's own).  ``norm``: "recomputed" or "frozen"
    (see the module docstring).  ``layers``: the readings to keep (default all; negative
    indices count from the final residual)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= model.cfg.d_vocab:
        raise ValueError(f"k must be an int in [1, {model.cfg.d_vocab}], got {k!r}")
    batch = _one_prompt(model, tokens)
    t = _target(model, target)
    if lens is not None:
        lens.check(model)
        stage = lens.stage
    stack, logits = residuals(model, batch, stage)
    ro = readout(model)
    final_scale = ro.scale(stack[-1, 0]) if norm == "frozen" else None
    keep = _readings(layers, stack.shape[0], stage)
    # readings in chunks: a chunk's [readings x pos, vocab] log-probabilities (x3 for the
    # softmax and the rank comparison) stay in the memory budget; one matmul per chunk
    P = stack.shape[2]
    per = rows_per_chunk(3 * 4 * P * model.cfg.d_vocab, "the logit lens")
    values, indices, target_logp, target_rank = [], [], [], []
    for start in range(0, len(keep), per):
        chunk = keep[start : start + per]
        x = torch.stack(
            [stack[layer, 0] if lens is None else lens.translate(layer, stack[layer, 0]) for layer in chunk]
        )
        logp = _read(ro, x, None, None, final_scale).log_softmax(-1)  # [chunk, pos, vocab]
        top = logp.topk(k, dim=-1)
        values.append(top.values)
        indices.append(top.indices)
        if t is not None:
            target_logp.append(logp[..., t])
            target_rank.append((logp > logp[..., t : t + 1]).sum(-1) + 1)
        del logp
    top_values, top_ids = torch.cat(values), torch.cat(indices)  # [readings, pos, k]
    R, P = top_values.shape[:2]
    ids = top_ids.reshape(-1).cpu()
    vocab = dict(zip(ids.unique().tolist(), model.to_str_tokens(ids.unique())))
    grid = lambda a: a.reshape(R, P, 1).expand(R, P, k).reshape(-1).cpu().numpy()
    columns = {
        "layer": grid(torch.tensor(keep)[:, None].expand(R, P)),
        "pos": grid(torch.arange(P).expand(R, P)),
        "input": [s for s in model.to_str_tokens(batch.tokens[0]) for _ in range(k)] * R,
        "rank_k": torch.arange(1, k + 1).repeat(R * P).numpy(),
        "token": [vocab[i] for i in ids.tolist()],
        "token_id": ids.numpy(),
        "prob": top_values.exp().reshape(-1).cpu().numpy(),
        "logprob": top_values.reshape(-1).cpu().numpy(),
    }
    if t is not None:
        lt = torch.cat(target_logp)  # [readings, pos]
        columns.update(target_prob=grid(lt.exp()), target_logprob=grid(lt), target_rank=grid(torch.cat(target_rank)))
    df = pd.DataFrame(columns)
    df.attrs.update(
        stage=stage,
        norm=norm,
        target=None if t is None else model.to_str_tokens([t])[0],
        tuned=lens is not None,
        readings=int(stack.shape[0]),
    )
    return df


@torch.no_grad()
def lens_kl(
    model: Model, tokens: Tokens, *, stage: str = "post", lens: TunedLens | None = None, norm: str = "recomputed"
) -> pd.DataFrame:
    """Mean KL(final || lens) in nats per layer over every real position of ``tokens``:
    ``DataFrame[layer, kl]`` (how far each layer's reading is from the model's answer)."""
    batch = model.tokenize(tokens)
    if lens is not None:
        lens.check(model)
        stage = lens.stage
    stack, logits = residuals(model, batch, stage)
    ro = readout(model)
    real = batch.mask.to(logits.device)
    final = logits.log_softmax(-1)[real]  # [tokens, vocab]
    scale = ro.scale(stack[-1][real]) if norm == "frozen" else None
    rows = []
    for layer in range(stack.shape[0]):
        lg = _read(ro, stack[layer][real], layer, lens, scale)
        kl = (final.exp() * (final - lg.log_softmax(-1))).sum(-1).mean()
        rows.append({"layer": layer, "kl": float(kl)})
    return pd.DataFrame(rows)


# --- the tuned lens -----------------------------------------------------------------------------


@dataclass
class TunedLens:
    """Affine translators ``x -> x @ A[l] + b[l]`` (``A [layers, d, d]``, ``b [layers, d]``) for the
    residual stream at ``stage`` of each layer of the model named ``model_name``."""

    A: torch.Tensor
    b: torch.Tensor
    model_name: str
    d_model: int
    stage: str
    card: dict

    def translate(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return x.float() @ self.A[layer].to(x.device) + self.b[layer].to(x.device)

    def check(self, model: Model) -> None:
        """Raises if the lens was trained for another model or width."""
        if model.cfg.d_model != self.d_model:
            raise ValueError(
                f"this tuned lens was trained for d_model={self.d_model} ({self.model_name!r}); "
                f"{model.cfg.name or 'this model'} has d_model={model.cfg.d_model}"
            )
        if model.cfg.name != self.model_name:
            raise ValueError(f"this tuned lens was trained for {self.model_name!r}, not {model.cfg.name!r}")
        if self.A.shape[0] != len(residual_sites(model, self.stage)):
            raise ValueError(
                f"this tuned lens has {self.A.shape[0]} translators; the model has "
                f"{len(residual_sites(model, self.stage))} layers"
            )

    # --- files ----------------------------------------------------------------------------
    def save(self, stem: str | Path | None = None) -> Path:
        """Writes ``stem.safetensors`` (A, b) and ``stem.json`` (the card); default stem: the
        model's place in the cache, ``$INTERP_CACHE/lenses/<model>``."""
        from safetensors.torch import save_file

        from interp.checkpoint import _atomic_write

        stem = Path(stem) if stem is not None else default_path(self.model_name)
        card = {
            **self.card,
            "format": "interp.tuned_lens",
            "version": 1,
            "model": self.model_name,
            "d_model": self.d_model,
            "stage": self.stage,
            "layers": int(self.A.shape[0]),
        }
        weights = stem.with_suffix(".safetensors")
        _atomic_write(weights, lambda tmp: save_file({"A": self.A.contiguous(), "b": self.b.contiguous()}, tmp))
        _atomic_write(stem.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))
        return weights

    @classmethod
    def load(cls, stem: str | Path | None = None, model: Model | None = None) -> TunedLens:
        """Reads a lens written by :meth:`save` (safetensors only: never unpickled); with
        ``model``, checks that it fits (default stem: ``model``'s place in the cache)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if stem is None:
            if model is None:
                raise ValueError("give the lens's path or the model it belongs to")
            stem = default_path(model.cfg.name)
        stem = Path(stem)
        if stem.suffix in (".safetensors", ".json"):
            stem = stem.with_suffix("")
        tensors_path, card_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        for p in (tensors_path, card_path):
            if not p.is_file():
                raise FileNotFoundError(f"no tuned lens at {p} (train one: interp.lens.train_tuned_lens)")
        try:
            card = json.loads(card_path.read_text())
            t = load_file(str(tensors_path))
        except (json.JSONDecodeError, SafetensorError, OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the tuned lens at {stem}: {str(e).splitlines()[0]}") from None
        if card.get("format") != "interp.tuned_lens" or not {"A", "b"} <= set(t):
            raise ValueError(f"{card_path} is not a tuned lens")
        lens = cls(t["A"], t["b"], card["model"], int(card["d_model"]), card["stage"], card)
        if model is not None:
            lens.check(model)
        return lens


def default_path(model_name: str) -> Path:
    from interp.paths import cache_dir

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name) or "model"
    return cache_dir() / "lenses" / safe


def train_tuned_lens(
    model: Model,
    tokens: Tokens,
    *,
    stage: str = "post",
    steps: int = 40,
    lr: float = 1e-3,
    positions_per_step: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> TunedLens:
    """Trains one affine translator per layer so the lens matches the model's final
    distribution: minimises KL(final || lens) with Adam on ``positions_per_step`` random
    positions of ``tokens`` per step (seeded), starting from the least-squares map of each
    layer's residual onto the final residual.  ``tokens``: text the model reads (e.g.
    :func:`interp.tasks.text.generated_text`).  The last layer's translator stays the identity."""
    batch = model.tokenize(tokens)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    started = time.perf_counter()
    stack, logits = residuals(model, batch, stage)
    real = batch.mask.to(stack.device)
    X = stack[:, real]  # [layers, N, d]
    target = logits.log_softmax(-1)[real]  # [N, vocab]
    final = X[-1]  # [N, d]
    L, N, d = X.shape
    ro = readout(model)
    # least squares: [x 1] @ [A; b] ~ final residual, per layer (ridge for stability)
    A = torch.empty(L, d, d)
    b = torch.empty(L, d)
    ones = torch.ones(N, 1)
    for layer in range(L):
        Xa = torch.cat([X[layer].cpu(), ones], 1).double()
        sol = torch.linalg.solve(Xa.T @ Xa + 1e-3 * torch.eye(d + 1, dtype=torch.float64), Xa.T @ final.cpu().double())
        A[layer], b[layer] = sol[:d].float(), sol[d].float()
    A[-1], b[-1] = torch.eye(d), torch.zeros(d)  # the final residual reads itself
    A, b = A.to(stack.device).requires_grad_(True), b.to(stack.device).requires_grad_(True)
    opt = torch.optim.Adam([A, b], lr=lr)
    g = torch.Generator().manual_seed(int(seed))
    trained = range(L - 1)  # the last reading is the final residual: identity
    if not len(trained):
        steps = 0  # a one-layer stream: nothing to translate
    bar = tqdm(range(steps), desc=f"tuned lens {model.cfg.name}", disable=not progress, mininterval=1.0)
    for _ in bar:
        idx = torch.randint(N, (min(positions_per_step, N),), generator=g).to(stack.device)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        with torch.enable_grad():
            for layer in trained:  # one layer at a time: [positions, vocab] at once
                lg = ro.logits(X[layer, idx] @ A[layer] + b[layer])
                tgt = target[idx]
                loss = (tgt.exp() * (tgt - lg.log_softmax(-1))).sum(-1).mean()
                loss.backward()
                total += float(loss.detach())
        opt.step()
        bar.set_postfix(kl=f"{total / len(trained):.3f}")
    bar.close()
    card = {
        "steps": steps,
        "lr": lr,
        "positions_per_step": positions_per_step,
        "seed": seed,
        "train_tokens": int(N),
        "train_seconds": round(time.perf_counter() - started, 1),
        "objective": "KL(final || lens), least-squares initialisation",
    }
    return TunedLens(A.detach().cpu(), b.detach().cpu(), model.cfg.name, model.cfg.d_model, stage, card)


# --- direct logit attribution --------------------------------------------------------------------


@torch.no_grad()
def dla(model: Model, tokens: Tokens, target, contrast=None, *, pos: int = -1) -> pd.DataFrame:
    """Direct logit attribution at ``pos`` of one prompt: the logit of ``target`` (minus that of
    ``contrast``, if given) split into pieces that add up to it exactly, with the final norm's
    scale frozen at this run's value (the standard linearisation).

    Transformers: ``embed`` (token and position embeddings), each head ``a{l}.h{h}`` (``z @
    W_O``, works for grouped-query and bias-free models), each attention layer's output bias
    ``a{l}.bias``, each MLP ``m{l}`` and ``bias`` (the final norm's bias and the unembedding's).
    Recurrent / state-space models: ``embed`` and each layer's change of the stream ``l{l}``
    (telescoping: exact for every model; for residual blocks it is the layer's write).

    Returns ``DataFrame[component, kind, layer, head, value]`` and ``df.attrs`` with ``logit``
    (the model's own value), ``total`` (the sum of the pieces) and ``scale``.
    """
    batch = _one_prompt(model, tokens)
    t, c = model.token_id(target), (None if contrast is None else model.token_id(contrast))
    n = int(batch.lengths[0])
    if not -n <= pos < n:
        raise ValueError(f"position {pos} is outside the prompt of {n} tokens")
    p = pos % n
    ro = readout(model)
    if ro.softcap:
        raise ValueError("direct logit attribution is linear only without a final logit soft-cap")
    if not ro.affine:
        raise ValueError("this model's final norm is of a kind whose scale cannot be frozen")
    direction = ro.W_U[:, t] - (ro.W_U[:, c] if c is not None else 0)
    const = float(ro.b_U[t] - (ro.b_U[c] if c is not None else 0))
    pieces: list[tuple[str, str, int | None, int | None, torch.Tensor]] = []
    if model.cfg.family == "transformer":
        w = model.weights()
        L = model.cfg.n_layers
        mlp = "mlp_out" in model.site_kinds()
        names = [model.site("resid_pre", 0)] + model.sites("z") + (model.sites("mlp_out") if mlp else [])
        logits, cache = model.run_with_cache(batch, names=names)
        pieces.append(("embed", "embed", -1, None, cache[model.site("resid_pre", 0)][0, p].float()))
        for l in range(L):
            heads = w.head_outputs(l, cache[model.site("z", l)][0, p].float())  # [H, d]
            for h in range(heads.shape[0]):
                pieces.append((f"a{l}.h{h}", "head", l, h, heads[h]))
            pieces.append((f"a{l}.bias", "attn_bias", l, None, w.b_O[l]))
            if mlp:
                pieces.append((f"m{l}", "mlp", l, None, cache[model.site("mlp_out", l)][0, p].float()))
    else:
        names = [model.site("embed")] + model.sites("resid_post")
        logits, cache = model.run_with_cache(batch, names=names)
        prev = cache[model.site("embed")][0, p].float()
        pieces.append(("embed", "embed", -1, None, prev))
        for l, name in enumerate(model.sites("resid_post")):
            now = cache[name][0, p].float()
            pieces.append((f"l{l}", "layer", l, None, now - prev))
            prev = now
    resid = sum(x for *_, x in pieces)
    scale = ro.scale(resid)
    gain = ro.gain if ro.gain is not None else torch.ones_like(resid)
    rows = []
    for name, kind, layer, head, x in pieces:
        xc = x - x.mean() if ro.centers else x
        rows.append(
            {
                "component": name,
                "kind": kind,
                "layer": layer,
                "head": head,
                "value": float((xc * scale * gain) @ direction),
            }
        )
    bias = float(ro.bias @ direction) if ro.bias is not None else 0.0
    rows.append({"component": "bias", "kind": "bias", "layer": model.cfg.n_layers, "head": None, "value": bias + const})
    df = pd.DataFrame(rows)
    own = float(logits[0, p, t] - (logits[0, p, c] if c is not None else 0))
    df.attrs.update(
        logit=own,
        total=float(df["value"].sum()),
        scale=float(scale),
        target=model.to_str_tokens([t])[0],
        contrast=None if c is None else model.to_str_tokens([c])[0],
        pos=p,
    )
    return df


def tuned_lens_for(
    model: Model, *, train: bool = False, n: int = 8, length: int = 129, steps: int = 40, progress: bool = True
) -> TunedLens | None:
    """The tuned lens saved in the cache for ``model``; with ``train``, if none is saved, one
    trained on ``n`` x ``length`` tokens of text the model generates itself (seeded; about two
    minutes for smollm2-135m on 2 cores) and saved there.  ``None`` when none is saved and
    ``train`` is False.  Recurrent and zoo models with a word vocabulary train on it too."""
    path = default_path(model.cfg.name)
    if path.with_suffix(".safetensors").is_file():
        return TunedLens.load(path, model=model)
    if not train:
        return None
    from interp.tasks.text import generated_text

    text = generated_text(model, n=n, length=min(length, model.cfg.n_ctx), seed=0)
    lens = train_tuned_lens(model, text, steps=steps, progress=progress)
    lens.card["train_text"] = f"{n} x {text.shape[1]} tokens the model generated (seed 0)"
    lens.save(path)
    return lens
