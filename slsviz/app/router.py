"""The app's router: every page, in order. ``app.py`` (the repository's entry, ``streamlit run app.py``)
and ``slsviz app`` (an installed slsviz, from any folder) both run it, so the two are one app.

Pages are named relative to the entry script, as Streamlit wants: the entry is ``app.py`` beside the
repository's ``pages/`` in a checkout, and this file beside ``slsviz/app/pages/`` once installed
(setup.py maps one onto the other, as it does ``assets/``).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

_PACKAGE = Path(__file__).resolve().parents[1]
_CHECKOUT = _PACKAGE.parent


def shipped(checkout: str, installed: str) -> Path:
    """A file or folder the repository keeps at its top (``checkout``, e.g. ``.streamlit/config.toml``),
    or, once installed, its place inside the package (``installed``, relative to ``slsviz/``)."""
    if (_CHECKOUT / "app.py").is_file() and (_CHECKOUT / checkout).exists():
        return _CHECKOUT / checkout
    return _PACKAGE / installed


def entry() -> Path:
    """The script Streamlit runs: the checkout's ``app.py``, else this file (pages/ beside each)."""
    return shipped("app.py", "app/router.py")


def run() -> None:
    """Configure the page once and run the page the browser asked for."""
    pages = Path("pages")
    st.set_page_config(page_title="slsviz", layout="wide")
    st.navigation([
        st.Page(pages / "0_Model.py", title="Model", icon=":material/view_in_ar:", default=True),
        st.Page(pages / "1_Layers.py", title="Layers", icon=":material/stacked_line_chart:", url_path="Layers"),
        st.Page(pages / "2_Prune_and_benchmark.py", title="Prune & benchmark", icon=":material/content_cut:",
                url_path="Prune_and_benchmark"),
        st.Page(pages / "3_Export.py", title="Export", icon=":material/download:", url_path="Export"),
        st.Page(pages / "4_Compare.py", title="Compare criteria", icon=":material/compare_arrows:", url_path="Compare"),
        st.Page(pages / "5_Tasks.py", title="Tasks", icon=":material/table_chart:", url_path="Tasks"),
    ]).run()


if __name__ == "__main__":  # `streamlit run .../slsviz/app/router.py`: what an installed `slsviz app` runs
    run()
