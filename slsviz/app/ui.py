"""Streamlit glue shared by the pages: the cached studies, session state, progress bars, errors.

Widget and state keys are namespaced ``slsviz.<page>.<name>``; every key a page reads or writes
beyond its own form fields is a constant below, and :func:`load` clears those that belong to the
previous model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import streamlit as st

from slsviz import defaults
from slsviz.device import is_out_of_memory
from slsviz.errors import SlsvizError
from slsviz.layers.analysis import AnalysisSettings
from slsviz.models.selection import content_stamp
from slsviz.study import Selection, Study
from slsviz.study.comparison import Calibrated
from slsviz.sweep.leaderboard import LOTO, Leaderboard
from slsviz.sweep.results import SweepResults

SELECTION = "slsviz.selection"  # what this session loaded (a Selection)
CONTENT = "slsviz.selection.content"  # what the files it names held when it was loaded (content_stamp)
SETTINGS = "slsviz.settings"  # how the Layers page maps and scores (AnalysisSettings)
DEPTH = "slsviz.depth"  # the SLS recommendation under SETTINGS, once the Layers page has it
CHOSEN = "slsviz.prune.chosen"  # the depth chosen on the Prune page, or imported (Export starts there)
LAYER = "slsviz.layers.layer"  # the block shown large on Layers
PRUNE_DEPTH = "slsviz.prune.depth"  # the Prune page's slider
RETRAINED = "slsviz.prune.retrained"  # the last retraining's result
PICKED = "slsviz.prune.picked"  # what the budget picker last said: (ok, message)
EXPORT_DEPTH = "slsviz.export.depth"  # the Export page's depth
ONNX_DEPTH = "slsviz.export.onnx_depth"  # the depth the ONNX file was prepared for
TOOL_FORMAT = "slsviz.export.tool"  # the format of the user's own tool the Export page prepares
TOOL_PREPARED = "slsviz.export.tool_prepared"  # (format, depth) the tool's folder was prepared for
# What the Export page calls each format of slsviz.export.handback.
TOOL_FORMATS = {"timm": "timm (timm.create_model, adapters merged)",
                "transformers": "transformers (ViTForImageClassification, adapters merged)",
                "peft": "PEFT (LoRA adapter folder and its base)", "official": "the official SLS code (<name>_<D>blocks.pt)"}
# Meaningful only for the model they were chosen on: cleared when another is loaded.
MODEL_KEYS = (DEPTH, CHOSEN, LAYER, PRUNE_DEPTH, RETRAINED, PICKED, EXPORT_DEPTH, ONNX_DEPTH, TOOL_FORMAT, TOOL_PREPARED)


def sweep_results(folder: str) -> tuple[SweepResults, bool]:
    """``(results, shipped)``: the sweep in ``folder``, or the shipped example (``shipped`` True) while
    ``folder`` holds no results yet (missing, empty, or a first sweep still under way). A folder that
    holds something else is the user's to fix: refused with what to do."""
    path = Path(folder).expanduser()
    if (path / "sweep.json").is_file() or (path.is_dir() and any(p.name != "progress.json" for p in path.iterdir())
                                           and not (path / "progress.json").is_file()):
        return SweepResults.open(path), False
    return SweepResults.open(defaults.EXAMPLE_SWEEP), True


def leaderboard(results: SweepResults) -> Leaderboard:
    """The leaderboard of ``results``' folder, once per content of its results and reports."""
    digest = hashlib.sha256(results.table.to_csv(index=False).encode())
    for task in results.tasks:
        digest.update((results.folder / "tasks" / task / "report.json").read_bytes())
    return _leaderboard(str(results.folder), digest.hexdigest())


@st.cache_data(show_spinner="Ranking the criteria across tasks...", max_entries=8)
def _leaderboard(folder: str, content: str) -> Leaderboard:
    return SweepResults.open(folder).leaderboard()


def leaderboard_table(table: pd.DataFrame, names: dict[str, str]) -> tuple[pd.DataFrame, dict]:
    """The leaderboard as the Tasks page shows it: criteria by name, shares in percent; and its columns'
    headings."""
    shown = table.assign(label=table["criterion"].map(lambda c: names.get(c, c)),
                         setting=[("calibrated on the other tasks" if kind == LOTO else f"{s:g}")
                                  for kind, s in zip(table["kind"], table["setting"])])
    percent = ["accuracy_lost_head_refit", "accuracy_lost_as_is", "flops_saved", "within_one"]
    shown = shown.assign(**{c: 100 * shown[c] for c in percent})
    number = st.column_config.NumberColumn
    columns = {"label": "criterion", "kind": "setting from",
               "abs_distance": number("mean |depth - oracle|", format="%.2f"),
               "abs_distance_low": number("95% from", format="%.2f"), "abs_distance_high": number("95% to", format="%.2f"),
               "worst_abs_distance": number("worst", format="%d"),
               "within_one": number("within 1 block (%)", format="%.0f"),
               "accuracy_lost_head_refit": number("acc. lost, head re-fit (pts)", format="%.2f"),
               "accuracy_lost_as_is": number("acc. lost, as is (pts)", format="%.2f"),
               "flops_saved": number("FLOPs saved (%)", format="%.0f"), "speedup": number("measured speedup", format="%.2fx")}
    order = ["label", "setting", "kind", "tasks", "abs_distance", "abs_distance_low", "abs_distance_high",
             "worst_abs_distance", "within_one", "accuracy_lost_head_refit", "accuracy_lost_as_is", "flops_saved", "speedup"]
    return shown[order], columns


