"""The Streamlit home page, driven by Streamlit's AppTest (no browser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from slsviz.device import describe_device, resolve_device

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.mark.integration
def test_home_loads_the_default_with_no_clicks():
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Blocks"] == "12"
    assert metrics["Images"] == "5000" and metrics["Classes"] == "10"
    assert describe_device(resolve_device("auto")) in at.info[0].value
