"""Layers: every block's 2-D map coloured by class, its scores, and the SLS recommendation."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from slsviz.app import charts, ui
from slsviz.choices import METRICS, PROJECTIONS
from slsviz.layers.analysis import AnalysisSettings
from slsviz.study.criteria import own_rule

st.title("Layers")

study = ui.current_study(splits=("train", "val"), unless_previewed=True)
current = ui.settings()
c1, c2, c3, c4 = st.columns(4)
projection = c1.selectbox("2-D map", PROJECTIONS, index=PROJECTIONS.index(current.projection), key="slsviz.layers.projection",
                          help="t-SNE is the paper's; UMAP and PCA are other views (the scores follow the map)")
metric = c2.selectbox("Score for SLS", list(METRICS), index=list(METRICS).index(current.metric), key="slsviz.layers.metric")
space = c3.selectbox("Scored on", ["2d", "raw"], index=["2d", "raw"].index(current.space), key="slsviz.layers.space",
                     help="the 2-D map (the paper) or the raw features")
alpha = c4.slider("alpha", 0.05, 1.0, float(current.alpha), 0.05, key="slsviz.layers.alpha",
                  help="keep blocks up to the last one scoring at least alpha x the final block's score")
settings = AnalysisSettings(projection=projection, metric=metric, space=space, alpha=alpha)
st.session_state[ui.SETTINGS] = settings

scored_on = f"{metric} of the {projection} map" if space == "2d" else f"{metric} of the raw features"
with ui.user_errors(), st.spinner("Scanning blocks from the last one down..."):
    # top down: only the blocks the rule needs; from the first images while the rest are read
    rule, early = study.layers.recommend_soon(settings, progress=ui.ProgressBar("Features of the first images"))


@st.fragment(run_every=2.0)
def exact_watch() -> None:
    """While the recommendation is provisional: looks every 2 s, and reloads the page once the exact one is in."""
    if study.layers.ready(settings):
        st.rerun()


if early is not None:
    study.prefetch("layers", settings)  # the exact one, after the work already queued
    read, total = early.images
    spread = early.spread
    st.warning(f"**Provisional**: from the first {read} of {total} scored images ({early.train_images} train, "
               f"{read - early.train_images} val)."
               + (f" Over {len(spread.depths)} resamples of those images on the same maps, SLS keeps "
                  f"{spread.mode} blocks most often; 90% of the picks lie in {'..'.join(map(str, spread.interval()))}."
                  if spread is not None else "")
               + " The exact recommendation replaces it by itself when the rest are read and mapped.")
    st.success(f"**SLS recommends keeping {rule.depth_} of {rule.num_layers_} blocks** (provisional; {scored_on}, "
               f"alpha {alpha:g}). {rule.reason_}")
    scanned = pd.DataFrame({"layer": range(1, rule.num_layers_ + 1), metric: rule.scores_})
    st.plotly_chart(charts.score_curves(scanned, metric=metric, threshold=float(rule.threshold_), depth=int(rule.depth_),
                                        band=None if spread is None else spread.band(), stage_starts=study.stage_starts),
                    width="stretch", key="slsviz.layers.provisional_curve")
    st.caption("The blocks the top-down scan scored on the first images (the band: 90% of the resamples). Every "
               "block's map, the scores table and the downloads come with the exact recommendation.")
    exact_watch()
    ui.prefetch(study, "prune")
    st.stop()

with ui.user_errors():
    analysis = study.layers.analysis(settings)
st.session_state[ui.DEPTH] = int(rule.depth_)
st.success(f"**SLS recommends keeping {rule.depth_} of {rule.num_layers_} blocks** ({scored_on}, alpha {alpha:g}). "
           f"{rule.reason_}")
stages = study.stage_starts
if stages:
    st.caption(f"Blocks are numbered 1..{study.num_layers} across the stages; stages begin at blocks "
               f"{', '.join(map(str, [1, *stages]))}. The cut keeps the stages before it and the patch merging after it. "
               f"Depth {rule.depth_} cuts in {study.stage_of(int(rule.depth_))}.")

with ui.user_errors():
    maps = analysis.maps(progress=ui.ProgressBar(f"{projection} maps of every block"))
    table = analysis.table()
own = own_rule(metric, table[metric].to_numpy())
if own is not None:  # an accuracy's block 1 is far above chance: alpha x the last block's is met at once
    st.info(f"**{metric} has a chance level**, so alpha x the last block's is met by early blocks. Its own rule, the one "
            f"Compare and the sweep use, keeps **{own[1]} blocks**: {own[2]}")
data = study.loaded.data
labels, names = analysis.labels, data.class_names

st.subheader("Scores against depth")
b1, b2 = st.columns([1, 3])
resamples = b1.number_input("Stability: bootstrap resamples (0: off)", 0, 200, 0, key="slsviz.layers.resamples",
                            help="the scored images drawn again with replacement, each draw mapped anew: the band is the "
                                 "90% interval of each block's score, with the recommended depth's spread")
band = None
if resamples:
    with ui.user_errors():
        spread = study.layers.stability(settings, int(resamples), progress=ui.StageProgressBars())
    band = spread.band()
    low, high = spread.interval()
    b2.info(f"Over {int(resamples)} resamples SLS keeps {spread.mode} blocks most often; 90% of the picks lie in "
            f"{low}..{high}.")
st.plotly_chart(charts.score_curves(table, metric=metric, threshold=float(rule.threshold_), depth=int(rule.depth_), band=band,
                                    stage_starts=stages),
                width="stretch", key="slsviz.layers.curves")

left, right = st.columns([3, 2])
with left:
    st.subheader("Every block")
    st.plotly_chart(charts.layer_grid(maps, labels, names, recommended=int(rule.depth_), stage_starts=stages), width="stretch",
                    key="slsviz.layers.grid")
with right:
    st.subheader("One block, large")
    layer = st.slider("Block", 1, analysis.num_layers, int(rule.depth_), key=ui.LAYER)
    event = st.plotly_chart(charts.layer_map(maps[layer], labels, names, study.features.scored_indices(), layer), width="stretch",
                            key="slsviz.layers.one", on_select="rerun", selection_mode=("points", "box", "lasso"))
    picked = [int(p["customdata"][0]) for p in (event.selection.points if event else []) if p.get("customdata")]
    if picked:  # thumbnails are cheap: the images are small and already loaded
        shown = picked[:: max(1, len(picked) // 12)][:12]  # spread over the selection, not one class
        st.caption(f"{len(picked)} selected; {len(shown)} images (dataset index, class)")
        st.image([data.image(i).resize((56, 56)) for i in shown], caption=[f"#{i}, {names[data.labels[i]]}" for i in shown])
    else:
        st.caption("Click or lasso points to see their images.")

ui.prefetch(study, "prune")  # every map is there: prepare the next page while the user reads this one
st.subheader("Scores")
if stages:
    table.insert(1, "stage", study.stages())
st.dataframe(table, hide_index=True, width="stretch")
d1, d2 = st.columns(2)
d1.download_button("Scores (CSV)", table.to_csv(index=False), "scores.csv", "text/csv", key="slsviz.layers.dl_scores")
d2.download_button(f"{projection} coordinates of every block (CSV)", study.layers.map_coordinates(settings).to_csv(index=False), f"{projection}_maps.csv",
                   "text/csv", key="slsviz.layers.dl_maps")
st.caption("Next: **Prune & benchmark**, in the sidebar.")
