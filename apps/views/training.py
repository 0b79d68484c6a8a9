"""Training page: a checkpoint series over training (the zoo's induction-phase, or a folder that
``interp train NAME --checkpoints N`` wrote): the induction phase change in one figure (the loss on
the repeated copy, the prefix matching of the detected induction heads, the in-context-learning
score), a step slider that marks the chosen checkpoint, and the attention of the detected heads
at that step."""

import streamlit as st

from apps import state
from apps.state import training
from interp import dynamics
from interp.plots.attention import attention_pattern
from interp.plots.dynamics import phase_figure

st.title("Training dynamics")
st.markdown(
    "A model saved at log-spaced steps while it trained.  For each checkpoint: the loss on the first and "
    "the repeated copy of `[BOS] r r` (r: 16 random tokens), the **prefix-matching** score of the induction "
    "heads (detected on the last checkpoint: prefix matching > 0.3) and the best earlier-layer "
    "**previous-token** score, and the **in-context-learning score** (loss late in the context minus early).  "
    "Olsson et al. 2022: the three change together, in a phase change; dotted lines mark where each curve "
    "crosses the midpoint between its first and last values."
)
shipped = dynamics.shipped_series()
options = shipped + ["a folder of my own"]
choice = st.selectbox("Checkpoint series", options, key="training_series")
if choice == options[-1]:
    source = st.text_input(
        "Folder of step-*.safetensors checkpoints (interp train NAME --checkpoints N writes <out>-checkpoints/)",
        "",
        key="training_folder",
    )
    if not source:
        st.stop()
else:
    source = choice

with state.friendly("checkpoint series"):
    curves, heads, changes, steps = training.phase(source)
step = st.select_slider("Training step", options=steps, value=steps[len(steps) // 2], key="training_step")
names = ", ".join(f"L{l}H{h}" for l, h in heads)
cols = st.columns(4)
cols[0].metric("checkpoints", len(steps))
for col, m, label in zip(
    cols[1:], ("repeat_loss", "prefix_matching", "icl_score"), ("loss drop", "prefix-matching jump", "ICL drop")
):
    col.metric(f"{label} at step", f"{changes[m]:.0f}")
st.plotly_chart(
    phase_figure(
        curves,
        step=step,
        change_steps={m: changes[m] for m in ("repeat_loss", "prefix_matching", "icl_score")},
        title=f"{source}: the phase change (step {step} marked)",
    ),
    key="training_phase",
)
at = curves[curves["step"] == step].groupby("measure")["value"].mean()
st.caption(
    f"At step {step}: loss on the repeated copy {at['repeat_loss']:.2f} nats, on the first {at['first_loss']:.2f}; "
    f"prefix matching of {names} {at['prefix_matching']:.2f}; ICL score {at['icl_score']:.2f} nats."
)

st.subheader(f"Attention of the detected induction heads at step {step}")
with state.friendly("attention"):
    pats, toks = training.patterns(source, step, tuple(heads))
cols = st.columns(min(len(heads), 2))
for i, (l, h) in enumerate(heads):
    fig = attention_pattern(pats[(l, h)], toks, title=f"L{l}H{h} at step {step}")
    fig.update_layout(width=None, height=520)
    cols[i % len(cols)].plotly_chart(fig, key=f"training_attn_{l}_{h}")
