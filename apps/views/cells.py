"""Cells page: an LSTM's cells read on held-out Python source (Karpathy et al. 2015): the cells
found automatically that track being inside a string, bracket depth, indentation and the position in
the line (correlation over held-out text), the gate saturation per layer, and the text coloured by
a chosen cell's activation tanh(c) (red -1, blue +1)."""

import streamlit as st

from apps import state
from apps.state import training
from interp.plots.cells import colored_text, saturation_figure
from interp.recurrent import cells as C
from interp.tasks.text import code

st.title("LSTM cells")
model = state.current_model()
source = state.current_source()
lstm = all(k in model.site_kinds() for k in (*C.GATES, "cell"))
if not lstm or model.vocabulary() != list(code.CHARS):
    why = (
        "has no LSTM gates and cell states: this page reads an LSTM"
        if not lstm
        else "is an LSTM of another vocabulary: this page reads Python source character by character"
    )
    st.info(
        f"{model.cfg.name or source} {why}. "
        "The zoo's character-level code-lstm (trained on Python's own library sources) is one."
    )
    if st.button("Use code-lstm", key="cells_use"):
        with state.friendly("code-lstm"):
            state.set_source("code-lstm")
        st.rerun()
    st.stop()
st.markdown(
    "Each cell's activation is tanh of its cell state.  Held-out text: CPython's `textwrap.py` and "
    "`shlex.py` (8 windows of 383 characters, the first 64 of each left out); features from Python's "
    "tokenizer.  A cell **tracks** a feature when its activation correlates with it."
)
with state.friendly("cells"):
    found = training.cells(source)
frame = found["frame"]
best = C.best_cells(frame)
st.subheader("Cells found automatically")
st.dataframe(best.round(3), hide_index=True)
with st.expander("Every cell's correlation"):
    st.dataframe(frame.round(3), hide_index=True, width="stretch")

st.subheader("Coloured text")
labels = [f"{r.feature}: L{r.layer} cell {r.cell} (r = {r.correlation:+.2f})" for r in best.itertuples()]
cols = st.columns([3, 1, 1])
pick = cols[0].selectbox("Cell", labels + ["another cell"], key="cells_pick")
if pick == "another cell":
    layer = cols[1].number_input("layer", 0, model.cfg.n_layers - 1, 0, key="cells_layer")
    cell = cols[2].number_input("cell", 0, model.cfg.d_model - 1, 0, key="cells_cell")
else:
    row = best.iloc[labels.index(pick)]
    layer, cell = int(row["layer"]), int(row["cell"])
own = st.text_area("Text (empty: the held-out window)", "", key="cells_text", height=100)
if own:
    with state.friendly("text"):
        chars, acts = training.own_text_cells(source, own)
else:
    chars, acts = list(found["text"]), found["acts"]
st.html(colored_text(chars, acts[int(layer)][:, int(cell)], title=f"L{layer} cell {cell}"))

st.subheader("Gate saturation")
summary = C.saturation_summary(found["saturation"])
st.dataframe(summary.round(3), hide_index=True)
st.plotly_chart(saturation_figure(found["saturation"]), key="cells_saturation")
