"""Tasks: a sweep's results - every task's depth per criterion, what it gives, and storage as tasks grow."""

from __future__ import annotations

import streamlit as st

from slsviz.app import charts, ui
from slsviz.sweep.results import SweepResults

st.title("Tasks")
st.caption("A sweep's results (`slsviz sweep SPEC.yaml --out FOLDER`, here or on Ray): each task's depth by every "
           "criterion, the accuracy and speed it gives, and what storing many tasks costs - SLS keeps one backbone "
           "and per task only adapters, a head and one integer.")

folder = st.text_input("Results folder (on the machine that runs the app)", value="sweep-out", key="slsviz.tasks.folder")
with ui.user_errors():
    results = SweepResults.open(folder)

tasks, failed = results.tasks, results.failures
m1, m2, m3 = st.columns(3)
m1.metric("tasks finished", len(tasks))
m2.metric("tasks failed", len(failed))
m3.metric("criteria", len(results.choices()["criteria"]))
if len(failed):
    st.warning("Some tasks failed; a sweep run again into this folder tries them again and skips the finished ones.")
    st.dataframe(failed, hide_index=True, width="stretch")
if not tasks:
    st.info(f"No task of {results.name} has finished yet.")
    st.stop()

choices = results.choices()
c1, c2, c3 = st.columns(3)
criterion = c1.selectbox("Criterion for the per-task table and the storage chart", choices["criteria"],
                         index=choices["criteria"].index("sls") if "sls" in choices["criteria"] else 0,
                         key="slsviz.tasks.criterion")
alpha = c2.selectbox("alpha (the SLS variants)", choices["alphas"], key="slsviz.tasks.alpha") if choices["alphas"] else None
seed = c3.selectbox("seed (maps, probe, kNN folds)", choices["seeds"], key="slsviz.tasks.seed") if choices["seeds"] else None

st.subheader("Depth per task and criterion")
st.dataframe(results.depths(alpha, seed), width="stretch")

st.subheader(f"Per task, at the depth {criterion} picks")
per_task = results.per_task(criterion, alpha, seed)
percent = [c for c in per_task.columns if c.startswith("accuracy_")]
st.dataframe(per_task.assign(**{c: 100 * per_task[c] for c in percent}), hide_index=True, width="stretch",
             column_config={**{c: st.column_config.NumberColumn(c.removeprefix("accuracy_").replace("_", " ") + " (%)",
                                                                format="%.2f") for c in percent},
                            "images_per_s": st.column_config.NumberColumn("images/s at the depth", format="%.1f"),
                            "images_per_s_full": st.column_config.NumberColumn("images/s full", format="%.1f"),
                            "oracle_distance": st.column_config.NumberColumn("from the oracle", format="%+d")})

st.subheader("Storage as tasks grow")
growth = results.storage_growth(criterion, alpha, seed)
st.plotly_chart(charts.storage_growth(growth), width="stretch", key="slsviz.tasks.storage")
last = growth[growth["tasks"] == growth["tasks"].max()].set_index("scheme")["bytes"] / 2**20
st.caption(" · ".join(f"{scheme.split(':')[0]}: {mib:,.1f} MiB for {len(tasks)} tasks" for scheme, mib in last.items()))

st.download_button("results.csv", results.table.to_csv(index=False), file_name="results.csv", mime="text/csv",
                   key="slsviz.tasks.download")
