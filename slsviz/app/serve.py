"""``slsviz app [streamlit options]`` (``python -m slsviz.app.serve``; ``make run``): the app's router
(:mod:`slsviz.app.router`, what ``streamlit run app.py`` runs) under the app's Streamlit settings
(``.streamlit/config.toml``, shipped with the package), from any folder, with the default's work
started when the server starts rather than when the first page opens.

Streamlit runs a page only when a browser asks for it, so a new user would wait for the imports,
the backbone and the first features after opening the app. Here a daemon thread opens the embedded
default (the same :func:`slsviz.app.ui.study` cache the pages use, so nothing is computed twice)
and queues what the Layers and Prune pages will ask for (every first answer, then the exact ones),
while the server starts and the user's browser connects. ``SLSVIZ_PREFETCH=0`` leaves it all to the pages.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from slsviz.app import router

APP = router.entry()
THREAD = "slsviz-warm-default"
log = logging.getLogger(__name__)


class _NotThisThread(logging.Filter):
    """Drops Streamlit's "missing ScriptRunContext" warning for the warm-up thread, which has no page by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return threading.current_thread().name != THREAD


def warm_default() -> list[Future]:
    """Open the embedded default and queue the Layers and Prune pages' work in the background; the
    futures of that work (none when ``SLSVIZ_PREFETCH=0``). Raises what stops it from opening."""
    # The heavy imports (torch, timm) happen here, beside the server's start.
    from slsviz.app import ui
    from slsviz.layers.analysis import AnalysisSettings
    from slsviz.study import VISIT

    try:
        if not ui.prefetching():
            return []
        study = ui.study(ui.default_selection())
        return [study.prefetch(page, AnalysisSettings()) for page in VISIT]  # every page's first answer first
    finally:
        # What is loaded by now (torch, timm, scikit-learn, the default model) lives as long as the
        # server: out of the collector's full passes, which walk it with the GIL held (~0.3 s here).
        gc.freeze()


def warm_in_background() -> None:
    """:func:`warm_default` beside the server's start; a failure is logged, and the pages open the default
    again and show the user what is wrong."""
    try:
        warm_default()
    except Exception:
        log.exception("Could not open the default model ahead of the pages")


def settings_file() -> Path:
    """The app's Streamlit settings: the checkout's ``.streamlit/config.toml``, else the installed copy."""
    return router.shipped(".streamlit/config.toml", "streamlit_config/config.toml")


def settings_options() -> list[str]:
    """:func:`settings_file` as Streamlit command-line options (``--server.port=8501``, ...), which hold
    in any folder; Streamlit reads the file itself only from the folder it starts in."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the reader Streamlit itself depends on
        import toml as tomllib
    settings = tomllib.loads(settings_file().read_text(encoding="utf-8"))
    return [f"--{section}.{key}={str(value).lower() if isinstance(value, bool) else value}"
            for section, options in settings.items() for key, value in options.items()]


def main(argv: list[str] | None = None) -> int:
    """Start the app as ``streamlit run`` of the router with the app's settings, then ``argv``
    (Streamlit's options, which win)."""
    from streamlit.web import cli

    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(_NotThisThread())
    threading.Thread(target=warm_in_background, name=THREAD, daemon=True).start()
    options = [*settings_options(), *(sys.argv[1:] if argv is None else argv)]
    try:  # click's own handling: a bad option is one line and exit code 2, never a traceback
        cli.main(["run", str(APP), *options], prog_name="streamlit")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


def run(argv: list[str] | None = None) -> None:
    """:func:`main`, then leave the process: ``slsviz app`` and ``python -m slsviz.app.serve``."""
    code = main(argv)
    # The server has stopped (Ctrl-C, SIGTERM). A page script still computing, or waiting for the
    # background's work, would keep the process alive until it ends (a minute on a first visit), and
    # torch's worker threads abort the interpreter's normal exit: leave now, as the daemon work does.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
