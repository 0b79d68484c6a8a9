"""Recurrent (LSTM, GRU) and selective state-space (Mamba-style) models, unrolled for hooks.

(The recurrent families of ``transformers`` — Mamba, Mamba-2, RWKV, RecurrentGemma, xLSTM and
hybrids' Mamba layers — are loaded with :func:`interp.load` and get their state and mixer
sites from :mod:`interp.recurrent.hf`; their state sites keep this module's per-step contract,
with the state after token t read from step t + 1 on.)

Pure torch (CPU, no custom kernels).  Every model is a TransformerLens
``HookedRootModule``, so ``run_with_hooks``, ``run_with_cache``, ``hooks()`` and
``add_hook`` work as they do on a transformer, with the same hook-function convention
``fn(activation, hook) -> replacement or None``.

Architecture of :class:`HookedRecurrent` (``cfg.family`` "rnn" for lstm/gru, "ssm" for ssm)::

    tokens [batch, pos] -> embed -> hook_embed
      -> blocks.0 ... blocks.{n_layers-1}   (each: hook_resid_pre ... hook_resid_post)
      -> ln_final (LayerNorm for rnn, RMSNorm for ssm) -> unembed -> logits [batch, pos, d_vocab]

An rnn block runs the cell over the block input; its output (``hook_resid_post``) is the
hidden sequence, plus the block input when ``cfg.residual`` is true.  An ssm block is
pre-norm residual: ``resid_post = resid_pre + out_proj(y * silu(z))`` with ``y`` read from a
selective diagonal state ``h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t``,
``y_t = C_t . h_t + D * u_t``.

Two kinds of hook sites
-----------------------
*Whole-sequence sites* (embeddings, residual stream, the ssm's input-dependent ``delta``,
``B``, ``C``, ``u``, ``gate``, ``hidden`` = y, ``mixer_out``) are called once per forward
with the whole ``[batch, pos, ...]`` tensor, exactly as in a transformer.

*Per-step sites* (:attr:`HookedRecurrent.recurrent_sites`: every LSTM/GRU gate, cell and
hidden state, and the ssm state ``hook_state``) feed the recurrence, so an edit at step t
must reach every later step and no earlier one.  Such a HookPoint is called **once per time
step** t = 0 .. pos-1, always with a full-length ``[batch, pos, ...]`` tensor in which

- positions ``< t`` hold the already-final (post-hook) values of earlier steps,
- position ``t`` holds the freshly computed value of this step,
- positions ``> t`` are zeros;

and the recurrence continues from position ``t`` of what the hooks return (edits at other
positions are ignored).  Several hooks on one site are called in order, and each one is
handed a tensor that keeps this contract, whatever the hooks before it returned or wrote
(its position t is the previous hook's position t).  Consequences, all of which the usual
hook idioms rely on:

- ``x[:, t0] = other[:, t0]`` (in place, or on a copy that is returned) patches step t0 only;
  logits before t0 are bit-identical and everything from t0 on sees the patched state;
- ``x + v`` (steering) adds ``v[:, t]`` at every step t, and a cache hook after it sees the
  steered sequence;
- a hook that stores the tensor it is given (``run_with_cache``) ends, after the last step,
  holding the whole sequence ``[batch, pos, ...]``;
- a no-op hook leaves every output bit-identical.

While a per-step site runs its hooks, ``hook.step`` is the current step t (it is None at
whole-sequence sites and between steps).  The idioms above do not need it, but a hook that
acts at one step only (``if hook.step == t0: x[:, t0] = v``) is cheaper than one that
writes at every step (see Cost).  A hook that keeps the tensor of an earlier step must
clone it: with gradients off the same buffer is handed over at every step.

Cost.  A per-step HookPoint with no hooks attached is never called (no buffer is built),
and a block with no hooks on any of its per-step sites runs its recurrence as one autograd
Function with a hand-written backward, so training costs what a plain loop costs.  With
hooks and gradients off, one preallocated buffer is written in place and handed to the
hooks at every step (O(pos) copying overall); after a hook writes into it in place,
positions other than t are restored before the next hook sees it, O(pos) per such step
(a patch hook writing ``x[:, t0]`` at every step of the ssm state, 64 x 64 x 64 x 16,
costs ~10x a plain forward; the same hook guarded by ``hook.step == t0`` costs little).  With gradients on, a fresh
full-length tensor is assembled for every hook call (O(pos^2) copying, correct for
autograd).  Sites with backward hooks, pre-hooks or an nnsight controller are called as
modules (``hp(x)``), so their forward hooks run as one torch hook chain without the
per-hook contract.

Gradients.  Backward hooks on a per-step site fire once per step, each with a gradient
that is non-zero only at that step's position, so ``run_with_cache(incl_bwd=True)`` keeps
only one step's gradient for those sites.  Use :func:`interp.gradients.site_gradients`, which adds a zero
tensor at each requested site and returns d(metric)/d(site) for every position at once
(for per-step sites: the total derivative through all later steps).

Units and shapes (B = batch, T = pos, d = d_model, E = d_inner = expand * d_model, N = d_state):
LSTM/GRU gates, cell and hidden: ``[B, T, d]`` (gates are post-nonlinearity, in (0, 1) for
sigmoid gates and (-1, 1) for tanh candidates).  SSM: ``hook_state [B, T, E, N]``;
``hook_u, hook_delta, hook_hidden, hook_gate [B, T, E]``; ``hook_B, hook_C [B, T, N]``;
``delta`` is a step size (> 0, softplus).  Residual sites ``[B, T, d]``.  The state is zero
before step 0.  ``pos_slice`` in ``run_with_cache`` slices dimension -2, which for the
4-d ``hook_state`` is d_inner, not pos: slice ``hook_state`` yourself.
"""

from interp.recurrent.config import CELLS, RecurrentConfig
from interp.recurrent.model import SITE_KINDS, HookedRecurrent

__all__ = ["CELLS", "RecurrentConfig", "HookedRecurrent", "SITE_KINDS"]
