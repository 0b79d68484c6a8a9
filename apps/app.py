"""The workbench's browser app: ``interp app`` (or ``make app``) serves it.

Each page is a small script in ``apps/views/`` that calls the library and draws the
figures it returns; ``apps/state.py`` holds the cached model and the shared widgets.
(Not ``apps/pages/``: Streamlit would treat that folder as a legacy multipage app and run
a page script directly, without this file, when its URL is opened.)
The model chosen on the Model page is the model of every page.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run apps/app.py` puts apps/ on sys.path, not the repository root: make the
# `apps` and `interp` packages importable from a plain checkout too.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from apps import state  # noqa: E402
from apps.quiet import quiet_dependencies  # noqa: E402
from apps.state import selection  # noqa: E402
from interp.errors import BUG_REPORT, USER_ERRORS  # noqa: E402

st.set_page_config(page_title="interp workbench", layout="wide")

PAGES = [
    st.Page("views/model.py", title="Model", icon=":material/memory:", default=True),
    st.Page("views/attention.py", title="Attention", icon=":material/grid_on:"),
    st.Page("views/heads.py", title="Heads", icon=":material/view_module:"),
    st.Page("views/patching.py", title="Patching", icon=":material/swap_horiz:"),
    st.Page("views/tracing.py", title="Tracing", icon=":material/my_location:"),
    st.Page("views/circuit.py", title="Circuit", icon=":material/account_tree:"),
    st.Page("views/steering.py", title="Steering", icon=":material/alt_route:"),
    st.Page("views/lens.py", title="Lens", icon=":material/visibility:"),
    st.Page("views/features.py", title="Features", icon=":material/scatter_plot:"),
    st.Page("views/papers.py", title="Papers", icon=":material/menu_book:"),
    st.Page("views/runs.py", title="Runs", icon=":material/history:"),
    st.Page("views/training.py", title="Training", icon=":material/timeline:"),
    st.Page("views/cells.py", title="Cells", icon=":material/text_format:"),
]

quiet_dependencies()
page = st.navigation(PAGES)
state.init_source()
selection.init_selection()  # ?head=L.H&token=N: the shared head / token selection
if "source_error" in st.session_state:
    st.sidebar.error(f"model in the URL refused: {st.session_state.pop('source_error')}")
try:
    loaded = state.load_model(state.current_source())
    state.sidebar_model(loaded)
    # an intervention that writes NaN / inf then fails naming its site instead of spreading silently
    loaded.check_finite = st.sidebar.toggle(
        "Check activations for NaN / inf", key="check_finite", help="every hook's result is checked (slightly slower)"
    )
except USER_ERRORS as e:  # the Model page shows the error and offers another choice
    st.sidebar.error(f"no model loaded: {e}")
except Exception as e:  # a bug: said so, with its traceback
    st.sidebar.error(f"no model loaded. {BUG_REPORT}")
    st.sidebar.exception(e)
page.run()
