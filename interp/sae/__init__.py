"""Sparse dictionaries (sparse autoencoders and transcoders): harvest a site's activations on
real text, train TopK / BatchTopK / JumpReLU / ReLU+L1 dictionaries, evaluate them (L0, FVU, CE
loss recovered, KL, dead / dense latents, a PCA baseline), read their features (top contexts,
histograms, promoted tokens, density) and use their latents in the core's interventions
(steering, ablation, attribution); save and load the SAELens format.

    d = interp.sae.train(model, model.site("resid_post", 15), kind="topk", k=32)
    interp.sae.evaluate(model, d)
"""

from interp.sae.dictionary import KINDS, DictConfig, Dictionary
from interp.sae.evaluate import evaluate
from interp.sae.store import ActivationStore, harvest, read_sites, write_store
from interp.sae.train import fit, load, saved, train

__all__ = [
    "KINDS",
    "ActivationStore",
    "DictConfig",
    "Dictionary",
    "evaluate",
    "fit",
    "harvest",
    "load",
    "read_sites",
    "saved",
    "train",
    "write_store",
]
