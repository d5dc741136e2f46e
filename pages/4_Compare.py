"""Compare: SLS beside the other layer criteria and the oracle - each one's depth, and what it gives."""

from __future__ import annotations

import json

import streamlit as st

from slsviz import defaults
from slsviz.app import charts, ui

st.title("Compare criteria")
st.caption("Would another criterion keep another depth, and whose pick is better? Every criterion reads the same "
           "features (train + val); the oracle is the smallest depth within a tolerance of the full model's val "
           "accuracy with a re-fit head; accuracies are on test.")

study = ui.current_study(splits=("train", "val"))
c1, c2, c3, c4, c5 = st.columns(5)
within = c1.number_input("Oracle: within (points)", 0.0, 50.0, 100 * defaults.ORACLE_WITHIN, 0.5,
                         key="slsviz.compare.oracle_within") / 100
settings = {
    "knn_accuracy": c2.number_input("kNN: within (points)", 0.0, 50.0, 100 * defaults.KNN_WITHIN, 0.5,
                                    key="slsviz.compare.knn_within") / 100,
    "block_influence": c3.number_input("Block Influence: x mean", 0.0, 10.0, defaults.BI_RATIO, 0.05,
                                       key="slsviz.compare.bi_ratio"),
    "angular_distance": c4.number_input("Angular distance: at most", 0.0, 1.0, defaults.ANGULAR_MAX, 0.05,
                                        key="slsviz.compare.angular_max"),
    "cka_to_last": c5.number_input("CKA with the last: at least", 0.0, 1.0, defaults.CKA_MIN, 0.05,
                                   key="slsviz.compare.cka_min"),
}
c6, c7, c8, c9 = st.columns(4)
settings |= {
    "sls_probe": c6.number_input("SLS probe: within (points)", 0.0, 50.0, 100 * defaults.PROBE_WITHIN, 0.5,
                                 key="slsviz.compare.probe_within") / 100,
    "reverse_order": c7.number_input("Reverse order: top share dropped", 0.0, 1.0, defaults.REVERSE_SHARE, 0.05,
                                     key="slsviz.compare.reverse_share"),
    "taylor": c8.number_input("Taylor: x mean", 0.0, 10.0, defaults.TAYLOR_RATIO, 0.05, key="slsviz.compare.taylor_ratio"),
    "val_loss": c9.number_input("Val loss: within (nats)", 0.0, 10.0, defaults.LOSS_WITHIN, 0.01,
                                key="slsviz.compare.loss_within"),
}
offered = ui.calibrated_offer(defaults.SWEEP_OUT, study)
calibrated = offered if offered is not None and st.checkbox(
    f"Add {offered.criterion} at {offered.setting:g}: the criterion nearest the oracle across the {offered.tasks} tasks "
    f"of sweep {offered.sweep}, calibrated on tasks it was not scored on (Tasks page)", key="slsviz.compare.calibrated") \
    else None
resamples = st.number_input("Stability: bootstrap resamples of the scored images, each with new maps (0: off)", 0, 200, 0,
                            key="slsviz.compare.resamples",
                            help="each criterion's depth on every resample: its most frequent depth and 90% interval")
g1, g2 = st.columns([3, 1])
depgraph = g1.checkbox("The paper's baseline: DepGraph width pruning to the FLOPs of the SLS depth (Torch-Pruning; "
                       "two more passes over train and test)", key="slsviz.compare.depgraph")
retrain = g2.number_input("then retrain it (FT epochs; 0: no)", 0, 100, 0, key="slsviz.compare.depgraph_retrain",
                          disabled=not depgraph)
with ui.user_errors():
    comparison = study.compare(oracle_within=within, settings=settings, resamples=int(resamples),
                               depgraph=0 if depgraph else None, depgraph_retrain=int(retrain) if depgraph else 0,
                               calibrated=calibrated, progress=ui.StageProgressBars())

table = comparison.table()
oracle = int(table.loc[table["name"] == "oracle", "depth"].iloc[0])
st.success(f"**The oracle keeps {oracle} of {comparison.num_layers} blocks**; the paper's SLS keeps "
           f"{int(table.loc[table['name'] == 'sls', 'depth'].iloc[0])}.")
shown = table.assign(accuracy_as_is=100 * table["accuracy_as_is"], accuracy_head_refit=100 * table["accuracy_head_refit"],
                     gflops=table["flops"] / 1e9)
