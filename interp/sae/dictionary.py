"""The sparse dictionary itself: a sparse autoencoder (read a site, reconstruct it) or a
transcoder (read one site, predict another, e.g. MLP in -> MLP out), with one of four
activation rules:

- ``topk`` (Gao et al. 2024): keep each token's k largest pre-activations (after a ReLU);
- ``batchtopk`` (Bussmann et al. 2024): keep the ``k * batch`` largest over a training batch;
  at inference a learned threshold (the running mean of the smallest kept value) acts like
  JumpReLU, so a token's L0 is ~k on average;
- ``jumprelu`` (Rajamanoharan et al. 2024): ``pre * (pre > threshold)``, a threshold per
  latent trained with a straight-through estimator and an L0 penalty;
- ``relu``: the standard ReLU dictionary trained with an L1 penalty (Bricken et al. 2023).

Shapes and units: ``W_enc [d_in, width]``, ``b_enc [width]``, ``W_dec [width, d_out]``,
``b_dec [d_out]``, ``threshold [width]``.  Inputs are scaled by ``scale`` (input
normalisation: a power of two chosen so that the mean input norm is about ``sqrt(d_in)``,
Anthropic's April 2024 recipe; a power of two so that folding it into the weights, as the
SAELens format needs, is exact).  So, with ``x`` in the site's own units::

    pre   = (scale * x - b_dec) @ W_enc + b_enc      (sparse autoencoders; transcoders omit b_dec)
    f     = rule(pre)                                 [.., width], latent activations
    x_hat = (f @ W_dec + b_dec) / out_scale           [.., d_out], in the site's units

(``out_scale`` = ``scale`` for an autoencoder; a transcoder's output is normalised apart.)

The decoder rows are kept at unit norm while training, so a latent's activation is its
contribution's length in normalised units.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from interp.errors import InputError

KINDS = ("topk", "batchtopk", "jumprelu", "relu")
FORMAT = "interp.sae"
VERSION = 1


@dataclass(frozen=True)
class DictConfig:
    """What a dictionary is and where it belongs.

    kind: one of :data:`KINDS`; d_in / d_out: input / output widths (equal for an SAE);
    width: number of latents; k: active latents per token (topk / batchtopk; the L0 target,
    for the others only recorded); site / out_site: hook names read and reconstructed
    (``out_site`` None = ``site``: an autoencoder); model_name: the model it was trained on;
    scale / out_scale: input / output normalisation factors (powers of two; equal for an
    autoencoder, the transcoder's output gets its own); skip_bos: position 0 was left out of
    training (and is left alone when the dictionary is spliced into a forward)."""

    kind: str
    d_in: int
    width: int
    k: int | None = None
    d_out: int | None = None
    site: str = ""
    out_site: str | None = None
    model_name: str = ""
    scale: float = 1.0
    skip_bos: bool = True
    out_scale: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"dictionary kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("d_in", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive int, got {value!r}")
        if self.d_out is None:
            object.__setattr__(self, "d_out", self.d_in)
        if self.kind in ("topk", "batchtopk"):
            if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= self.width:
                raise InputError(
                    f"k must be an int in 1..width ({self.width}) for a {self.kind} dictionary, got {self.k!r}"
                )
        if self.out_scale is None:
            object.__setattr__(self, "out_scale", self.scale)
        for name in ("scale", "out_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a positive number, got {value!r}")

    @property
    def transcoder(self) -> bool:
        return self.out_site is not None and self.out_site != self.site

    @property
    def target_site(self) -> str:
        """The site the dictionary reconstructs (``out_site`` for a transcoder)."""
        return self.out_site if self.transcoder else self.site  # type: ignore[return-value]


def files(stem: str | Path) -> tuple[Path, Path]:
    """``(stem.safetensors, stem.json)`` of a dictionary's stem (given with or without either
    suffix; other dots in the name are kept)."""
    stem = Path(stem).expanduser()
    name = stem.name
    for suffix in (".safetensors", ".json"):
        name = name.removesuffix(suffix)
    return stem.parent / f"{name}.safetensors", stem.parent / f"{name}.json"


def power_of_two_scale(mean_norm: float, d_in: int) -> float:
    """The power of two closest (in log) to ``sqrt(d_in) / mean_norm``: the input
    normalisation factor, exact to fold into weights."""
    if not mean_norm > 0:
        return 1.0
    return float(2.0 ** round(math.log2(math.sqrt(d_in) / mean_norm)))


class Dictionary(nn.Module):
    """A sparse autoencoder or transcoder (see the module docstring).  ``card`` holds how it
    was trained and what it scored."""

    def __init__(self, cfg: DictConfig, card: dict | None = None):
        super().__init__()
        self.cfg = cfg
        self.card: dict = dict(card or {})
        w, d_in, d_out = cfg.width, cfg.d_in, cfg.d_out or cfg.d_in
        self.W_enc = nn.Parameter(torch.zeros(d_in, w))
        self.b_enc = nn.Parameter(torch.zeros(w))
        self.W_dec = nn.Parameter(torch.zeros(w, d_out))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        # JumpReLU / BatchTopK inference threshold (log-parametrised while training JumpReLU)
        self.threshold = nn.Parameter(torch.zeros(w), requires_grad=False)

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def init(cls, cfg: DictConfig, *, seed: int = 0, b_dec: torch.Tensor | None = None) -> Dictionary:
        """Random unit-norm decoder rows, encoder = decoder transposed (Gao et al.'s
        initialisation; for a transcoder the encoder is drawn on its own), zero encoder bias,
        ``b_dec`` = the data mean if given (normalised units)."""
        g = torch.Generator().manual_seed(int(seed))
        d = cls(cfg)
        with torch.no_grad():
            W = torch.randn(cfg.width, d.W_dec.shape[1], generator=g)
            d.W_dec.copy_(W / W.norm(dim=1, keepdim=True))
            if cfg.transcoder:
                E = torch.randn(cfg.d_in, cfg.width, generator=g)
                d.W_enc.copy_(E / E.norm(dim=0, keepdim=True))
            else:
                d.W_enc.copy_(d.W_dec.T)
            if b_dec is not None:
                d.b_dec.copy_(b_dec.reshape(-1))
            if cfg.kind == "jumprelu":
                d.threshold.fill_(0.0)
        return d

    @property
    def width(self) -> int:
        return self.cfg.width

    @property
    def out_scale(self) -> float:
        return float(self.cfg.out_scale or self.cfg.scale)

    def __repr__(self) -> str:
        c = self.cfg
        what = f"{c.site} -> {c.out_site}" if c.transcoder else c.site
        k = f", k={c.k}" if c.k else ""
        return f"Dictionary({c.kind}, width={c.width}{k}, d_in={c.d_in}, {what!r}, model={c.model_name!r})"

    # --- maths ----------------------------------------------------------------------------
    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[.., width]`` of inputs ``x [.., d_in]`` (site units)."""
        x = x.to(self.W_enc.dtype) * self.cfg.scale
        if not self.cfg.transcoder:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The inference rule on pre-activations (batchtopk: its learned threshold)."""
        kind = self.cfg.kind
        if kind == "topk":
            vals, idx = pre.topk(int(self.cfg.k or 1), dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        if kind in ("jumprelu", "batchtopk"):
            return pre.relu() * (pre > self.threshold)
        return pre.relu()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations ``[.., width]`` of ``x [.., d_in]``."""
        return self.activate(self.pre(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[.., d_out]`` in the site's units from latents ``f [.., width]``."""
        return (f @ self.W_dec + self.b_dec) / self.out_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def direction(self, latent: int) -> torch.Tensor:
        """Latent ``latent``'s decoder row in the site's units ``[d_out]`` (what one unit of
        activation adds to the reconstruction)."""
        return self.W_dec[self.check_latent(latent)].detach() / self.out_scale

    def check_latent(self, latent) -> int:
        if isinstance(latent, bool) or not isinstance(latent, int):
            try:
                if isinstance(latent, bool) or int(latent) != latent:
                    raise TypeError
                latent = int(latent)
            except (TypeError, ValueError):
                raise InputError(f"a latent must be an int, got {latent!r}") from None
        if not 0 <= latent < self.width:
            raise InputError(f"latent {latent} is out of range: this dictionary has latents 0..{self.width - 1}")
        return latent

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Decoder rows back to unit norm (after an optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8))

    # --- fitting a model ----------------------------------------------------------------------
    def check(self, model) -> None:
        """Raises (one line) unless ``model`` has this dictionary's sites with matching widths."""
        c = self.cfg
        for name, width in ((c.site, c.d_in), (c.target_site, c.d_out)):
            if not model.has_site(name):
                model.check_site(name)  # raises with close matches
            shape = model.hook_names().set_index("name").loc[name, "shape"]
            last = shape.strip("[]").split(", ")[-1]
            if last != str(width) or not shape.startswith("[batch, pos"):
                raise InputError(
                    f"this dictionary reads {width} features at {name}, but {model.cfg.name or 'the model'} has "
                    f"shape {shape} there (d_in / d_out mismatch: it was made for {c.model_name or 'another model'})"
                )

    # --- files ------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {n: p.detach().contiguous().cpu() for n, p in self.named_parameters()}
        return out

    def save(self, stem: str | Path) -> Path:
        """Writes ``stem.safetensors`` (weights) and ``stem.json`` (config + card)."""
        from safetensors.torch import save_file

        from interp.checkpoint import _atomic_write

        weights, card_path = files(stem)
        card = {"format": FORMAT, "version": VERSION, "config": asdict(self.cfg), "card": self.card}
        _atomic_write(weights, lambda tmp: save_file(self.tensors(), tmp))
        _atomic_write(card_path, lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))
        return weights

    @classmethod
    def load(cls, stem: str | Path, model=None) -> Dictionary:
        """Reads :meth:`save`'s files (safetensors only); with ``model``, checks that it fits."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        tensors_path, card_path = files(stem)
        for p in (tensors_path, card_path):
            if not p.is_file():
                raise FileNotFoundError(f"no dictionary at {p} (train one: interp.sae.train)")
        try:
            meta = json.loads(card_path.read_text())
            t = load_file(str(tensors_path))
        except (json.JSONDecodeError, SafetensorError, OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read the dictionary at {tensors_path}: {str(e).splitlines()[0]}") from None
        if meta.get("format") != FORMAT or "config" not in meta:
            raise InputError(f"{card_path} is not an interp dictionary card")
        d = cls.from_tensors(DictConfig(**meta["config"]), t, meta.get("card", {}))
        if model is not None:
            d.check(model)
        return d

    @classmethod
    def from_tensors(cls, cfg: DictConfig, t: dict[str, torch.Tensor], card: dict | None = None) -> Dictionary:
        d = cls(cfg, card)
        want = {n: tuple(p.shape) for n, p in d.named_parameters()}
        for name, shape in want.items():
            if name == "threshold" and name not in t:
                continue
            if name not in t:
                raise InputError(f"the dictionary's weights lack {name!r} (have {sorted(t)})")
            if tuple(t[name].shape) != shape:
                raise InputError(f"{name} has shape {tuple(t[name].shape)}, expected {shape} for {cfg}")
        with torch.no_grad():
            for name, p in d.named_parameters():
                if name in t:
                    p.copy_(t[name].float())
        return d

    def with_config(self, **changes) -> Dictionary:
        """A copy with config fields changed (weights shared by value)."""
        return Dictionary.from_tensors(replace(self.cfg, **changes), self.tensors(), self.card)
