"""The one source of hook-site names: a site *kind* (``z``, ``resid_pre``, ``hidden``, ...)
and a layer give the hook name every analysis uses.

Names follow TransformerLens's bridge (``blocks.{l}.attn.hook_z``) for transformers and the
same scheme for :mod:`interp.recurrent` models (``blocks.{l}.hook_hidden``).  Which kinds a
model has is read from its hook sites (:meth:`interp.Model.site_kinds`); ask the model for
a name with :meth:`interp.Model.site`, never by writing the string.

Recurrent families of ``transformers`` (Mamba, Mamba-2, RWKV, RecurrentGemma, xLSTM; the
Mamba layers of hybrids) add semantic sites inside the mixer and the per-step recurrent state
(:data:`STATE_KINDS`, :mod:`interp.recurrent.hf`); a hybrid has them in its recurrent layers only.

Layouts: ``vector`` sites are ``[batch, pos, ...]``; ``head`` sites ``[batch, pos, head,
d_head]`` (``k`` / ``v`` of a grouped-query model have one entry per key-value head);
``pattern`` sites ``[batch, head, dest_pos, src_pos]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from interp.errors import InputError


@dataclass(frozen=True)
class Kind:
    """A kind of site: hook-name ``template`` (``{l}`` = layer; none for whole-model
    sites), ``layout`` and what it holds."""

    name: str
    template: str
    layout: str
    description: str

    @property
    def per_layer(self) -> bool:
        return "{l}" in self.template

    def hook(self, layer: int | None = None) -> str:
        if self.per_layer:
            if layer is None:
                raise InputError(f"site kind {self.name!r} is per layer: give a layer")
            return self.template.format(l=int(layer))
        return self.template


_TABLE = [
    ("embed", "hook_embed", "vector", "token embedding"),
    ("pos_embed", "hook_pos_embed", "vector", "learned positional embedding"),
    ("resid_pre", "blocks.{l}.hook_resid_pre", "vector", "residual stream entering block l"),
    (
        "resid_mid",
        "blocks.{l}.hook_resid_mid",
        "vector",
        "residual stream between attention and MLP (on a bridge this hook feeds the MLP only)",
    ),
    ("resid_post", "blocks.{l}.hook_resid_post", "vector", "residual stream leaving block l"),
    ("attn_out", "blocks.{l}.hook_attn_out", "vector", "attention output (all heads, with bias)"),
    ("mlp_in", "blocks.{l}.ln2.hook_in", "vector", "the MLP's copy of the residual stream"),
    ("mlp_input", "blocks.{l}.mlp.hook_in", "vector", "the MLP's input (after its norm, if it has one)"),
    ("mlp_out", "blocks.{l}.hook_mlp_out", "vector", "MLP output"),
    ("q", "blocks.{l}.attn.hook_q", "head", "per-head queries (before rotary embedding)"),
    ("k", "blocks.{l}.attn.hook_k", "head", "per-key-value-head keys (before rotary embedding)"),
    ("v", "blocks.{l}.attn.hook_v", "head", "per-key-value-head values"),
    ("z", "blocks.{l}.attn.hook_z", "head", "per-head attention output before W_O (a head's output)"),
    ("pattern", "blocks.{l}.attn.hook_pattern", "pattern", "attention probabilities [head, dest, src]"),
    ("scores", "blocks.{l}.attn.hook_attn_scores", "pattern", "attention scores before the softmax"),
    ("rot_q", "blocks.{l}.attn.hook_rot_q", "head", "per-head queries after the rotary embedding"),
    ("rot_k", "blocks.{l}.attn.hook_rot_k", "head", "per-key-value-head keys after the rotary embedding"),
    ("rot_cos", "blocks.{l}.attn.hook_cos", "vector", "the rotary embedding's cosines [1, pos, d_head]"),
    ("rot_sin", "blocks.{l}.attn.hook_sin", "vector", "the rotary embedding's sines [1, pos, d_head]"),
    ("ln1_scale", "blocks.{l}.ln1.hook_scale", "vector", "the attention norm's scale (1/rms or 1/std)"),
    ("ln2_scale", "blocks.{l}.ln2.hook_scale", "vector", "the MLP norm's scale"),
    ("final_resid", "ln_final.hook_in", "vector", "the residual stream entering the final norm"),
    ("final_scale", "ln_final.hook_scale", "vector", "the final norm's scale"),
    ("unembed_in", "unembed.hook_in", "vector", "the normalised residual entering the unembedding"),
    ("hidden", "blocks.{l}.hook_hidden", "vector", "recurrent hidden state per time step (SSM: y)"),
    ("cell", "blocks.{l}.hook_cell", "vector", "LSTM cell state per time step"),
    ("state", "blocks.{l}.hook_state", "vector", "SSM state per time step [d_inner, d_state]"),
    ("input_gate", "blocks.{l}.hook_input_gate", "vector", "LSTM input gate"),
    ("forget_gate", "blocks.{l}.hook_forget_gate", "vector", "LSTM forget gate"),
    ("output_gate", "blocks.{l}.hook_output_gate", "vector", "LSTM output gate"),
    ("cell_candidate", "blocks.{l}.hook_cell_candidate", "vector", "LSTM cell candidate"),
    ("reset_gate", "blocks.{l}.hook_reset_gate", "vector", "GRU reset gate"),
    ("update_gate", "blocks.{l}.hook_update_gate", "vector", "GRU update gate"),
    ("candidate", "blocks.{l}.hook_candidate", "vector", "GRU candidate"),
    ("delta", "blocks.{l}.hook_delta", "vector", "SSM step size"),
    ("gate", "blocks.{l}.hook_gate", "vector", "SSM output gate silu(z)"),
    ("mixer_out", "blocks.{l}.hook_mixer_out", "vector", "SSM mixer output before the residual add"),
    # Hugging Face recurrent families (interp.recurrent.hf): semantic sites inside the mixer
    ("mixer_in", "blocks.{l}.hook_mixer_in", "vector", "the mixer's input (the block's normed residual stream)"),
    ("conv_in", "blocks.{l}.hook_conv_in", "vector", "the causal convolution's input"),
    ("conv", "blocks.{l}.hook_conv", "vector", "the causal convolution's output, after its activation"),
    ("gate_pre", "blocks.{l}.hook_gate_pre", "vector", "the output gate before its activation (Mamba z)"),
    ("input_gate_pre", "blocks.{l}.hook_input_gate_pre", "vector", "xLSTM input gate before its activation"),
    ("forget_gate_pre", "blocks.{l}.hook_forget_gate_pre", "vector", "xLSTM forget gate before its activation"),
    ("dt", "blocks.{l}.hook_dt", "vector", "Mamba time step before its bias and softplus (Mamba-1: rank-R input)"),
    ("B", "blocks.{l}.hook_B", "vector", "SSM input projection B_t [d_state]"),
    ("C", "blocks.{l}.hook_C", "vector", "SSM output projection C_t [d_state]"),
    ("lru_out", "blocks.{l}.hook_lru_out", "vector", "RG-LRU output h_t as step t reads it (not carried)"),
    ("out_proj_in", "blocks.{l}.hook_out_proj_in", "vector", "the gated mixer output entering its output projection"),
    # per-step recurrent state after token t (read from step t + 1 on): see STATE_KINDS
    ("ssm_state", "blocks.{l}.hook_ssm_state", "vector", "Mamba SSM state after token t [d_inner, d_state]"),
    ("conv_state", "blocks.{l}.hook_conv_state", "vector", "convolution window after token t [channels, width]"),
    ("wkv_state", "blocks.{l}.hook_wkv_state", "vector", "RWKV WKV state after token t [num, den, max; d]"),
    ("shift_state", "blocks.{l}.hook_shift_state", "vector", "RWKV token-shift state after token t [2, d]"),
    ("lru_state", "blocks.{l}.hook_lru_state", "vector", "RG-LRU state h after token t [lru_width]"),
    ("mlstm_cell", "blocks.{l}.hook_mlstm_cell", "vector", "xLSTM matrix memory C after token t [H, dk, dv]"),
    ("mlstm_norm", "blocks.{l}.hook_mlstm_norm", "vector", "xLSTM normaliser n after token t [H, dk]"),
    ("mlstm_max", "blocks.{l}.hook_mlstm_max", "vector", "xLSTM stabiliser m after token t [H, 1]"),
]
KINDS: dict[str, Kind] = {name: Kind(name, tpl, layout, desc) for name, tpl, layout, desc in _TABLE}
ALIASES = {"head_out": "z", "head": "z", "attn_head": "z", "result": "z", "resid": "resid_pre"}

#: Recurrent state of the Hugging Face recurrent families, one semantics for all of them: the
#: value at position t is the state of the layer **after token t**, which the model carries into
#: step t + 1; step t's own output does not read it, so a patch at t changes positions > t only
#: (as if decoding resumed from the patched state).  Reading or writing one runs the model one
#: token per forward (:class:`interp.backends.HFBackend`).  The toy models' ``state`` differs
#: (their y_t reads the patched h_t, so a patch there changes step t too).
STATE_KINDS = (
    "ssm_state",
    "conv_state",
    "wkv_state",
    "shift_state",
    "lru_state",
    "mlstm_cell",
    "mlstm_norm",
    "mlstm_max",
)


def kind(name: str) -> Kind:
    """The :class:`Kind` of a short name or alias; raises listing the known kinds."""
    name = ALIASES.get(name, name)
    if name not in KINDS:
        import difflib

        near = difflib.get_close_matches(name, list(KINDS) + list(ALIASES), n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise InputError(f"unknown site kind {name!r}{hint}; kinds: {', '.join(sorted(KINDS))}")
    return KINDS[name]


def layer_of(site: str) -> int | None:
    """The layer index of a ``blocks.{l}.…`` hook name, else None."""
    parts = site.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None
