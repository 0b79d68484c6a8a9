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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
