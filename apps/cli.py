"""The ``interp`` command line: thin commands over the library (no maths here).

Every command validates its input and prints a clear message (exit code 2) instead of a
traceback when the input is wrong.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import typer

app = typer.Typer(help="Mechanistic-interpretability workbench: models, heads, patching, circuits, steering.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def friendly(fn: Callable) -> Callable:
    """Turns input errors (ValueError, FileNotFoundError, TypeError) into a one-line message, exit 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, TypeError, RuntimeError) as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
    return wrapper


def load_model(source: str):
    import interp

    return interp.load(source)


@app.command()
@friendly
def zoo() -> None:
    """List the shipped models with their task, the metric on their card and training time."""
    from interp import zoo as z

    df = z.available()
    typer.echo(df.drop(columns=["description"]).to_string(index=False))


@app.command()
@friendly
def train(recipe: str = typer.Argument(..., help="Recipe name (see `interp zoo`)."),
          out: Path = typer.Option(None, help="Checkpoint stem to write (default: out/<recipe>)."),
          seed: int = typer.Option(None, help="Seed (default: the recipe's)."),
          steps: int = typer.Option(None, help="Training steps (default: the recipe's).")) -> None:
    """Train a zoo recipe from scratch; writes <out>.safetensors and <out>.json (the card)."""
    import json

    from interp.training import meets_card, train as run_training
    from interp.zoo.recipes import get_recipe

    get_recipe(recipe)  # validate before anything starts
    out = out or Path("out") / recipe
    _, card = run_training(recipe, seed=seed, steps=steps, out=out)
    typer.echo(json.dumps({k: card[k] for k in ("name", "seed", "metrics", "metric", "train_seconds")}, indent=2))
    typer.echo(f"wrote {Path(out).with_suffix('.safetensors')} and {Path(out).with_suffix('.json')}; "
               f"card metric {'met' if meets_card(card) else 'NOT met'}")


@app.command()
@friendly
def info(model: str = typer.Argument(..., help="Zoo name, checkpoint, HF directory or hub id.")) -> None:
    """Geometry and hook sites of a model."""
    m = load_model(model)
    for k, v in m.cfg.to_dict().items():
        typer.echo(f"{k:>9}: {v}")
    typer.echo("\nhook sites:")
    typer.echo(m.hook_names().to_string(index=False))


@app.command("app")
def run_app(model: str = typer.Option("induction-2l", help="Model the app opens with."),
            port: int = typer.Option(8501, help="Port to serve on."),
            headless: bool = typer.Option(True, help="Do not open a browser window.")) -> None:
    """Start the Streamlit app."""
    if not 1024 <= port <= 65535:
        typer.secho("error: port must be in [1024, 65535]", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    script = Path(__file__).with_name("app.py")
    env = {**os.environ, "INTERP_DEFAULT_MODEL": model}
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
           "--server.headless", str(headless).lower(), "--browser.gatherUsageStats", "false"]
    raise typer.Exit(subprocess.call(cmd, env=env))


@app.command("heads")
@friendly
def heads_command(model: str = typer.Argument(..., help="Zoo name, checkpoint, HF directory or hub id."),
                  kinds: list[str] = typer.Option(None, "--kinds", help="Head kinds (repeat or comma-separate); "
                                                  "default all: previous_token, duplicate_token, induction, "
                                                  "prefix_matching, sink, copying."),
                  out: Path = typer.Option(None, "--out", help="Write every head's scores to this CSV."),
                  n: int = typer.Option(8, help="Number of [BOS] r r probe sequences."),
                  length: int = typer.Option(None, help="Probe length (default min(n_ctx, 128))."),
                  seed: int = typer.Option(0, help="Seed of the random probe tokens."),
                  top: int = typer.Option(3, help="Heads shown per kind.")) -> None:
    """Score every head for the classic kinds on repeated random tokens; print the top heads."""
    from interp import heads

    m = load_model(model)
    wanted = [k.strip() for item in (kinds or []) for k in item.split(",") if k.strip()] or None
    tokens = heads.default_tokens(m, n=n, length=length, seed=seed)
    frame = heads.scores(m, tokens, wanted)
    if out is not None:
        frame.to_csv(out, index=False)
    typer.echo(f"{m.name}: {tokens.shape[0]} sequences of {tokens.shape[1]} tokens ([BOS] r r), top {top} per kind")
    typer.echo(heads.top_heads(frame, k=top).round(3).to_string(index=False))
    if out is not None:
        typer.echo(f"wrote {len(frame)} rows to {out}")


@app.command("steer")
@friendly
def steer_command(model: str = typer.Argument(..., help="Zoo name, checkpoint, HF directory or hub id."),
                  pairs: Path = typer.Option(..., "--pairs", help='JSON {"positive": [...], "negative": [...], '
                                             '"answer_pos": -1}: equally long lists of prompts in the model\'s '
                                             "token syntax (or token-id lists); pair i = positive[i], negative[i], "
                                             "same token count."),
                  layer: int = typer.Option(..., "--layer", help="Layer whose output (residual stream) is steered."),
                  coef: float = typer.Option(..., "--coef", help="Multiplier of the vector."),
                  site: str = typer.Option(None, "--site", help="Hook site instead of blocks.{layer}.hook_resid_post "
                                           "(may contain {layer}; e.g. blocks.{layer}.hook_hidden for an RNN)."),
                  method: str = typer.Option("caa", "--method", help="caa (mean difference), pca or actadd (1 pair)."),
                  start_pos: int = typer.Option(0, "--start-pos", help="First position the vector is added at."),
                  prompt: list[str] = typer.Option(None, "--prompt", help="Prompt(s) to continue (default: the first "
                                                   "5 negative prompts)."),
                  new_tokens: int = typer.Option(8, "--new-tokens", help="Tokens to generate per prompt."),
                  save: Path = typer.Option(None, "--save", help="Write the vector to <stem>.safetensors + .json.")) -> None:
    """Build a steering vector from contrast pairs and show continuations without and with it."""
    from interp import steering

    steering.check_finite(coef, "coef")
    m = load_model(model)
    contrast = steering.read_pairs(pairs, m)
    vec = steering.SteeringVector.from_pairs(m, contrast, layer=layer, site=site, method=method)
    pos, neg = contrast.tokens(m)
    typer.echo(f"{vec!r} from {len(pos)} pairs of {int(pos.lengths.min())}-{int(pos.lengths.max())} tokens")
    prompts = list(prompt) if prompt else [m.decode(r) for r in neg.rows()[:5]]
    table = steering.compare_generations(m, vec, prompts if len(prompts) > 1 else prompts[0], coef,
                                         start_pos=start_pos, max_new_tokens=new_tokens)
    typer.echo(f"coef {coef:g} from position {start_pos}:")
    typer.echo(table.round(4).to_string(index=False))
    if save is not None:
        typer.echo(f"wrote {vec.save(save)} and its .json")


