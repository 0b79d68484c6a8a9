"""Cached causal tracing for the Tracing page (``st.cache_data`` through
:func:`apps.state.models.cached`): the facts a model can be traced on and one trace, each one
library call (:mod:`interp.tasks.text.facts`, :func:`circuits.tracing.causal_tracing`)."""

from __future__ import annotations

import interp
from apps.state.models import cached, load_model, zoo_recipe
from interp.errors import Unsupported
from interp.runs import Result, run

#: a fact as the page keys it: (template with {} or the whole prompt, subject, object) for text
#: models, or ("#", index) for a fact of the zoo's synthetic fact world
FactKey = tuple


def fact_source(model: interp.Model) -> str:
    """Where the model's facts come from: ``"text"`` (the shipped subject / relation / object
    prompts) or ``"world"`` (a zoo model trained on the synthetic facts); raises
    :class:`~interp.errors.Unsupported` for a model that knows neither."""
    from apps.state.inputs import text_model

    if text_model(model):
        return "text"
    recipe = zoo_recipe(model)
    if recipe is not None and recipe.task == "sro_facts":
        return "world"
    raise Unsupported(
        "causal tracing needs facts the model knows: a text model (the shipped subject / relation / object prompts) "
        "or a zoo model trained on the synthetic facts (facts-2l, facts-mamba); this model has neither"
    )


@cached(show_spinner="Finding the facts the model knows ...", max_entries=8)
def known_facts(source: str) -> list[tuple[FactKey, str]]:
    """The facts ``source``'s model answers correctly: ``[(key, label)]``."""
    model = load_model(source)
    if fact_source(model) == "text":
        from interp.tasks.text import fact_set

        fs = fact_set(model)
        # the shipped facts: the prompt with its subject marked by {} again
        return [((p.replace(s, "{}", 1), s, o), f"{p} → {o}") for p, s, o in zip(fs.prompts, fs.subjects, fs.objects)]
    from circuits.tracing import world_facts

    fs = world_facts(model)
    return [(("#", i), f"{p} → {o}") for i, (p, o) in enumerate(zip(fs.prompts, fs.objects))]


def fact_set(model: interp.Model, key: FactKey):
    """The :class:`~interp.tasks.text.FactSet` of one fact key (checked: a typed fact whose
    object is several tokens or whose subject is not in the prompt is refused)."""
    if key[0] == "#":
        from circuits.tracing import world_facts

        return world_facts(model).take([int(key[1])])
    from interp.tasks.text import fact_set as facts

    return facts(model, [tuple(key)], known_only=False)


@cached(show_spinner="Tracing: restoring one clean state per layer and position ...", max_entries=32)
def trace(source: str, key: FactKey, components: tuple[str, ...], window: int, samples: int, seed: int) -> Result:
    """circuits.causal_tracing of one fact (single layers beside the window)."""
    from circuits.tracing import causal_tracing

    model = load_model(source)
    return run(
        causal_tracing,
        model,
        fact_set(model, key),
        components=list(components),
        window=window,
        samples=samples,
        seed=seed,
        progress=False,
    )
