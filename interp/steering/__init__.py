"""Steering: contrast pairs (:mod:`~interp.steering.pairs`), vectors built from them and
applied through the intervention primitive (:mod:`~interp.steering.vector`), and their
evaluation against a random vector and a prompting baseline (:mod:`~interp.steering.evaluate`).
"""

from interp.steering.evaluate import VECTOR_KINDS, compare_generations, prefixed, sweep
from interp.steering.pairs import PAIRS_FORMAT, read_pairs, site_activations
from interp.steering.vector import (
    DEFAULT_SITE,
    METHODS,
    SteeringVector,
    ablate_direction,
    check_finite,
    load_vector,
    positions,
    principal_direction,
    site_for,
)
from interp.tasks.contrast import ContrastPairs, check_answer_pos

__all__ = [
    "VECTOR_KINDS",
    "compare_generations",
    "prefixed",
    "sweep",
    "PAIRS_FORMAT",
    "ContrastPairs",
    "check_answer_pos",
    "read_pairs",
    "site_activations",
    "DEFAULT_SITE",
    "METHODS",
    "SteeringVector",
    "ablate_direction",
    "check_finite",
    "load_vector",
    "positions",
    "principal_direction",
    "site_for",
]
