"""Streamlit glue shared by the pages: cached resources, session state, progress bars, errors.

Only this module and the pages import Streamlit; all the work is done by the engine.
Widget and state keys are namespaced ``slsviz.<page>.<name>``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import streamlit as st

from slsviz.app.workspace import Selection, Workspace
from slsviz.errors import SlsvizError
from slsviz.layers.analysis import AnalysisSettings

SELECTION = "slsviz.selection"
SETTINGS = "slsviz.settings"
DEPTH = "slsviz.depth"


@st.cache_resource(show_spinner="Loading backbone, task and dataset...", max_entries=4)
def workspace(selection: Selection) -> Workspace:
    """One workspace per selection, shared by sessions; its model is never mutated."""
    return Workspace.open(selection)


def selection() -> Selection:
    """This session's selection (the embedded default until the user loads something else).

    ``SLSVIZ_LIMIT`` (images per split) makes the default a quick look, e.g. for end-to-end tests.
    """
    limit = os.environ.get("SLSVIZ_LIMIT")
    return st.session_state.setdefault(SELECTION, Selection(limit=int(limit) if limit else None))


def settings() -> AnalysisSettings:
    """This session's analysis settings (UMAP for viewing, silhouette on the 2-D map, alpha 0.3)."""
    return st.session_state.setdefault(SETTINGS, AnalysisSettings(projection="umap"))


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show an error the user caused as ``st.error`` (what is wrong, what to do) and stop the page."""
    try:
        yield
    except SlsvizError as exc:
        st.error(str(exc))
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


def current_workspace(splits: tuple[str, ...] = ()) -> Workspace:
    """The workspace of this session's selection, with ``splits``' features ready (progress shown)."""
    with user_errors():
        ws = workspace(selection())
        for split in splits:
            ws.bank(split, progress=ProgressBar(f"Features of the {split} split, all blocks in one pass"))
    return ws
