"""`make run` (slsviz.app.serve): the default's work starts with the server, in the cache the pages use."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from slsviz.app import serve, ui
from slsviz.layers.analysis import AnalysisSettings
from slsviz.study import Study


@pytest.fixture(autouse=True)
def no_freeze(monkeypatch):
    """The server freezes what it loaded; the test process must not keep every object it made so far."""
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    return frozen


def test_the_server_start_opens_the_default_the_pages_get_and_queues_their_work(monkeypatch, no_freeze):
    monkeypatch.setenv("SLSVIZ_PREFETCH", "1")
    monkeypatch.setenv("SLSVIZ_LIMIT", "24")
    queued = []
    monkeypatch.setattr(Study, "prefetch", lambda self, page, settings=AnalysisSettings(): queued.append((self, page, settings)) or page)
    # the futures of the queued work, for whoever waits: every page's first answer, then the exact recommendation
    assert serve.warm_default() == ["first", "prune", "layers"]
    assert [(page, settings) for _, page, settings in queued] == [(page, AnalysisSettings()) for page in ("first", "prune", "layers")]
    opened = queued[0][0]
    assert ui.study(ui.default_selection()) is opened  # what a page opens: the same study, not a second one
    # ...however it is asked for: a page passes the session's content stamp (None for the default). Streamlit
    # keys its cache on the arguments as passed, and two call forms made two studies, each computing all.
    assert ui.study(ui.default_selection(), None) is opened and ui.study(ui.default_selection(), content=None) is opened
    assert opened.features.limit == 24
    assert no_freeze == [1]  # what is loaded by now is kept out of full collections


def test_no_prefetch_means_nothing_opened_at_the_start(monkeypatch):
    monkeypatch.setenv("SLSVIZ_PREFETCH", "0")
    monkeypatch.setattr(ui, "study", lambda selection: (_ for _ in ()).throw(AssertionError("opened")))
    assert serve.warm_default() == []


def test_a_default_that_cannot_open_fails_the_warm_up_and_is_logged_beside_the_server(monkeypatch, caplog, no_freeze):
    """warm_default caught every exception and only logged it: a test patching it to fail could not fail."""
    monkeypatch.setenv("SLSVIZ_PREFETCH", "1")
    monkeypatch.setattr(ui, "study", lambda selection: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        serve.warm_default()
    assert no_freeze == [1]  # what was loaded is frozen all the same
    serve.warm_in_background()  # the server's thread: logs, the pages open it again and show what is wrong
    assert "Could not open the default model" in caplog.text and "disk gone" in caplog.text


def test_the_app_config_keeps_a_slider_move_free_of_full_garbage_collections():
    """Streamlit's collection after every run, fragment reruns included, held the GIL ~0.3 s in the app's
    process (torch, timm, scikit-learn loaded): most of a slider move. `make run` reads this file."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
    assert config["server"]["fileWatcherType"] == "none"


def test_the_apps_timing_per_depth_comes_from_the_environment(monkeypatch):
    from slsviz import defaults
    from slsviz.app import ui

    for value, expected in (("0.3", 0.3), ("", defaults.TIMING_S), ("fast", defaults.TIMING_S), ("-1", defaults.TIMING_S),
                            ("inf", defaults.TIMING_S)):
        monkeypatch.setenv("SLSVIZ_TIMING_S", value)
        assert ui.timing_s() == expected, value
