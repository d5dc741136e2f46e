"""Prune & benchmark: pick a depth and see accuracy, measured speed, FLOPs and storage at once."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from slsviz.app import charts, ui
from slsviz.errors import SlsvizError
from slsviz.pruning.footprint import FULL_PETL, PRUNED, SLS
from slsviz.study.training import retrain_at

st.title("Prune & benchmark")

study = ui.current_study(splits=("train",), unless_previewed=True)
L = study.num_layers
offered = study.timing.precisions()
precision = (st.radio("Timing precision", offered, horizontal=True, key="slsviz.prune.precision",
                      help="bf16: autocast, as a bf16 deployment runs; offered where this device computes bf16 natively")
             if len(offered) > 1 else offered[0])
with ui.user_errors():
    # Exact when ready; until then from the first test images, while the rest are read in the background.
    table, exact = study.depths.table_soon(progress=ui.ProgressBar("Features of the test split"))
    recommended, provisional = ui.recommended(study)  # the provisional one until the exact one is made
    # Every depth timed together, in rounds, so that the speedups hold on a machine whose speed drifts.
    timed = study.timing.benchmarks(progress=ui.ProgressBar(f"Timing all {L} depths, interleaved"), precision=precision)
    fp32 = timed if precision == "fp32" else study.timing.benchmarks()  # beside the chosen precision's figures
if not exact:
    study.depths.start_exact()  # after the timing: a measurement has the machine alone
    read, total = table.attrs["images"]
    fit_on, train_total = table.attrs["train_images"]
    heads = f", heads re-fit on the first {fit_on} of {train_total} train images" if fit_on < train_total else ""
    st.info(f"Provisional accuracies, from the first {read} of {total} test images (± the 95% interval){heads}; the "
            "exact figures replace them by themselves when the rest of the test split is read.")
applies, note = study.loaded.head_applies, study.loaded.head_note
if note:
    (st.info if applies else st.warning)(f"Accuracy as is: {note}")
full = timed[L]
device = full.device


def fmt_pct(x: float, pm: float | None = None) -> str:
    if pd.isna(x):
        return "-"
    return f"{100 * x:.2f}%" + ("" if pm is None or pd.isna(pm) else f" ±{100 * pm:.1f}")


@st.fragment(run_every=2.0)
def exact_figures_watch() -> None:
    """While the accuracies are provisional: looks every 2 s, and reloads the page once the exact ones are in."""
    if study.depths.ready():
        st.rerun()


@st.fragment
def depth_panel() -> None:
    """Reruns alone when the slider moves: every number is already measured or cached."""
    depth = st.slider("Blocks kept", 1, L, recommended, key=ui.PRUNE_DEPTH,
                      help=f"starts at the SLS recommendation ({recommended}{', provisional' if provisional else ''})")
    st.session_state[ui.CHOSEN] = depth
    if study.stage_of(depth):
        st.caption(f"Cut in {study.stage_of(depth)}.")
    row, full_row = table.iloc[depth - 1], table.iloc[L - 1]
    cut = timed[depth]
    storage = {r["storage"]: r for r in study.timing.storage(depth)}
    a = st.columns(4)
    a[0].metric("Accuracy as is (task head)", fmt_pct(row["accuracy_as_is"], row.get("accuracy_as_is_pm")),
                delta=None if pd.isna(row["accuracy_as_is"]) else f"{100 * (row['accuracy_as_is'] - full_row['accuracy_as_is']):+.2f} pts",
                help=f"full model: {fmt_pct(full_row['accuracy_as_is'])}")
    a[1].metric("Accuracy, head re-fit", fmt_pct(row["accuracy_head_refit"], row.get("accuracy_head_refit_pm")),
                delta=f"{100 * (row['accuracy_head_refit'] - full_row['accuracy_head_refit']):+.2f} pts",
                help=f"full model: {fmt_pct(full_row['accuracy_head_refit'])}")
    a[2].metric("Throughput (batch 1)", f"{cut.images_per_s:.1f} img/s",
                delta=f"{cut.images_per_s / full.images_per_s:.2f}x (ideal {full.flops_per_image / cut.flops_per_image:.2f}x)",
                help=f"full model: {full.images_per_s:.1f} img/s, measured on {device}")
    a[3].metric("Latency (batch 1)", f"{cut.latency_ms:.1f} ms", delta=f"{cut.latency_ms - full.latency_ms:+.1f} ms",
                delta_color="inverse", help=f"full model: {full.latency_ms:.1f} ms")
    b = st.columns(4)
    b[0].metric("Parameters", f"{cut.params / 1e6:.2f} M", help=f"full model: {full.params / 1e6:.2f} M")
    b[1].metric("GFLOPs / image", f"{cut.flops_per_image / 1e9:.3f}", help=f"full model: {full.flops_per_image / 1e9:.3f}")
    b[2].metric("Stored per task (SLS)", f"{storage[SLS]['bytes'] / 1024:.0f} KiB",
                help=f"full PETL: {storage[FULL_PETL]['bytes'] / 1024:.0f} KiB")
    b[3].metric("Structurally pruned, per task", f"{storage[PRUNED]['bytes'] / 2**20:.1f} MiB",
                help="a pruned backbone stored for every task")
    st.caption(f"Measured on {device}, {cut.precision}, all depths timed in turn over {cut.steps} steps each; "
               f"the full model: {full.images_per_s:.1f} img/s."
               + ("" if precision == "fp32" else f" In fp32: {fp32[depth].images_per_s:.1f} img/s here, "
                                                 f"{fp32[L].images_per_s:.1f} img/s for the full model."))

    st.subheader("Accuracy against throughput, every depth")
    frame = table.assign(images_per_s=[timed[d].images_per_s for d in range(1, L + 1)])
    st.plotly_chart(charts.accuracy_vs_throughput(frame, chosen=depth, stages=study.stages()), width="stretch", key="slsviz.prune.chart")


def pick(budget: dict, kind: str) -> None:
    """The budget picker's button: move the slider to the depth that fits, or say why none does."""
    try:
        picked = study.timing.pick_depth(kind=kind, table=table, **budget)
    except SlsvizError as exc:
        st.session_state[ui.PICKED] = (False, str(exc))
        return
    st.session_state[ui.PRUNE_DEPTH] = picked["depth"]
    st.session_state[ui.PICKED] = (True, f"Depth {picked['depth']}: {picked['rule']} - {fmt_pct(picked['accuracy'])} at "
                                         f"{picked['images_per_s']:.1f} images/s" + ("" if exact else " (provisional accuracies)"))


