"""Features page: a sparse dictionary's latents on held-out text: density of every latent, a
search by the token they fire on, and for one latent its top-activating contexts (the token
highlighted), its activation histogram and the tokens its decoder direction promotes and
suppresses.  Dictionaries come from the cache (`interp sae train`); when none is saved for the
model, a quick preview one is trained here."""

import streamlit as st

from apps import state
from apps.state import features as F
from interp.plots.sae import activation_histogram, contexts_table, density_histogram, logit_bars

st.title("Features")
model = state.current_model()
source = state.current_source()

st.markdown(
    "A **sparse dictionary** (sparse autoencoder) rewrites a site's activation as a few active "
    "latents out of many; each latent's decoder direction is a candidate feature.  Train a full "
    "one with `interp sae train MODEL --layer L` (real text, a few minutes for smollm2-135m on 2 "
    "cores) or load one in the SAELens format with `interp.sae.load`."
)
with state.friendly("dictionaries"):
    stems = F.saved(source)
    if not stems:
        st.info(
            f"No dictionary is saved for {model.cfg.name or 'this model'}: training a quick preview one "
            f"({F.QUICK['n_tokens']} tokens, k={F.QUICK['k']}) at the middle layer."
        )
        F.quick_dictionary(source)
        stems = F.saved(source)
names = {stem.rsplit("/", 1)[-1]: stem for stem in stems}
chosen = st.selectbox("Dictionary", list(names), key="features_dictionary")
stem = names[chosen]
n_tokens = int(
    st.select_slider("Held-out tokens scanned", [1024, 2048, 4096, 8192, 16384], 2048, key="features_tokens")
)
with state.friendly("dictionary"):
    d = F.dictionary(source, stem)
    dens = F.density(source, stem, n_tokens)
c = d.card
st.caption(f"{d!r}")
cols = st.columns(3)
cols[0].metric("latents", d.width)
cols[1].metric("alive on this text", f"{(dens['density'] > 0).mean():.1%}")
cols[2].metric("trained on", f"{c.get('train_tokens', '?')} tokens")
st.plotly_chart(density_histogram(dens), key="features_density")

left, right = st.columns([1, 2])
with left:
    word = st.text_input("Search: latents firing on the token", "", key="features_search")
    # default: the strongest latent among those neither rare nor dense (outliers fire on position 1 only)
    typical = dens[(dens["density"] > 0.001) & (dens["density"] < 0.05)]
    pool = typical if len(typical) else dens
    default = int(pool.sort_values("mean_activation", ascending=False)["latent"].iloc[0])
    if word.strip():
        with state.friendly("search"):
            found = F.search(source, stem, n_tokens, word)
        st.dataframe(found, hide_index=True, width="stretch")
        if len(found):
            default = int(found["latent"].iloc[0])
    latent = int(st.number_input("Latent", 0, d.width - 1, default, key="features_latent"))
    row = dens.loc[latent]
    st.caption(
        f"density {row['density']:.4%}, mean activation {row['mean_activation']:.3f}, max {row['max_activation']:.3f}"
    )
with state.friendly("latent"):
    contexts, hist, effects = F.latent_frames(source, stem, n_tokens, latent)
with right:
    if contexts.empty:
        st.info(f"Latent {latent} never fires on these {n_tokens} tokens.")
    else:
        st.plotly_chart(contexts_table(contexts, title=f"Latent {latent}: top contexts"), key="features_contexts")
if not hist.empty:
    st.plotly_chart(activation_histogram(hist), key="features_hist")
st.plotly_chart(logit_bars(effects), key="features_logits")
