"""Tasks: which criterion to trust across a sweep's tasks, then every task's depth per criterion, what it
gives, and storage as tasks grow; a sweep can be started here."""

from __future__ import annotations

import streamlit as st

from slsviz import defaults
from slsviz.app import charts, ui
from slsviz.sweep.leaderboard import FIXED, LOTO, labels
from slsviz.sweep.runner import read_progress

st.title("Tasks")
st.caption("A sweep's results (`slsviz sweep SPEC.yaml --out FOLDER`, here or on Ray): which criterion lands nearest "
           "the oracle across the tasks, each task's depth by every criterion, the accuracy and speed it gives, and "
           "what storing many tasks costs - SLS keeps one backbone and per task only adapters, a head and one integer.")

folder = st.text_input("Results folder (on the machine that runs the app)", value=defaults.SWEEP_OUT,
                       key="slsviz.tasks.folder")

with st.expander("Run a sweep here (local backend)"):
    spec_path = st.text_input("Sweep spec (YAML)", placeholder="examples/sweep_quick.yaml", key="slsviz.tasks.spec")
    if st.button(f"Run it into {folder}", key="slsviz.tasks.run", disabled=not spec_path):
        bar, where = st.progress(0.0, text="starting"), st.empty()

        def show(state) -> None:
            bar.progress(state.done / max(state.total, 1), text=f"{state.done} of {state.total} tasks ended"
                         + (f", {state.failed} failed" if state.failed else ""))
            where.caption(state.line(400) or "between tasks")

        with ui.user_errors():
            ui.run_sweep(spec_path, folder, on_progress=show)
        st.rerun()


@st.fragment(run_every=2.0)
def under_way(folder: str) -> None:
    """A sweep writing into the folder from another process (``slsviz sweep``), as it goes."""
    state = read_progress(folder)
    if state and not state.get("finished"):
        st.info(f"A sweep ({state.get('backend', '?')}) is under way in {folder}: {state['done']} of {state['total']} "
                "tasks ended" + (f", {state['failed']} failed" if state.get("failed") else "") + ". "
                + "; ".join(f"{task}: {where}" for task, where in state.get("running", {}).items()))


under_way(folder)
with ui.user_errors():
    results, shipped = ui.sweep_results(folder)
if shipped:
    st.info(f"No sweep results in {folder} yet: run a sweep into it (above, or `slsviz sweep SPEC.yaml --out "
            f"{folder}`). Meanwhile this is the shipped example: `{defaults.EXAMPLE_SWEEP_COMMAND}` ran "
            "examples/sweep_eight.yaml on this project's CPU (8 tasks: every PETL method on mnist5k and digits).")

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

st.subheader("Which criterion to trust")
board = ui.leaderboard(results)
names = labels()
if len(tasks) < 2:
    st.info("One task finished: the leaderboard needs two or more to calibrate a setting on the others.")
if len(board.table):
    best = board.best(LOTO)
    if best is not None:
        st.success(f"Across {len(tasks)} tasks, calibrated on the others, **{names.get(best['criterion'], best['criterion'])}** "
                   f"lands nearest the oracle: {best['abs_distance']:.2f} blocks off on average "
                   f"(95% CI {best['abs_distance_low']:.2f}-{best['abs_distance_high']:.2f}), worst "
                   f"{best['worst_abs_distance']:.0f}.")
    shown, columns = ui.leaderboard_table(board.table, names)
    st.dataframe(shown, hide_index=True, width="stretch", key="slsviz.tasks.leaderboard", column_config=columns)
    st.caption(f"Means over tasks with 95% bootstrap intervals over tasks. \"{FIXED}\": the sweep's settings; "
               f"\"{LOTO}\": each task's setting chosen on the other tasks only, so its error is what a new task would see.")
    st.plotly_chart(charts.leaderboard_scatter(board.outcomes, board.table, names), width="stretch",
                    key="slsviz.tasks.tradeoff")

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
