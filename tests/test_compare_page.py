"""The Compare page: every criterion's pick beside the oracle, and the oracle following its tolerance."""

from __future__ import annotations

from pathlib import Path

from slsviz.pruning.accuracy import oracle_depth


def test_the_compare_page_shows_every_criterion_and_follows_the_oracle_tolerance():
    from streamlit.testing.v1 import AppTest

    from slsviz.app import ui
    from slsviz.study import Selection

    selection = Selection(data="digits", device="cpu", limit=60)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=600)
    at.session_state[ui.SELECTION] = selection
    at.switch_page("pages/4_Compare.py").run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert len(table) == 11 and table["label"].iloc[0].startswith("SLS (the paper's")
    val = ui.study(selection).accuracy_head_refit("val")
    assert f"The oracle keeps {oracle_depth(val, 0.01)} of 12 blocks" in at.success[0].value
    assert oracle_depth(val, 0.05) != oracle_depth(val, 0.01)  # so the change below must show
    assert len(at.get("plotly_chart")) == 2  # the score curves and the CKA heatmap

    at.number_input(key="slsviz.compare.oracle_within").set_value(5.0).run()
    assert not at.exception
    assert f"The oracle keeps {oracle_depth(val, 0.05)} of 12 blocks" in at.success[0].value
    assert at.dataframe[0].value["depth"].iloc[-1] == oracle_depth(val, 0.05)

    at.number_input(key="slsviz.compare.resamples").set_value(2).run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert {"stability_mode", "stability_low", "stability_high"} <= set(table)
    assert (table["stability_low"].dropna() <= table["stability_high"].dropna()).all()

    at.number_input(key="slsviz.compare.resamples").set_value(0).run()
    at.checkbox(key="slsviz.compare.depgraph").check().run()
    assert not at.exception and not at.error
    depgraph = next(m for m in at.metric if m.label == "DepGraph: test acc., head re-fit")
    assert depgraph.value.endswith("%") and "vs SLS" in depgraph.delta
    assert len(at.get("plotly_chart")) == 3  # the accuracy-throughput chart with the DepGraph point, then the two
