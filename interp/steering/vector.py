"""Steering vectors: a direction at one hook site, built from contrast pairs, applied through
the intervention primitive (:mod:`interp.interventions`).

A :class:`SteeringVector` is a tensor shaped like one position of a hook site's activation
(``[d_model]`` for the residual stream or an RNN hidden state, ``[n_heads, d_head]`` for
``attn.hook_z``) plus where it belongs: the model, the site, the layer and how it was made.

- CAA (``method="caa"``, Rimsky et al. 2023): mean over contrast pairs of (positive -
  negative) activation at each prompt's answer position.
- PCA (``method="pca"``): the first principal direction of those per-pair differences
  (uncentred, as in representation engineering), signed to agree with the mean difference
  and scaled to the mean projection of the differences on it (coefficients in CAA's units).
- ActAdd (``method="actadd"``, Turner et al. 2023): the difference of one prompt pair.

``with vec.apply(model, coef=4.0, start_pos=0):`` adds ``coef * vector`` at every position
from ``start_pos`` on (``start_pos=-1``: each row's last token only) for every run in the
block, also at every cached decoding step; it composes with other hooks.  ``vec.ablate(model)``
projects the direction out instead.  Vectors add, subtract and scale; ``vec.save(stem)``
writes ``stem.safetensors`` + ``stem.json``.

Recurrent models steer the same way through their hidden-state sites
(``blocks.{l}.hook_hidden``, ``blocks.{l}.hook_cell``, ``blocks.{l}.hook_resid_post``).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from interp import interventions as I
from interp.errors import InputError
from interp.model import Model
from interp.sites import layer_of
from interp.steering.pairs import site_activations
from interp.tasks.contrast import AnswerPos, ContrastPairs, Prompts

METHODS = ("caa", "pca", "actadd")
DEFAULT_SITE = "blocks.{layer}.hook_resid_post"
FORMAT_VERSION = 2


def site_for(model: Model, layer: int | None = None, site: str | None = None) -> str:
    """The hook site a vector lives at: ``site`` (may hold ``{layer}``), else the residual
    stream after ``layer`` (``blocks.{layer}.hook_resid_post``).  Validated on ``model``."""
    template = site or DEFAULT_SITE
    if "{layer}" in template:
        if layer is None:
            raise InputError(f"site {template!r} needs a layer (0..{model.cfg.n_layers - 1})")
        template = template.format(layer=model.check_layer(layer))
    elif layer is not None:
        model.check_layer(layer)
        if layer_of(template) not in (None, int(layer)):
            raise InputError(f"site {template!r} is in layer {layer_of(template)}, not layer {layer}")
    name = model.check_site(template)
    shape = model.hook_names().set_index("name").loc[name, "shape"]
    if not shape.startswith("[batch, pos"):
        raise InputError(
            f"site {name} has shape {shape}: a steering vector needs a site shaped [batch, pos, ...] "
            "(residual stream, hidden state, hook_z, MLP activations, ...)"
        )
    return name


def check_finite(value: float, name: str) -> float:
    """``value`` as a float; raises for non-numbers, NaN and infinities (coefficients, scales)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    return value


