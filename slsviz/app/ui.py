"""Streamlit glue shared by the pages: the cached studies, session state, progress bars, errors.

Widget and state keys are namespaced ``slsviz.<page>.<name>``; keys that several pages share are
the constants below.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import streamlit as st

from slsviz.errors import SlsvizError
from slsviz.layers.analysis import AnalysisSettings
from slsviz.study import Selection, Study

SELECTION = "slsviz.selection"  # what this session loaded (a Selection)
SETTINGS = "slsviz.settings"  # how the Layers page maps and scores (AnalysisSettings)
DEPTH = "slsviz.depth"  # the SLS recommendation under SETTINGS, once the Layers page has it
CHOSEN = "slsviz.prune.chosen"  # the depth chosen on the Prune page (Export starts there)


@st.cache_resource(show_spinner="Loading backbone, task and dataset...", max_entries=4)
def study(selection: Selection) -> Study:
    """One study per selection, shared by sessions; its model is never mutated."""
    return Study.open(selection)


def selection() -> Selection:
    """This session's selection (the embedded default until the user loads something else).

    ``SLSVIZ_LIMIT`` (images per split) makes the default a quick look, e.g. for end-to-end tests.
    """
    limit = os.environ.get("SLSVIZ_LIMIT")
    return st.session_state.setdefault(SELECTION, Selection(limit=int(limit) if limit else None))


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


def current_study(splits: tuple[str, ...] = ()) -> Study:
    """The study of this session's selection, with ``splits``' features ready (progress shown)."""
    with user_errors():
        current = study(selection())
        for split in splits:
            current.bank(split, progress=ProgressBar(f"Features of the {split} split, all blocks in one pass"))
    return current


def chosen_depth(current: Study) -> int:
    """The depth this session chose on the Prune page, else the SLS recommendation."""
    with user_errors():
        if DEPTH not in st.session_state:
            st.session_state[DEPTH] = int(current.recommend(settings()).depth_)
    return min(int(st.session_state.get(CHOSEN, st.session_state[DEPTH])), current.num_layers)