@app.command("patch")
@friendly
def patch_command(model: str = typer.Argument(..., help="Zoo name, checkpoint, HF directory or hub id."),
                  clean: list[str] = typer.Option(..., "--clean", help="Clean prompt (repeat for a batch), in the "
                                                  "model's token syntax, e.g. 'w1 w2 w3'."),
                  corrupt: list[str] = typer.Option(..., "--corrupt", help="Corrupt prompt aligned with each clean "
                                                    "one (same token count)."),
                  site: str = typer.Option("z", "--site", help="resid_pre, resid_mid, resid_post, attn_out, mlp_in, "
                                           "mlp_out, z (head outputs), q, k, v, pattern; hidden / cell / state for "
                                           "RNNs and SSMs; or a template blocks.{l}.hook_..."),
                  by: str = typer.Option("layer,pos,head", "--by", help="Swept axes: layer plus any of pos, head, "
                                         "src_pos (pattern), comma-separated; head is dropped for sites without heads."),
                  metric: str = typer.Option("logit_diff", "--metric", help="logit_diff, logit, prob, logprob, "
                                             "accuracy or kl."),
                  answer: str = typer.Option(None, "--answer", help="Answer token (default: the clean run's prediction)."),
                  wrong: str = typer.Option(None, "--wrong", help="Wrong token of logit_diff (default: the corrupt "
                                            "run's prediction)."),
                  pos: int = typer.Option(-1, "--pos", help="Position the metric reads."),
                  direction: str = typer.Option("denoise", "--direction", help="denoise (clean into corrupt) or noise."),
                  window: int = typer.Option(1, "--window", help="Layers patched together (single layers are shown too)."),
                  method: str = typer.Option("exact", "--method", help="exact (activation patching) or attribution "
                                             "(gradient estimate, every cell from one backward pass)."),
                  out: Path = typer.Option(None, "--out", help="Write every cell to this .csv or .json file."),
                  top: int = typer.Option(10, "--top", help="Strongest cells printed.")) -> None:
    """Activation patching sweep: the effect of patching each (layer, position, head) on a metric."""
    from circuits import attribution, corrupt as corruption, metrics, patching, sites

    m = load_model(model)
    if len(clean) != len(corrupt):
        raise ValueError(f"{len(clean)} --clean prompts but {len(corrupt)} --corrupt ones: give one corrupt per clean")
    if method not in ("exact", "attribution"):
        raise ValueError(f"--method must be exact or attribution, got {method!r}")
    if out is not None and out.suffix not in (".csv", ".json"):
        raise ValueError(f"--out must end in .csv or .json, got {out.name}")
    clean_t, corrupt_t = m.to_tokens(list(clean)), m.to_tokens(list(corrupt))
    corruption.check_aligned(clean_t, corrupt_t)
    with_heads = sites.AXES[sites.resolve(m, site).layout]
    axes = [a for a in by.split(",") if a.strip() and (a.strip() == "layer" or a.strip() in with_heads)]
    if metric in ("logit_diff", "logit", "prob", "logprob", "accuracy") and answer is not None:
        ans = m.token_id(answer)
        if metric == "logit_diff":
            if wrong is None:
                raise ValueError("--metric logit_diff with --answer needs --wrong too")
            chosen = metrics.logit_diff(ans, m.token_id(wrong), pos=pos)
        else:
            chosen = getattr(metrics, metric)(ans, pos=pos)
    else:
        with_logits = (m(clean_t), m(corrupt_t))
        chosen = metrics.default_metric(metric, *with_logits, pos=pos)
    if method == "exact":
        df = patching.patch(m, clean_t, corrupt_t, site=site, by=axes, metric=chosen, direction=direction,
                            window=window)
    else:
        if window != 1:
            raise ValueError("--window applies to exact patching only")
        df = attribution.attribute(m, clean_t, corrupt_t, site=site, by=axes, metric=chosen, direction=direction)
    if out is not None:
        df.to_csv(out, index=False) if out.suffix == ".csv" else df.to_json(out, orient="records", indent=1)
    a = df.attrs
    typer.echo(f"{m.name}: {method} {direction} patching of {a['site']} by {','.join(a['by'])} on {len(df)} cells; "
               f"metric {a['metric']}: clean {a['clean_value']:.4f}, corrupt {a['corrupt_value']:.4f}")
    strongest = df.reindex(df["effect"].abs().sort_values(ascending=False).index).head(top)
    typer.echo(strongest.round(4).to_string(index=False))
    if out is not None:
        typer.echo(f"wrote {len(df)} rows to {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