def positions(start_pos: int = 0, end_pos: int | None = None) -> I.Positions:
    """The intervention positions of a ``start_pos:end_pos`` span: ``p >= 0`` = from p on,
    ``-1`` = each row's last token only; ``end_pos`` (exclusive, absolute) cuts the span."""
    for name, value in (("start_pos", start_pos), ("end_pos", end_pos)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InputError(f"{name} must be an int, got {value!r}")
    if end_pos is None:
        if start_pos >= 0 or start_pos == -1:
            return start_pos
        raise InputError(
            f"start_pos must be >= 0 (from that position on) or -1 (each row's last token), got {start_pos}"
        )
    if start_pos < 0 or end_pos < 0:
        raise InputError("with end_pos, start_pos and end_pos are absolute positions (>= 0)")
    return slice(start_pos, end_pos)


@dataclass
class SteeringVector:
    """A direction at one hook site.

    vector: ``[*trailing]`` float32 (the activation's shape after ``[batch, pos]``; units
    of that activation).  site: hook site name.  model_name / d_model: the model it was
    built on (checked when applied).  method: "caa", "pca", "actadd", "function_vector",
    "random" or an arithmetic expression of those.  answer_pos: where the pairs were read
    (an int or "mean").  pairs: the token ids used.  meta: anything else worth keeping.
    """

    vector: torch.Tensor
    site: str
    model_name: str
    d_model: int
    method: str
    answer_pos: AnswerPos | None = -1
    pairs: dict | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.vector = self.vector.detach().float().cpu()
        if not torch.isfinite(self.vector).all():
            raise InputError("a steering vector must be finite (it has NaN or inf entries)")

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_pairs(
        cls,
        model: Model,
        positive: Prompts | ContrastPairs,
        negative: Prompts | None = None,
        *,
        layer: int | None = None,
        site: str | None = None,
        method: str = "caa",
        answer_pos: AnswerPos | None = None,
    ) -> SteeringVector:
        """A vector from contrast pairs (``positive[i]`` against ``negative[i]``).

        positive / negative: prompts (texts of any length, token-id lists, a tensor or a
        TokenBatch), one negative per positive; or a :class:`ContrastPairs` as
        ``positive``.  layer / site: where (default: the residual stream after ``layer``).
        method: "caa", "pca" or "actadd" (exactly one pair).  answer_pos: where each prompt
        is read: an int (default -1 = its last token) or "mean" (over its tokens).
        """
        if isinstance(positive, ContrastPairs):
            if negative is not None:
                raise InputError("pass either ContrastPairs or positive and negative prompts, not both")
            pairs = positive if answer_pos is None else replace(positive, answer_pos=answer_pos)
        else:
            if negative is None:
                raise InputError("negative prompts are missing")
            pairs = ContrastPairs(positive, negative, -1 if answer_pos is None else answer_pos)
        if method not in METHODS:
            raise InputError(f"method must be one of {METHODS}, got {method!r}")
        name = site_for(model, layer, site)
        pos, neg = pairs.tokens(model)
        if method == "actadd" and len(pos) != 1:
            raise InputError(
                f"actadd builds a vector from one prompt pair; got {len(pos)} pairs (use method='caa' for several)"
            )
        act_pos = site_activations(model, pos, name, pairs.answer_pos)  # [n_pairs, *trailing]
        diffs = (act_pos - site_activations(model, neg, name, pairs.answer_pos)).flatten(1)
        vec = principal_direction(diffs) if method == "pca" else diffs.mean(0)
        return cls(
            vec.reshape(act_pos.shape[1:]),
            name,
            model.cfg.name,
            model.cfg.d_model,
            method,
            pairs.answer_pos,
            {"positive": [r.tolist() for r in pos.rows()], "negative": [r.tolist() for r in neg.rows()]},
        )

    @classmethod
    def from_prompts(
        cls,
        model: Model,
        positive: str | Sequence[int] | torch.Tensor,
        negative: str | Sequence[int] | torch.Tensor,
        **kwargs,
    ) -> SteeringVector:
        """ActAdd: the activation difference of one prompt pair (see :meth:`from_pairs`)."""

        def wrap(
            p: str | Sequence[int] | torch.Tensor,
        ) -> Sequence[str] | Sequence[Sequence[int]] | Sequence[int] | torch.Tensor:
            if isinstance(p, str):
                return [p]
            if isinstance(p, (list, tuple)) and p and isinstance(p[0], int):
                return [p]
            return p

        pos, neg = model.tokenize(wrap(positive)), model.tokenize(wrap(negative))
        if len(pos) != 1 or len(neg) != 1:
            raise InputError(f"ActAdd takes one positive and one negative prompt, got {len(pos)} and {len(neg)}")
        return cls.from_pairs(model, pos, neg, method="actadd", **kwargs)

    def random_like(self, seed: int = 0) -> SteeringVector:
        """A Gaussian random direction of the same norm, site and shape (the control)."""
        g = torch.Generator().manual_seed(int(seed))
        r = torch.randn(self.vector.shape, generator=g)
        r = r * (self.norm / r.norm().item()) if self.norm > 0 else torch.zeros_like(r)
        return replace(
            self, vector=r, method="random", pairs=None, meta={"seed": int(seed), "control_for": self.method}
        )

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
            raise InputError("the zero vector has no direction")
        return self.vector / self.norm

    def __repr__(self) -> str:
        return (
            f"SteeringVector(site={self.site!r}, method={self.method!r}, model={self.model_name!r}, "
            f"shape={tuple(self.vector.shape)}, norm={self.norm:.3g})"
        )

    def _compatible(self, other: SteeringVector) -> None:
        if not isinstance(other, SteeringVector):
            raise TypeError(f"cannot combine a SteeringVector with {type(other).__name__}")
        if (self.site, self.model_name, self.vector.shape) != (other.site, other.model_name, other.vector.shape):
            raise InputError(f"vectors differ in site/model/shape: {self!r} vs {other!r}")

    def _combine(self, other: SteeringVector, sign: float, op: str) -> SteeringVector:
        self._compatible(other)
        return replace(
            self,
            vector=self.vector + sign * other.vector,
            method=f"({self.method} {op} {other.method})",
            pairs=None,
            meta={"terms": [self.method, other.method]},
        )

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, -1.0, "-")

    def __mul__(self, scale: float) -> SteeringVector:
        scale = check_finite(scale, "scale")
        return replace(self, vector=self.vector * scale, method=f"{scale:g}*{self.method}")

    __rmul__ = __mul__

    def __truediv__(self, scale: float) -> SteeringVector:
        scale = check_finite(scale, "scale")
        if scale == 0:
            raise InputError("cannot divide a vector by 0")
        return self * (1.0 / scale)

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    # --- use --------------------------------------------------------------------------------
    def check_model(self, model: Model, allow_other_model: bool = False) -> None:
        """Raises if ``model`` is not the one the vector fits: width, name, site, shape."""
        if model.cfg.d_model != self.d_model:
            raise InputError(
                f"vector was built on a model of width d_model={self.d_model} "
                f"({self.model_name!r}); {model.cfg.name or 'this model'} has d_model={model.cfg.d_model}"
            )
        if not allow_other_model and self.model_name != model.cfg.name:
            raise InputError(
                f"vector was built on model {self.model_name!r}, not {model.cfg.name!r}; pass "
                "allow_other_model=True to apply it anyway"
            )
        model.check_site(self.site)
        shape = model.hook_names().set_index("name").loc[self.site, "shape"]
        trailing = shape.strip("[]").split(", ")[2:]
        if [str(s) for s in self.vector.shape] != trailing:
            raise InputError(
                f"vector of shape {tuple(self.vector.shape)} does not fit site {self.site}, whose "
                f"activation is {shape}: a vector of another model or width?"
            )

    def intervention(self, coef: float = 1.0, start_pos: int = 0, end_pos: int | None = None) -> I.Intervention:
        """The :class:`interp.interventions.Intervention` adding ``coef * vector``."""
        return I.add(self.site, self.vector, check_finite(coef, "coef"), positions=positions(start_pos, end_pos))

    @contextlib.contextmanager
    def apply(
        self,
        model: Model,
        coef: float = 1.0,
        start_pos: int = 0,
        end_pos: int | None = None,
        *,
        allow_other_model: bool = False,
    ) -> Iterator[Model]:
        """Adds ``coef * vector`` at positions ``start_pos`` (absolute; -1 = each row's last
        token) up to ``end_pos`` (exclusive) for every run inside the ``with`` block."""
        iv = self.intervention(coef, start_pos, end_pos)
        self.check_model(model, allow_other_model)
        with I.apply(model, [iv]):
            yield model

    def ablate(self, model: Model, start_pos: int = 0, end_pos: int | None = None, *, allow_other_model: bool = False):
        """Context manager projecting the vector's direction out of the site (see :func:`ablate_direction`)."""
        self.check_model(model, allow_other_model)
        return ablate_direction(model, self.site, self.vector, start_pos, end_pos)

    # --- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON metadata written beside the tensor."""
        return {
            "format": "interp.steering_vector",
            "version": FORMAT_VERSION,
            "model": self.model_name,
            "d_model": self.d_model,
            "site": self.site,
            "layer": self.layer,
            "method": self.method,
            "answer_pos": self.answer_pos,
            "shape": list(self.vector.shape),
            "norm": self.norm,
            "pairs": self.pairs,
            "meta": self.meta,
        }

    def save(self, stem: str | Path) -> Path:
        """Writes ``stem.safetensors`` (tensor "vector") and ``stem.json``; returns the tensor path."""
        from safetensors.torch import save_file

        stem = Path(stem)
        if stem.suffix in (".safetensors", ".json"):
            stem = stem.with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        path = stem.with_name(stem.name + ".safetensors")
        save_file(
            {"vector": self.vector.contiguous()}, str(path), metadata={"site": self.site, "model": self.model_name}
        )
        stem.with_name(stem.name + ".json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, stem: str | Path, model: Model | None = None, *, allow_other_model: bool = False) -> SteeringVector:
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
        except (json.JSONDecodeError, SafetensorError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read the vector at {stem}: {e}") from None
        if meta.get("format") != "interp.steering_vector" or "vector" not in tensors:
            raise InputError(f"{meta_path} is not a steering vector file")
        vec = tensors["vector"]
        if list(vec.shape) != meta["shape"]:
            raise InputError(f"{tensor_path} holds shape {list(vec.shape)} but {meta_path} says {meta['shape']}")
        out = cls(
            vec,
            meta["site"],
            meta["model"],
            int(meta["d_model"]),
            meta["method"],
            meta.get("answer_pos"),
            meta.get("pairs"),
            meta.get("meta") or {},
        )
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
        raise InputError("the principal direction needs at least 2 pairs")
    _, _, vh = torch.linalg.svd(diffs.double(), full_matrices=False)
    u = vh[0]
    proj = diffs.double() @ u
    if proj.mean() < 0:
        u, proj = -u, -proj
    return (u * proj.mean()).float()


@contextlib.contextmanager
def ablate_direction(
    model: Model, site: str, direction: torch.Tensor, start_pos: int = 0, end_pos: int | None = None
) -> Iterator[Model]:
    """Projects ``direction`` (shaped like one position of the site) out of the site's
    activation at positions ``start_pos`` on (see :func:`positions`): ``x - (x . u) u`` with
    ``u`` the unit direction, for every run inside the ``with`` block."""
    model.check_site(site)
    direction = torch.as_tensor(direction).detach().float()
    if not torch.isfinite(direction).all() or direction.norm() == 0:
        raise InputError("the direction to ablate must be finite and non-zero")
    with I.apply(model, [I.project_out(site, direction, positions=positions(start_pos, end_pos))]):
        yield model