with st.expander("Pick the depth by a budget"):
    p1, p2, p3 = st.columns([2, 1, 1])
    fastest = p1.radio("Budget", ["fastest within X points of the full model", "most accurate at Y images/s or more"],
                       key="slsviz.prune.budget").startswith("fastest")
    kinds = {"accuracy_head_refit": "head re-fit", "accuracy_as_is": "as is (task head)"}
    kind = p2.selectbox("Accuracy", [k for k in kinds if not table[k].isna().all()], format_func=kinds.get,
                        key="slsviz.prune.budget_kind")
    if fastest:
        budget = {"within": p3.number_input("X (points)", 0.0, 100.0, 1.0, 0.5, key="slsviz.prune.budget_within") / 100}
    else:
        budget = {"min_images_per_s": p3.number_input("Y (images/s)", 0.1, 1e6, float(round(2 * full.images_per_s, 1)),
                                                      key="slsviz.prune.budget_speed")}
    st.button("Set the slider to it", on_click=pick, args=(budget, kind), key="slsviz.prune.budget_go")
    if ui.PICKED in st.session_state:
        ok, message = st.session_state[ui.PICKED]
        (st.success if ok else st.warning)(message)

depth_panel()
if not exact:
    exact_figures_watch()

st.subheader("Retrain the pruned model")
st.caption("The paper's FT: adapters and head of the pruned model trained further at a constant lr 1e-5.")
r1, r2 = st.columns([1, 3])
epochs = r1.number_input("Epochs", 1, 100, 3, key="slsviz.prune.epochs")
if r1.button("Retrain", key="slsviz.prune.retrain"):
    depth = ui.chosen_depth(study)
    bar = st.progress(0.0, text="Retraining")
    with ui.user_errors():
        out = retrain_at(study.loaded, depth, int(epochs), kind="ft", limit=study.features.limit,
                         progress=lambda e, n, info: bar.progress(e / n, text=f"epoch {e}/{n}, val {info['val_accuracy']:.3f}"))
    st.session_state[ui.RETRAINED] = out
if ui.RETRAINED in st.session_state:
    res = st.session_state[ui.RETRAINED]
    r2.metric(f"Accuracy retrained (FT, {res['epochs']} epochs, depth {res['depth']})", fmt_pct(res["accuracy_retrained"]))
st.caption("Next: **Export**, in the sidebar.")
