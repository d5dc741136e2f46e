"""The Compare page: every criterion's pick beside the oracle, and the oracle following its tolerance."""

from __future__ import annotations

from pathlib import Path

from slsviz.pruning.accuracy import oracle_depth


def test_the_compare_page_shows_every_criterion_and_follows_the_oracle_tolerance(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from slsviz.study import comparison
    from slsviz.app import ui
    from slsviz.study import Selection

    selection = Selection(data="digits", device="cpu", limit=60)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=600)
    at.session_state[ui.SELECTION] = selection
    at.switch_page("pages/4_Compare.py").run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert len(table) == 11 and table["label"].iloc[0].startswith("SLS (the paper's")
    val = ui.study(selection).depths.head_refit_accuracy("val")
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

    # The baseline's own computation is tested from the command line (test_cli_commands); here, what the page shows.
    def baseline(study, depth, **_):
        return {"name": "depgraph", "label": f"DepGraph width pruning at the FLOPs of depth {depth}", "depth": depth,
                "ratio": 0.4, "heads": [4] * 12, "mlp_hidden": [920] * 12, "flops": 10**9, "target_flops": 10**9,
                "accuracy_as_is": 0.5, "accuracy_head_refit": 0.8, "images_per_s": 50.0,
                "sls_images_per_s_same_rounds": 60.0, "depth_images_per_s_same_rounds": [100.0 - d for d in range(12)],
                "bytes_per_task": 2**24}

    monkeypatch.setattr(comparison, "depgraph_row", baseline)
    at.number_input(key="slsviz.compare.resamples").set_value(0).run()
    at.checkbox(key="slsviz.compare.depgraph").check().run()
    assert not at.exception and not at.error
    depgraph = next(m for m in at.metric if m.label == "DepGraph: test acc., head re-fit")
    assert depgraph.value == "80.00%" and "vs SLS" in depgraph.delta
    assert len(at.get("plotly_chart")) == 3  # the accuracy-throughput chart with the DepGraph point, then the two
