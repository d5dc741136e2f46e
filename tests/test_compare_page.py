"""The Compare page: every criterion's pick beside the oracle, and the oracle following its tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slsviz import defaults
from slsviz.pruning.accuracy import oracle_depth
from slsviz.study.criteria import depth_at


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
    # every criterion (Taylor where the task's head fits the data: it reads the task's loss) and the oracle
    assert len(table) == 13 + ui.study(selection).loaded.head_applies and table["label"].iloc[0].startswith("SLS (the paper's")
    assert table.set_index("label").loc["reverse order (the top blocks dropped)", "depth"] == 9
    val = ui.study(selection).depths.head_refit_accuracy("val")
    assert f"The oracle keeps {oracle_depth(val, 0.01)} of 12 blocks" in at.success[0].value
    assert oracle_depth(val, 0.05) != oracle_depth(val, 0.01)  # so the change below must show
    assert len(at.get("plotly_chart")) == 2  # the score curves and the CKA heatmap

    at.number_input(key="slsviz.compare.oracle_within").set_value(5.0).run()
    assert not at.exception
    assert f"The oracle keeps {oracle_depth(val, 0.05)} of 12 blocks" in at.success[0].value
    assert at.dataframe[0].value["depth"].iloc[-1] == oracle_depth(val, 0.05)

    # the criterion the shipped example sweep found nearest the oracle, at the setting calibrated on its tasks
    offer = ui.calibrated_offer(defaults.SWEEP_OUT, ui.study(selection))
    at.checkbox(key="slsviz.compare.calibrated").check().run()
    assert not at.exception and not at.error and offer is not None
    row = at.dataframe[0].value.iloc[-2]  # just above the oracle
    assert f"calibrated on sweep {offer.sweep} ({offer.tasks} tasks)" in row["label"]
    rows = {r["name"]: r for r in ui.study(selection).compare(oracle_within=0.05, calibrated=offer).rows}
    assert row["depth"] == depth_at(offer.criterion, np.array(rows[offer.criterion]["scores"], float), offer.setting)

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
