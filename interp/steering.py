"""Steering vectors: build a direction from contrast pairs, add it to a hook site, sweep.

A :class:`SteeringVector` is a tensor shaped like one position of a hook site's activation
(``[d_model]`` for the residual stream or an RNN hidden state, ``[n_heads, d_head]`` for
``attn.hook_z``) plus where it belongs: the model, the site, the layer and how it was made.

- CAA (``method="caa"``, Rimsky et al. 2023): mean over contrast pairs of (positive -
  negative) activation at the answer position.
- PCA (``method="pca"``): the first principal direction of those per-pair differences
  (uncentred, as in representation engineering: the direction carrying most of the
  differences' energy), signed to agree with the mean difference and scaled to the mean
  projection of the differences on it, so coefficients are in the same units as CAA's.
- ActAdd (``method="actadd"``, Turner et al. 2023): the difference of one prompt pair.

``with vec.apply(model, coef=4.0, start_pos=0):`` adds ``coef * vector`` at every position
from ``start_pos`` on for every run in the block; it is built on :meth:`Model.hooks`, so it
composes with other hooks (another vector, an ablation, a patch).  ``vec.ablate(model)``
projects the direction out instead.  Vectors add, subtract and scale (``a - b``,
``2 * a``).  ``vec.save(stem)`` writes ``stem.safetensors`` + ``stem.json``.

:func:`sweep` runs a (layer x coefficient) grid and returns, per cell, the behaviour metric
and a damage metric (KL from the unsteered model) for the vector and for a random vector of
equal norm (the control).

Recurrent models steer the same way through their hidden-state sites
(``blocks.{l}.hook_hidden``, ``blocks.{l}.hook_cell``, ``blocks.{l}.hook_resid_post``): a
per-step site is edited at each step, so the edit at step t reaches every later step.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.model import Model
from interp.tasks import ContrastPairs

METHODS = ("caa", "pca", "actadd")
DEFAULT_SITE = "blocks.{layer}.hook_resid_post"
FORMAT_VERSION = 1

Prompts = torch.Tensor | Sequence[str] | Sequence[Sequence[int]]
Metric = Callable[[torch.Tensor], "float | torch.Tensor"]


# --- sites and tokens ---------------------------------------------------------------------

def site_for(model: Model, layer: int | None = None, site: str | None = None) -> str:
    """The hook site a vector lives at: ``site`` (may hold ``{layer}``), else the residual
    stream after ``layer`` (``blocks.{layer}.hook_resid_post``).  Validated on ``model``."""
    template = site or DEFAULT_SITE
    if "{layer}" in template:
        if layer is None:
            raise ValueError(f"site {template!r} needs a layer (0..{model.cfg.n_layers - 1})")
        template = template.format(layer=model.check_layer(int(layer)))
    elif layer is not None:
        model.check_layer(int(layer))
        if layer_of(template) not in (None, int(layer)):
            raise ValueError(f"site {template!r} is in layer {layer_of(template)}, not layer {layer}")
    name = model.check_site(template)
    shape = model.hook_names().set_index("name").loc[name, "shape"]
    if not shape.startswith("[batch, pos"):
        raise ValueError(f"site {name} has shape {shape}: a steering vector needs a site shaped [batch, pos, ...] "
                         "(residual stream, hidden state, hook_z, MLP activations, ...)")
    return name


def layer_of(site: str) -> int | None:
    """The layer index in ``blocks.{l}.…`` site names, else None."""
    m = re.match(r"blocks\.(\d+)\.", site)
    return int(m.group(1)) if m else None


def as_tokens(model: Model, prompts: Prompts) -> torch.Tensor:
    """Prompts (a tensor, strings in the model's token syntax, or lists of token ids) as
    validated tokens ``[n, pos]``; all prompts must have the same length."""
    if isinstance(prompts, torch.Tensor):
        return model.validate_tokens(prompts)
    if isinstance(prompts, str):
        return model.to_tokens(prompts)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    if all(isinstance(p, str) for p in prompts):
        return model.to_tokens(prompts)
    if all(isinstance(p, (list, tuple)) and all(isinstance(t, int) for t in p) for p in prompts):
        lengths = sorted({len(p) for p in prompts})
        if len(lengths) != 1:
            raise ValueError(f"token-id prompts have different lengths {lengths}; they must all be equally long")
        return model.validate_tokens(torch.tensor(prompts))
    raise TypeError("prompts must be a tensor [n, pos], a list of strings, or a list of token-id lists")


def contrast_tokens(model: Model, positive: Prompts, negative: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative prompts as tokens ``[n_pairs, pos]``, checked to align pair by pair."""
    pos, neg = as_tokens(model, positive), as_tokens(model, negative)
    if pos.shape[0] != neg.shape[0]:
        raise ValueError(f"{pos.shape[0]} positive but {neg.shape[0]} negative prompts: contrast pairs need "
                         "one negative per positive")
    if pos.shape[1] != neg.shape[1]:
        raise ValueError(f"positive prompts have {pos.shape[1]} tokens but negative ones {neg.shape[1]}: the "
                         "prompts of a pair must align position by position (same length)")
    return pos, neg


def _position(answer_pos: int, n_pos: int) -> int:
    if not isinstance(answer_pos, int) or isinstance(answer_pos, bool):
        raise TypeError(f"answer_pos must be an int, got {answer_pos!r}")
    if not -n_pos <= answer_pos < n_pos:
        raise ValueError(f"answer_pos {answer_pos} is outside prompts of {n_pos} tokens")
    return answer_pos % n_pos


@torch.no_grad()
def site_activations(model: Model, tokens: torch.Tensor, site: str, pos: int | None = -1) -> torch.Tensor:
    """Activation of ``site`` at position ``pos`` (``[n, *trailing]``), or at every position
    (``pos=None``: ``[n, pos, *trailing]``), float32."""
    _, cache = model.run_with_cache(tokens, names=[site])
    act = cache[site].float()
    return act if pos is None else act[:, _position(pos, tokens.shape[1])]


# --- the vector -------------------------------------------------------------------------

@dataclass
class SteeringVector:
    """A direction at one hook site.

    vector: ``[*trailing]`` float32 (the activation's shape after ``[batch, pos]``; units
    of that activation).  site: hook site name.  model_name / d_model: the model it was
    built on (checked when applied).  method: "caa", "pca", "actadd", "function_vector",
    "random" or an arithmetic expression of those.  answer_pos: position the pairs were
    read at.  pairs: the token ids used (``{"positive": [[...]], "negative": [[...]]}``).
    meta: anything else worth keeping (JSON-serialisable).
    """

    vector: torch.Tensor
    site: str
    model_name: str
    d_model: int
    method: str
    answer_pos: int | None = -1
    pairs: dict | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.vector = self.vector.detach().float().cpu()
        if not torch.isfinite(self.vector).all():
            raise ValueError("a steering vector must be finite (it has NaN or inf entries)")

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_pairs(cls, model: Model, positive: Prompts | ContrastPairs, negative: Prompts | None = None, *,
                   layer: int | None = None, site: str | None = None, method: str = "caa",
                   answer_pos: int | None = None) -> "SteeringVector":
        """A vector from contrast pairs (``positive[i]`` against ``negative[i]``).

        positive / negative: tokens ``[n_pairs, pos]``, strings in the model's token syntax
        or token-id lists, aligned pair by pair; or a :class:`ContrastPairs` as
        ``positive``.  layer / site: where (default: the residual stream after ``layer``).
        method: "caa" (mean difference), "pca" (first principal direction of the
        differences) or "actadd" (needs exactly one pair).  answer_pos: the position read
        (default: the pairs' own, else -1 = last).
        """
        if isinstance(positive, ContrastPairs):
            if negative is not None:
                raise ValueError("pass either ContrastPairs or positive and negative prompts, not both")
            answer_pos = positive.answer_pos if answer_pos is None else answer_pos
            positive, negative = positive.positive, positive.negative
        if negative is None:
            raise ValueError("negative prompts are missing")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        answer_pos = -1 if answer_pos is None else answer_pos
        name = site_for(model, layer, site)
        pos, neg = contrast_tokens(model, positive, negative)
        if method == "actadd" and pos.shape[0] != 1:
            raise ValueError(f"actadd builds a vector from one prompt pair; got {pos.shape[0]} pairs "
                             "(use method='caa' for several)")
        act_pos = site_activations(model, pos, name, answer_pos)                # [n_pairs, *trailing]
        diffs = (act_pos - site_activations(model, neg, name, answer_pos)).flatten(1)
        vec = principal_direction(diffs) if method == "pca" else diffs.mean(0)
        return cls(vec.reshape(act_pos.shape[1:]), name, model.cfg.name, model.cfg.d_model, method, answer_pos,
                   {"positive": pos.tolist(), "negative": neg.tolist()})

    @classmethod
    def from_prompts(cls, model: Model, positive: str | Sequence[int] | torch.Tensor,
                     negative: str | Sequence[int] | torch.Tensor, **kwargs) -> "SteeringVector":
        """ActAdd: the activation difference of one prompt pair (see :meth:`from_pairs`)."""
        pos, neg = (as_tokens(model, [p] if isinstance(p, (list, tuple)) else p) for p in (positive, negative))
        if pos.shape[0] != 1 or neg.shape[0] != 1:
            raise ValueError(f"ActAdd takes one positive and one negative prompt, "
                             f"got {pos.shape[0]} and {neg.shape[0]}")
        return cls.from_pairs(model, pos, neg, method="actadd", **kwargs)

    def random_like(self, seed: int = 0) -> "SteeringVector":
        """A Gaussian random direction of the same norm, site and shape (the control)."""
        g = torch.Generator().manual_seed(int(seed))
        r = torch.randn(self.vector.shape, generator=g)
        r = r * (self.norm / r.norm().item()) if self.norm > 0 else torch.zeros_like(r)
        return replace(self, vector=r, method="random", pairs=None,
                       meta={"seed": int(seed), "control_for": self.method})

    # --- properties and arithmetic ---------------------------------------------------------
    @property
    def layer(self) -> int | None:
        return layer_of(self.site)

    @property
    def norm(self) -> float:
        """L2 norm of the vector (units of the site's activation)."""
        return float(self.vector.norm())

    def unit(self) -> torch.Tensor:
        if self.norm == 0:
            raise ValueError("the zero vector has no direction")
        return self.vector / self.norm

    def __repr__(self) -> str:
        return (f"SteeringVector(site={self.site!r}, method={self.method!r}, model={self.model_name!r}, "
                f"shape={tuple(self.vector.shape)}, norm={self.norm:.3g})")

    def _compatible(self, other: "SteeringVector") -> None:
        if not isinstance(other, SteeringVector):
            raise TypeError(f"cannot combine a SteeringVector with {type(other).__name__}")
        if (self.site, self.model_name, self.vector.shape) != (other.site, other.model_name, other.vector.shape):
            raise ValueError(f"vectors differ in site/model/shape: {self!r} vs {other!r}")

    def _combine(self, other: "SteeringVector", sign: float, op: str) -> "SteeringVector":
        self._compatible(other)
        return replace(self, vector=self.vector + sign * other.vector, method=f"({self.method} {op} {other.method})",
                       pairs=None, meta={"terms": [self.method, other.method]})

    def __add__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, -1.0, "-")

    def __mul__(self, scale: float) -> "SteeringVector":
        scale = check_finite(scale, "scale")
        return replace(self, vector=self.vector * scale, method=f"{scale:g}*{self.method}")

    __rmul__ = __mul__

    def __truediv__(self, scale: float) -> "SteeringVector":
        scale = check_finite(scale, "scale")
        if scale == 0:
            raise ValueError("cannot divide a vector by 0")
        return self * (1.0 / scale)

    def __neg__(self) -> "SteeringVector":
        return self * -1.0

    # --- use --------------------------------------------------------------------------------
    def check_model(self, model: Model, allow_other_model: bool = False) -> None:
        """Raises if ``model`` is not the one the vector fits: width, name, site, shape."""
        if model.cfg.d_model != self.d_model:
            raise ValueError(f"vector was built on a model of width d_model={self.d_model} "
                             f"({self.model_name!r}); {model.cfg.name or 'this model'} has d_model={model.cfg.d_model}")
        if not allow_other_model and self.model_name != model.cfg.name:
            raise ValueError(f"vector was built on model {self.model_name!r}, not {model.cfg.name!r}; pass "
                             "allow_other_model=True to apply it anyway")
        model.check_site(self.site)

    def _hook(self, coef: float, start_pos: int, end_pos: int | None):
        delta = self.vector * coef

        def add(x: torch.Tensor, hook) -> torch.Tensor:
            _check_trailing(x, self.vector.shape, self.site)
            out = x.clone()
            out[:, start_pos:end_pos] += delta.to(dtype=x.dtype, device=x.device)
            return out
        return add

    @contextlib.contextmanager
    def apply(self, model: Model, coef: float = 1.0, start_pos: int = 0, end_pos: int | None = None,
              *, allow_other_model: bool = False) -> Iterator[Model]:
        """Adds ``coef * vector`` at positions ``start_pos:end_pos`` (Python slice; -1 = the
        last position only) of the site, for every run inside the ``with`` block."""
        coef = check_finite(coef, "coef")
        self.check_model(model, allow_other_model)
        _check_slice(start_pos, end_pos)
        with model.hooks([(self.site, self._hook(coef, start_pos, end_pos))]):
            yield model

    def ablate(self, model: Model, start_pos: int = 0, end_pos: int | None = None, *,
               allow_other_model: bool = False):
        """Context manager projecting the vector's direction out of the site (see :func:`ablate_direction`)."""
        self.check_model(model, allow_other_model)
        return ablate_direction(model, self.site, self.vector, start_pos, end_pos)

    # --- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON metadata written beside the tensor."""
        return {"format": "interp.steering_vector", "version": FORMAT_VERSION, "model": self.model_name,
                "d_model": self.d_model, "site": self.site, "layer": self.layer, "method": self.method,
                "answer_pos": self.answer_pos, "shape": list(self.vector.shape), "norm": self.norm,
                "pairs": self.pairs, "meta": self.meta}

    def save(self, stem: str | Path) -> Path:
        """Writes ``stem.safetensors`` (tensor "vector") and ``stem.json``; returns the tensor path."""
        from safetensors.torch import save_file

        stem = Path(stem)
        if stem.suffix in (".safetensors", ".json"):
            stem = stem.with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        path = stem.with_name(stem.name + ".safetensors")
        save_file({"vector": self.vector.contiguous()}, str(path),
                  metadata={"site": self.site, "model": self.model_name})
        stem.with_name(stem.name + ".json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, stem: str | Path, model: Model | None = None, *, allow_other_model: bool = False) -> "SteeringVector":
        """Reads a vector written by :meth:`save`; with ``model``, checks that it fits."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        stem = Path(stem)
        if stem.suffix in (".safetensors", ".json"):
            stem = stem.with_suffix("")
        tensor_path, meta_path = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
        for p in (tensor_path, meta_path):
            if not p.is_file():
                raise FileNotFoundError(f"no {p}: a saved vector is <stem>.safetensors + <stem>.json")
        try:
            meta = json.loads(meta_path.read_text())
            tensors = load_file(str(tensor_path))
        except (json.JSONDecodeError, SafetensorError) as e:
            raise ValueError(f"cannot read the vector at {stem}: {e}") from None
        if meta.get("format") != "interp.steering_vector" or "vector" not in tensors:
            raise ValueError(f"{meta_path} is not a steering vector file")
        vec = tensors["vector"]
        if list(vec.shape) != meta["shape"]:
            raise ValueError(f"{tensor_path} holds shape {list(vec.shape)} but {meta_path} says {meta['shape']}")
        out = cls(vec, meta["site"], meta["model"], int(meta["d_model"]), meta["method"], meta.get("answer_pos"),
                  meta.get("pairs"), meta.get("meta") or {})
        if model is not None:
            out.check_model(model, allow_other_model)
        return out


def load_vector(stem: str | Path, model: Model | None = None, **kwargs) -> SteeringVector:
    """Alias of :meth:`SteeringVector.load`."""
    return SteeringVector.load(stem, model, **kwargs)


def principal_direction(diffs: torch.Tensor) -> torch.Tensor:
    """First right-singular vector of ``diffs`` [n, d] (uncentred), signed to agree with the
    mean difference, scaled to the mean projection of the rows on it; ``[d]``."""
    if diffs.shape[0] < 2:
        raise ValueError("the principal direction needs at least 2 pairs")
    _, _, vh = torch.linalg.svd(diffs.double(), full_matrices=False)
    u = vh[0]
    proj = diffs.double() @ u
    if proj.mean() < 0:
        u, proj = -u, -proj
    return (u * proj.mean()).float()


@contextlib.contextmanager
def ablate_direction(model: Model, site: str, direction: torch.Tensor, start_pos: int = 0,
                     end_pos: int | None = None) -> Iterator[Model]:
    """Projects ``direction`` (shaped like one position of the site) out of the site's
    activation at positions ``start_pos:end_pos``: ``x - (x . u) u`` with ``u`` the unit
    direction, for every run inside the ``with`` block (composes like :meth:`Model.hooks`)."""
    model.check_site(site)
    _check_slice(start_pos, end_pos)
    direction = torch.as_tensor(direction).detach().float()
    if not torch.isfinite(direction).all() or direction.norm() == 0:
        raise ValueError("the direction to ablate must be finite and non-zero")
    u = (direction / direction.norm()).flatten()

    def project(x: torch.Tensor, hook) -> torch.Tensor:
        _check_trailing(x, direction.shape, site)
        out = x.clone()
        part = out[:, start_pos:end_pos]
        flat = part.reshape(*part.shape[:2], -1)
        uu = u.to(dtype=x.dtype, device=x.device)
        out[:, start_pos:end_pos] = (flat - (flat @ uu)[..., None] * uu).reshape(part.shape)
        return out

    with model.hooks([(site, project)]):
        yield model


def _check_trailing(x: torch.Tensor, shape: torch.Size, site: str) -> None:
    if tuple(x.shape[2:]) != tuple(shape):
        raise ValueError(f"vector of shape {tuple(shape)} does not fit site {site}, whose activation is "
                         f"{tuple(x.shape)} ([batch, pos, ...]): a vector of another model or width?")


def _check_slice(start_pos: int, end_pos: int | None) -> None:
    for name, value in (("start_pos", start_pos), ("end_pos", end_pos)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise TypeError(f"{name} must be an int, got {value!r}")


def check_finite(value: float, name: str) -> float:
    """``value`` as a float; raises for non-numbers, NaN and infinities (coefficients, scales)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


# --- metrics ----------------------------------------------------------------------------

def token_set_prob(token_ids: Sequence[int] | range, positions: slice | int | None = None) -> Metric:
    """Behaviour metric: mean (over batch and ``positions``) probability mass the model puts
    on ``token_ids``.  Returns ``fn(logits [batch, pos, d_vocab]) -> float`` in [0, 1]."""
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    if ids.numel() == 0:
        raise ValueError("token_set_prob needs at least one token id")
    sel = slice(None) if positions is None else (slice(positions, positions + 1 or None)
                                                 if isinstance(positions, int) else positions)

    def metric(logits: torch.Tensor) -> float:
        if int(ids.max()) >= logits.shape[-1]:
            raise ValueError(f"token ids up to {int(ids.max())} but the model has {logits.shape[-1]} tokens")
        probs = logits[:, sel].float().softmax(-1)
        return float(probs[..., ids.to(logits.device)].sum(-1).mean())
    return metric


def answer_prob(answers: Sequence[int] | torch.Tensor, pos: int = -1) -> Metric:
    """Behaviour metric: mean probability of each row's own answer token at position ``pos``.
    ``answers``: ``[batch]`` token ids.  Returns ``fn(logits) -> float`` in [0, 1]."""
    answers = torch.as_tensor(answers, dtype=torch.long).reshape(-1)

    def metric(logits: torch.Tensor) -> float:
        if logits.shape[0] != answers.shape[0]:
            raise ValueError(f"{answers.shape[0]} answers for a batch of {logits.shape[0]}")
        probs = logits[:, pos].float().softmax(-1)
        return float(probs.gather(1, answers[:, None].to(probs.device)).mean())
    return metric


def kl_from(base_logits: torch.Tensor, logits: torch.Tensor, positions: slice = slice(None)) -> float:
    """Mean over batch and ``positions`` of KL(base || steered) in nats per position."""
    p = base_logits[:, positions].float().log_softmax(-1)
    q = logits[:, positions].float().log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


# --- the sweep ---------------------------------------------------------------------------

def _vectors_by_layer(model: Model, vectors_or_pairs, layers: Sequence[int] | None, site: str | None,
                      method: str, answer_pos: int | None) -> dict[int | None, SteeringVector]:
    if isinstance(vectors_or_pairs, SteeringVector):
        vectors_or_pairs = [vectors_or_pairs]
    if isinstance(vectors_or_pairs, Mapping):
        vectors = dict(vectors_or_pairs)
    elif isinstance(vectors_or_pairs, Sequence) and vectors_or_pairs and all(
            isinstance(v, SteeringVector) for v in vectors_or_pairs):
        vectors = {v.layer: v for v in vectors_or_pairs}
        if len(vectors) != len(vectors_or_pairs):
            raise ValueError("several vectors share a layer: pass a dict {label: vector} instead")
    else:
        if isinstance(vectors_or_pairs, ContrastPairs):
            pos, neg = vectors_or_pairs, None
        elif isinstance(vectors_or_pairs, (tuple, list)) and len(vectors_or_pairs) == 2:
            pos, neg = vectors_or_pairs
        else:
            raise TypeError("vectors_or_pairs must be ContrastPairs, a (positive, negative) pair of prompt sets, "
                            "a SteeringVector, a list of them or a dict {layer: vector}")
        layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
        return {l: SteeringVector.from_pairs(model, pos, neg, layer=l, site=site, method=method,
                                             answer_pos=answer_pos) for l in layers}
    if layers is not None:
        missing = [l for l in layers if l not in vectors]
        if missing:
            raise ValueError(f"no vector for layers {missing}; the vectors given are for {sorted(vectors, key=str)}")
        vectors = {l: vectors[l] for l in layers}
    for v in vectors.values():
        v.check_model(model)
    return vectors


@torch.no_grad()
def sweep(model: Model, vectors_or_pairs, layers: Sequence[int] | None, coefs: Sequence[float],
          eval_tokens: torch.Tensor, behaviour_metric: Metric, *, site: str | None = None, method: str = "caa",
          answer_pos: int | None = None, start_pos: int = 0, random_control: bool = True, seed: int = 0,
          neutral_tokens: torch.Tensor | None = None, progress: bool = True) -> pd.DataFrame:
    """Steers ``model`` at each (layer, coef) and measures behaviour and damage.

    vectors_or_pairs: contrast pairs (:class:`ContrastPairs` or ``(positive, negative)``;
    a vector is built per layer at ``site``, default the residual stream after the layer,
    with ``method``), or ready vectors (a list, one per layer, or ``{layer: vector}``).
    coefs: finite multipliers.  eval_tokens: ``[batch, pos]`` the behaviour is measured on.
    behaviour_metric: ``fn(logits [batch, pos, d_vocab]) -> float``.

    Returns one row per (layer, coef, vector) with columns ``layer, site, coef, vector``
    ("steer" or "random": a Gaussian vector of equal norm, the control), ``norm`` (L2 of
    the unscaled vector), ``behaviour`` and ``damage``: mean KL(unsteered || steered) in nats
    per position, over positions from ``start_pos`` on, measured on ``neutral_tokens`` when
    given (text the steering should leave alone; for the intended behaviour change itself
    is a KL too) and on ``eval_tokens`` otherwise; with ``neutral_tokens`` also
    ``neutral_loss`` (their next-token cross-entropy under steering, nats).  ``df.attrs``
    holds ``baseline_behaviour``, ``damage_on`` ("neutral" | "eval") and
    ``baseline_neutral_loss``.
    """
    from interp.tasks import loss_by_position

    coefs = [check_finite(c, "coef") for c in coefs]
    if not coefs:
        raise ValueError("coefs is empty")
    _check_slice(start_pos, None)
    eval_tokens = model.validate_tokens(eval_tokens)
    neutral = None if neutral_tokens is None else model.validate_tokens(neutral_tokens)
    vectors = _vectors_by_layer(model, vectors_or_pairs, layers, site, method, answer_pos)
    damage_tokens = eval_tokens if neutral is None else neutral
    base_eval = model(eval_tokens)
    base_damage = base_eval if neutral is None else model(neutral)
    positions = slice(start_pos, None)
    attrs = {"baseline_behaviour": float(behaviour_metric(base_eval)),
             "damage_on": "eval" if neutral is None else "neutral"}
    if neutral is not None:
        attrs["baseline_neutral_loss"] = float(loss_by_position(base_damage, neutral).mean())
    kinds = {"steer": None, "random": seed} if random_control else {"steer": None}
    rows = []
    bar = tqdm(total=len(vectors) * len(coefs) * len(kinds), desc="steering sweep", disable=not progress,
               mininterval=1.0)
    for label, vec in vectors.items():
        for kind, kind_seed in kinds.items():
            v = vec if kind == "steer" else vec.random_like(kind_seed)
            for coef in coefs:
                with v.apply(model, coef=coef, start_pos=start_pos):
                    logits = model(eval_tokens)
                    row = {"layer": label, "site": vec.site, "coef": coef, "vector": kind, "norm": vec.norm,
                           "behaviour": float(behaviour_metric(logits))}
                    if neutral is None:
                        row["damage"] = kl_from(base_damage, logits, positions)
                    else:
                        steered = model(damage_tokens)
                        row["damage"] = kl_from(base_damage, steered, positions)
                        row["neutral_loss"] = float(loss_by_position(steered, neutral).mean())
                rows.append(row)
                bar.update()
    bar.close()
    df = pd.DataFrame(rows)
    df.attrs.update(attrs)
    return df


# --- side-by-side generations ------------------------------------------------------------

@torch.no_grad()
def compare_generations(model: Model, vec: SteeringVector, prompts: Prompts, coef: float, *, start_pos: int = 0,
                        max_new_tokens: int = 8) -> pd.DataFrame:
    """Greedy continuations of ``prompts`` without and with ``coef * vec``.

    Returns one row per prompt: ``prompt``, ``unsteered``, ``steered`` (the new tokens as
    text in the model's token syntax) and ``kl_next`` (KL(unsteered || steered) of the next
    token distribution at the prompt's last position, nats).
    """
    coef = check_finite(coef, "coef")
    tokens = as_tokens(model, prompts)
    room = model.cfg.n_ctx - tokens.shape[1]
    if room < 1:
        raise ValueError(f"prompts of {tokens.shape[1]} tokens leave no room to generate (n_ctx={model.cfg.n_ctx})")
    n_new = min(int(max_new_tokens), room)
    base_logits, base_out = model(tokens), model.generate(tokens, n_new)
    with vec.apply(model, coef=coef, start_pos=start_pos):
        logits, out = model(tokens), model.generate(tokens, n_new)
    text = lambda t: " ".join(model.to_str_tokens(t)) if len(t) else ""
    n = tokens.shape[1]
    return pd.DataFrame([{"prompt": text(tokens[i]), "unsteered": text(base_out[i, n:]), "steered": text(out[i, n:]),
                          "kl_next": kl_from(base_logits[i:i + 1], logits[i:i + 1], slice(-1, None))}
                         for i in range(tokens.shape[0])])


# --- pairs files (the CLI's input) -------------------------------------------------------

PAIRS_FORMAT = """A pairs file is JSON: {"positive": [...], "negative": [...], "answer_pos": -1}.
"positive" and "negative" are equally long lists of prompts, each a string in the model's
token syntax (e.g. "B b40 b33" for steer-2l) or a list of token ids; prompt i of "positive"
is paired with prompt i of "negative" and both must have the same number of tokens.
"answer_pos" (optional, default -1 = last) is the position whose activations are compared."""


def read_pairs(path: str | Path, model: Model) -> ContrastPairs:
    """Reads and validates a pairs file (format: :data:`PAIRS_FORMAT`) as tokens for ``model``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no pairs file at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}).\n{PAIRS_FORMAT}") from None
    if not isinstance(data, dict) or not {"positive", "negative"} <= set(data):
        raise ValueError(f"{path} must hold an object with 'positive' and 'negative' lists.\n{PAIRS_FORMAT}")
    unknown = sorted(set(data) - {"positive", "negative", "answer_pos"})
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}.\n{PAIRS_FORMAT}")
    for key in ("positive", "negative"):
        if not isinstance(data[key], list) or not data[key]:
            raise ValueError(f"{path}: {key!r} must be a non-empty list of prompts.\n{PAIRS_FORMAT}")
    answer_pos = data.get("answer_pos", -1)
    if not isinstance(answer_pos, int) or isinstance(answer_pos, bool):
        raise ValueError(f"{path}: answer_pos must be an integer, got {answer_pos!r}")
    pos, neg = contrast_tokens(model, data["positive"], data["negative"])
    _position(answer_pos, pos.shape[1])
    return ContrastPairs(pos, neg, answer_pos)
