"""The tuned lens (Belrose et al. 2023): one affine translator per layer, trained so the
translated residual read through the final norm and unembedding matches the model's final
distribution (KL); saved as safetensors + a JSON card beside the model's cache."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.lens.logit import residual_sites, residuals
from interp.model import Model, Tokens
from interp.weights import readout


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
            raise InputError(
                f"this tuned lens was trained for d_model={self.d_model} ({self.model_name!r}); "
                f"{model.cfg.name or 'this model'} has d_model={model.cfg.d_model}"
            )
        if model.cfg.name != self.model_name:
            raise InputError(f"this tuned lens was trained for {self.model_name!r}, not {model.cfg.name!r}")
        if self.A.shape[0] != len(residual_sites(model, self.stage)):
            raise InputError(
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
                raise InputError("give the lens's path or the model it belongs to")
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
            raise InputError(f"cannot read the tuned lens at {stem}: {str(e).splitlines()[0]}") from None
        if card.get("format") != "interp.tuned_lens" or not {"A", "b"} <= set(t):
            raise InputError(f"{card_path} is not a tuned lens")
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
        raise InputError(f"steps must be an int >= 0, got {steps!r}")
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
