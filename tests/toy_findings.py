"""A finding for the tests of running findings on several models and executors: the zoo models
(which every published finding declines: they have no natural-language text) measure it in a
fraction of a second.  It registers itself when imported, as a plugin module would, so a Ray
worker that lacks it registers it by importing this module (``Finding.module``)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from interp import heads
from interp.reproduce import Finding, Outcome, Published, bootstrap, register
from interp.reproduce.finding import decide


def _experiment(model, quick: bool, progress: bool) -> Outcome:
    """The best head's induction score on ``[BOS] r r`` prompts, per prompt (a bootstrap over them)."""
    toks = heads.default_tokens(model, n=6 if quick else 12, length=24, seed=5)
    per_prompt = np.array(
        [heads.scores(model, toks[i : i + 1], kinds=["induction"]).score.max() for i in range(len(toks))]
    )
    ours = bootstrap(per_prompt, unit="prompts")
    verdict, reason = decide([("the best induction score is above 0.3", ours.low > 0.3)])
    frame = heads.scores(model, toks, kinds=["induction"])
    return Outcome(frame, go.Figure(), ours, verdict, reason, counts={"prompts": len(toks)})


FINDING = register(
    Finding(
        id="toyinduction",
        paper="Test 2099",
        citation="A finding for the tests (tests/toy_findings.py).",
        claim="Some head attends to the token after the previous copy of the current token.",
        published=Published(None, "any", "tests/toy_findings.py", "unverified"),
        metric="the best head's induction score",
        protocol="induction scores on [BOS] r r prompts, per prompt",
        rule="the 95% interval lies above 0.3",
        requires=(),
        experiment=_experiment,
        module=__name__,
    )
)
