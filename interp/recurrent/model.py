"""The recurrent / state-space language model with TransformerLens hook points."""

from __future__ import annotations

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

from interp.recurrent.config import RecurrentConfig
from interp.recurrent.rnn import GRUBlock, LSTMBlock
from interp.recurrent.ssm import SSMBlock
from interp.recurrent.steps import _set_step

#: Kinds reported by :meth:`HookedRecurrent.site_names`.
SITE_KINDS = {
    "embed": "token embedding",
    "resid": "residual stream / block input or output",
    "hidden": "hidden output of the cell (LSTM/GRU h_t, carried across steps; SSM y_t, read from the state)",
    "state": "carried recurrent memory that is not the output (LSTM cell c_t, SSM state h_t)",
    "gate": "gate values (LSTM/GRU gates and candidates, SSM step size delta and output gate silu(z))",
    "input": "input-dependent projections of the SSM (u, B, C)",
    "out": "block mixer output before the residual add",
}


_BLOCKS: dict[str, type[LSTMBlock] | type[GRUBlock] | type[SSMBlock]] = {
    "lstm": LSTMBlock,
    "gru": GRUBlock,
    "ssm": SSMBlock,
}
_KIND = {
    "hook_resid_pre": "resid",
    "hook_resid_post": "resid",
    "hook_hidden": "hidden",
    "hook_cell": "state",
    "hook_state": "state",
    "hook_input_gate": "gate",
    "hook_forget_gate": "gate",
    "hook_output_gate": "gate",
    "hook_cell_candidate": "gate",
    "hook_reset_gate": "gate",
    "hook_update_gate": "gate",
    "hook_candidate": "gate",
    "hook_delta": "gate",
    "hook_gate": "gate",
    "hook_u": "input",
    "hook_B": "input",
    "hook_C": "input",
    "hook_mixer_out": "out",
}


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------
class HookedRecurrent(HookedRootModule):
    """An LSTM / GRU / selective-SSM language model with TransformerLens hook points.

    ``forward(tokens [batch, pos] int64) -> logits [batch, pos, d_vocab]`` (float32, causal:
    logits at position t depend on tokens 0..t only).

    Sites (for layer l; shapes in the module docstring): ``hook_embed``;
    ``blocks.{l}.hook_resid_pre``; the cell's sites (LSTM: ``hook_input_gate``,
    ``hook_forget_gate``, ``hook_cell_candidate``, ``hook_output_gate``, ``hook_cell``,
    ``hook_hidden``; GRU: ``hook_reset_gate``, ``hook_update_gate``, ``hook_candidate``,
    ``hook_hidden``; SSM: ``hook_u``, ``hook_delta``, ``hook_B``, ``hook_C``, ``hook_state``,
    ``hook_hidden``, ``hook_gate``, ``hook_mixer_out``); ``blocks.{l}.hook_resid_post``.
    :attr:`recurrent_sites` lists the per-step sites (called once per time step with a
    full-length tensor; see the module docstring); :meth:`site_names` gives every site's kind.
    """

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        if isinstance(cfg, dict):
            cfg = RecurrentConfig.from_dict(cfg)
        self.cfg = cfg
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(cfg.seed)
        try:
            self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
            self.hook_embed = HookPoint()
            block = _BLOCKS[cfg.cell]
            blocks = [block(cfg) for _ in range(cfg.n_layers)]
            self.blocks = nn.ModuleList(blocks)
            self.ln_final = nn.RMSNorm(cfg.d_model, eps=1e-5) if cfg.family == "ssm" else nn.LayerNorm(cfg.d_model)
            self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab)
        finally:
            torch.random.set_rng_state(gen_state)
        self.recurrent_sites: tuple[str, ...] = tuple(
            f"blocks.{l}.{n}" for l, b in enumerate(blocks) for n in b.step_sites
        )
        self.setup()
        for hp in self.hook_dict.values():
            _set_step(hp, None)  # the current step while a per-step site runs its hooks

    @property
    def family(self) -> str:
        return self.cfg.family

    def site_names(self) -> dict[str, str]:
        """Every hook site in call order -> its kind (see ``SITE_KINDS``)."""
        out = {"hook_embed": "embed"}
        for name in self.hook_dict:
            if name.startswith("blocks."):
                out[name] = _KIND[name.rsplit(".", 1)[1]]
        return out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim == 1:
            tokens = tokens[None]
        x = self.hook_embed(self.embed(tokens))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))