def calibrated_offer(folder: str, current: Study) -> Calibrated | None:
    """What the leaderboard of the sweep in ``folder`` (or the shipped example) offers ``current``: the
    best calibrated criterion it computes (not one of
    :meth:`slsviz.study.depths.DepthEvaluator.unavailable`); ``None`` when there is none."""
    try:
        results, _ = sweep_results(folder)
        return leaderboard(results).offer(current.depths.unavailable()) if len(results.tasks) >= 2 else None
    except SlsvizError:
        return None


def run_sweep(spec_path: str, folder: str, on_progress) -> None:
    """Run the spec at ``spec_path`` into ``folder`` on the local backend (the finished tasks skipped)."""
    from slsviz.sweep import load_spec
    from slsviz.sweep import run_sweep as run

    run(load_spec(spec_path), folder, backend="local", progress=False, on_progress=on_progress)


def study(selection: Selection, content: str | None = None) -> Study:
    """One study per selection and content of the files it names (:func:`content_stamp`), shared by
    sessions; its model is never mutated. A folder edited and loaded again is a new study."""
    # One call form: Streamlit keys a cache on the arguments as passed, so study(s) and study(s, None)
    # would be two studies of one model, each computing everything (the server's warm-up and a page).
    return _study(selection, content)


@st.cache_resource(show_spinner="Loading backbone, task and dataset...", max_entries=4)
def _study(selection: Selection, content: str | None) -> Study:
    return Study.open(selection, timing_s=timing_s())


def timing_s() -> float:
    """Seconds of timing per depth in the app: ``SLSVIZ_TIMING_S`` where it is a positive number
    (quicker, noisier figures), otherwise the default."""
    try:
        value = float(os.environ.get("SLSVIZ_TIMING_S", ""))
    except ValueError:
        return defaults.TIMING_S
    return value if 0 < value < float("inf") else defaults.TIMING_S


def default_selection() -> Selection:
    """The embedded default every session starts on; ``SLSVIZ_LIMIT`` (images per split) makes it a
    quick look, e.g. for end-to-end tests."""
    limit = os.environ.get("SLSVIZ_LIMIT")
    return Selection(limit=int(limit) if limit else None)


def selection() -> Selection:
    """This session's selection (the embedded default until the user loads something else)."""
    return st.session_state.setdefault(SELECTION, default_selection())


def load(new: Selection) -> None:
    """Make ``new`` this session's model and forget every choice made for the previous one."""
    for key in MODEL_KEYS:
        st.session_state.pop(key, None)
    st.session_state[SELECTION] = new
    st.session_state[CONTENT] = content_stamp(new)


def settings() -> AnalysisSettings:
    """This session's analysis settings (the paper's until changed on the Layers page)."""
    return st.session_state.setdefault(SETTINGS, AnalysisSettings())


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show an error the user caused as ``st.error`` (what is wrong, what to do) and stop the page."""
    try:
        yield
    except SlsvizError as exc:
        st.error(str(exc))
        st.stop()
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        st.error("Ran out of memory on this machine: load the model again (Model page) with fewer images per split "
                 "or a smaller input size, or on a device with more free memory.")
        st.stop()


class ProgressBar:
    """A ``progress(done, total)`` callback drawing one ``st.progress`` bar; removed when done."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = st.progress(0.0, text=self.label)
        self.bar.progress(min(1.0, done / max(total, 1)), text=f"{self.label}: {done} / {total}")
        if done >= total:
            self.bar.empty()


class StageProgressBars:
    """A ``progress(stage, done, total)`` callback: one :class:`ProgressBar` per stage, named by it."""

    def __init__(self) -> None:
        self.bars: dict[str, ProgressBar] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.bars.setdefault(stage, ProgressBar(stage[:1].upper() + stage[1:]))(done, total)


def prefetching() -> bool:
    """Whether work is started ahead of the pages; ``SLSVIZ_PREFETCH=0`` turns it off (the test suite
    does, so that no page test leaves work running behind it)."""
    return os.environ.get("SLSVIZ_PREFETCH", "1") != "0"


def prefetch(current: Study, *pages: str) -> None:
    """Start each page's heaviest work in the background, in turn, while the user reads this one
    (:meth:`Study.prefetch`)."""
    if prefetching():
        for page in pages:
            current.prefetch(page, settings())


def current_study(splits: tuple[str, ...] = (), *, unless_previewed: bool = False) -> Study:
    """The study of this session's selection, with ``splits``' features ready (progress shown); with
    ``unless_previewed``, not where the page answers from the first images first
    (:meth:`FeatureStore.previewed`), and the rest are read in the background."""
    with user_errors():
        current = study(selection(), st.session_state.get(CONTENT))
        for split in () if unless_previewed and current.features.previewed() else splits:
            current.features.bank(split, progress=ProgressBar(f"Features of the {split} split, all blocks in one pass"))
    return current


def recommended(current: Study) -> tuple[int, bool]:
    """``(depth, provisional)``: the SLS recommendation under this session's settings, exact once it is
    made (kept as :data:`DEPTH`), else the one from the first images, with the exact one started."""
    with user_errors():
        rule, early = current.layers.recommend_soon(settings())
    if early is not None:
        current.prefetch("layers", settings())
    else:
        st.session_state[DEPTH] = int(rule.depth_)
    return int(rule.depth_), early is not None


def chosen_depth(current: Study) -> int:
    """The depth this session chose on the Prune page, else the SLS recommendation (:func:`recommended`)."""
    depth, _ = recommended(current)
    return min(int(st.session_state.get(CHOSEN, depth)), current.num_layers)