spread = ["stability_mode", "stability_low", "stability_high"] if resamples else []
st.dataframe(shown[["label", "depth", *spread, "oracle_distance", "accuracy_as_is", "accuracy_head_refit", "images_per_s",
                    "gflops", "rule", "scale"]],
             hide_index=True, width="stretch",
             column_config={"label": "criterion", "scale": "score and the kind of rule that reads it",
                            "oracle_distance": st.column_config.NumberColumn("from the oracle", format="%+d"),
                            "accuracy_as_is": st.column_config.NumberColumn("test acc. as is (%)", format="%.2f"),
                            "accuracy_head_refit": st.column_config.NumberColumn("test acc. head re-fit (%)", format="%.2f"),
                            "images_per_s": st.column_config.NumberColumn("images/s (batch 1)", format="%.1f"),
                            "gflops": st.column_config.NumberColumn("GFLOPs / image", format="%.3f"),
                            "stability_mode": st.column_config.NumberColumn("most frequent depth", format="%d"),
                            "stability_low": st.column_config.NumberColumn("90% from", format="%d"),
                            "stability_high": st.column_config.NumberColumn("90% to", format="%d")})

for row in comparison.rows:  # a Swin's blocks differ in width: what the criteria that compare blocks make of it
    if "width_note" in row:
        st.caption(f"{row['label']}: {row['width_note']}")

baseline = comparison.depgraph
if baseline is not None and "skipped" in baseline:
    st.info(f"DepGraph baseline: {baseline['skipped']}")
    baseline = None
if baseline is not None:
    st.subheader(f"SLS against DepGraph at the FLOPs of {baseline['depth']} blocks")
    d = st.columns(4)
    sls = table[table["name"] == "sls"].iloc[0]
    d[0].metric("DepGraph: test acc., head re-fit", f"{100 * baseline['accuracy_head_refit']:.2f}%",
                delta=f"{100 * (baseline['accuracy_head_refit'] - sls['accuracy_head_refit']):+.2f} pts vs SLS")
    d[1].metric("DepGraph: images/s (batch 1)", f"{baseline['images_per_s']:.1f}",
                help=f"SLS at {baseline['depth']} blocks, timed in the same rounds: {baseline['sls_images_per_s_same_rounds']:.1f}")
    d[2].metric("DepGraph: GFLOPs / image", f"{baseline['flops'] / 1e9:.3f}", help=f"target {baseline['target_flops'] / 1e9:.3f}")
    d[3].metric("DepGraph: stored per task", f"{baseline['bytes_per_task'] / 2**20:.1f} MiB", help="a pruned backbone per task")
    if "accuracy_retrained" in baseline:
        st.metric(f"DepGraph retrained ({baseline['retrain_epochs']} FT epochs): test accuracy",
                  f"{100 * baseline['accuracy_retrained']:.2f}%")
    for note in ("width_note", "retrained_note"):
        if note in baseline:
            st.info(baseline[note])
    st.caption(f"Uniform ratio {baseline['ratio']:.3f}: heads kept {baseline['heads'][0]} per block, MLP channels "
               f"{baseline['mlp_hidden'][0]}; adapters, head and residual width left out.")
    frame = study.depths.table().assign(images_per_s=baseline["depth_images_per_s_same_rounds"])  # timed with DepGraph
    st.plotly_chart(charts.accuracy_vs_throughput(frame, chosen=baseline["depth"], baseline=baseline,
                                                  stages=study.stages()), width="stretch",
                    key="slsviz.compare.speed")

st.subheader("Every criterion's scores, on one scale")
st.plotly_chart(charts.criteria_curves(comparison.scores(), comparison.rows, study.stage_starts), width="stretch", key="slsviz.compare.curves")
st.subheader("Linear CKA between blocks")
st.plotly_chart(charts.cka_heatmap(comparison.cka, study.stage_starts), width="stretch", key="slsviz.compare.cka")
d1, d2 = st.columns(2)
d1.download_button("compare.json", json.dumps(comparison.to_dict(), indent=2), "compare.json", "application/json",
                   key="slsviz.compare.dl_json")
d2.download_button("compare.csv", table.to_csv(index=False), "compare.csv", "text/csv", key="slsviz.compare.dl_csv")
