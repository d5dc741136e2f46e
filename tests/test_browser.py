"""End to end in a real headless Chromium: the app started exactly as the README starts it.

``SLSVIZ_LIMIT`` makes the default a quick look (few images per split). With ``SLSVIZ_SCREENSHOTS=1``
the page screenshots are written to ``assets/screenshots/`` for the README's tour.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import CHROMIUM, CHROMIUM_ARGS, free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it)"),
]
LONG = 300_000  # ms: features, maps and benchmarks on a 2-core CPU


@pytest.fixture(scope="module")
def app_url():
    port = free_port()
    env = {**os.environ, "SLSVIZ_LIMIT": "80"}
    proc = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_healthy(url):
            pytest.fail("the app did not start within 120 s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser):
    return browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True).new_page()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = ROOT / "assets" / "screenshots" if os.environ.get("SLSVIZ_SCREENSHOTS") else tmp_path_factory.mktemp("shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0
    assert "Traceback" not in page.inner_text("body")


def test_1_home_loads_the_default(app_url, page, shots):
    page.goto(app_url)
    page.get_by_text("Trainable (adapters + head)").wait_for(timeout=LONG)
    body = page.inner_text("body")
    assert "Blocks" in body and "12" in body and "mnist5k" in body and "convpass" in body
    links = page.get_by_test_id("stSidebarNavLink").all_inner_texts()  # each: its icon's name, then its title
    titles = ["Model", "Layers", "Prune & benchmark", "Export", "Compare criteria", "Tasks"]
    assert len(links) == 6 and all(link.strip().endswith(title) for link, title in zip(links, titles)), links
    assert page.get_by_text("Deploy", exact=True).count() == 0  # toolbarMode = viewer
    _no_exception(page)
    page.screenshot(path=str(shots / "1_home.png"), full_page=True)


def test_2_layers_maps_render(app_url, page, shots):
    page.goto(f"{app_url}/Layers")
    page.get_by_text("SLS recommends keeping").wait_for(timeout=LONG)
    page.get_by_text("Every block").wait_for(timeout=LONG)
    page.locator(".js-plotly-plot").nth(2).wait_for(timeout=LONG)
    assert page.locator(".js-plotly-plot").count() >= 3  # curves, all blocks, one block
    _no_exception(page)
    page.screenshot(path=str(shots / "2_layers.png"), full_page=True)
    # dragging across the large map picks its points and shows their images
    chart = page.locator(".js-plotly-plot").nth(2)
    chart.scroll_into_view_if_needed()
    box = chart.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + 0.02 * box["width"], box["y"] + 0.02 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.98 * box["width"], box["y"] + 0.98 * box["height"], steps=10)
    page.mouse.up()
    page.get_by_text("selected;").wait_for(timeout=LONG)
    page.wait_for_timeout(2000)
    assert page.get_by_text("#").count() >= 6  # captions "#<index>, <class>" under the thumbnails


def _metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']", has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text()


def test_3_depth_slider_updates_accuracy_and_throughput(app_url, page, shots):
    page.goto(f"{app_url}/Prune_and_benchmark")
    page.get_by_text("Accuracy against throughput, every depth").wait_for(timeout=LONG)
    page.locator(".js-plotly-plot").first.wait_for(timeout=LONG)
    before = (_metric(page, "GFLOPs / image"), _metric(page, "Throughput (batch 1)"), _metric(page, "Accuracy, head re-fit"))
    slider = page.locator("[data-testid='stSlider'] input[type='range']").first
    slider.focus()
    start = int(slider.input_value())
    key = "ArrowLeft" if start > 2 else "ArrowRight"
    for _ in range(2):
        page.keyboard.press(key)
    page.wait_for_function(
        "([label, old]) => { const m = [...document.querySelectorAll(\"[data-testid='stMetric']\")]"
        ".find(e => e.innerText.includes(label)); return m && !m.innerText.includes(old); }",
        arg=["GFLOPs / image", before[0]], timeout=LONG)
    page.wait_for_timeout(1500)
    after = (_metric(page, "GFLOPs / image"), _metric(page, "Throughput (batch 1)"), _metric(page, "Accuracy, head re-fit"))
    assert after[0] != before[0] and after[1] != before[1]
    _no_exception(page)
    page.screenshot(path=str(shots / "3_prune.png"), full_page=True)


def test_4_export_downloads_the_json(app_url, page, shots, tmp_path):
    page.goto(f"{app_url}/Export")
    button = page.get_by_role("button", name="Configuration (JSON)")
    button.wait_for(timeout=LONG)
    with page.expect_download(timeout=LONG) as download:
        button.click()
    path = tmp_path / "config.json"
    download.value.save_as(path)
    config = json.loads(path.read_text())
    for key in ("schema", "backbone", "petl", "task", "depth", "num_layers", "alpha", "metric", "projection",
                "scores", "results", "environment"):
        assert key in config
    assert config["schema"] == "slsviz-config/1"
    page.get_by_text("Task checkpoint, kept blocks only").wait_for(timeout=LONG)
    page.get_by_text("Import", exact=True).wait_for(timeout=LONG)
    _no_exception(page)
    page.screenshot(path=str(shots / "4_export.png"), full_page=True)


def test_4b_compare_shows_every_criterion_beside_the_oracle(app_url, page, shots):
    page.goto(f"{app_url}/Compare")
    page.get_by_text("The oracle keeps").wait_for(timeout=LONG)
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=LONG)  # the score curves and the CKA heatmap
    body = page.inner_text("body")
    for criterion in ("SLS (the paper's: t-SNE silhouette)", "kNN accuracy", "Block Influence", "linear CKA", "oracle"):
        assert criterion in body, criterion
    _no_exception(page)


def test_4c_tasks_opens_a_sweeps_results(app_url, page, shots, tmp_path):
    from helpers import tiny_digits_tasks

    from slsviz.sweep import run_sweep, spec_from_dict

    folder = tiny_digits_tasks(tmp_path, ("convpass", "lora"))
    tasks = [{"name": f"digits-{m}", "task": f"{m}.safetensors"} for m in ("convpass", "lora")]
    spec = spec_from_dict({"defaults": {"model": "vit_tiny_patch16_224", "checkpoint": "tiny.safetensors", "img_size": 32,
                                        "limit": 40, "device": "cpu"}, "tasks": tasks,
                           "criteria": ["sls_raw", "block_influence", "oracle"]}, base=folder)
    run_sweep(spec, folder / "out", progress=False)
    page.goto(f"{app_url}/Tasks")
    page.get_by_text("No sweep results in sweep-out yet").wait_for(timeout=LONG)  # said as information ...
    page.get_by_text("MiB for 8 tasks").wait_for(timeout=LONG)  # ... over the shipped example's results
    box = page.get_by_label("Results folder")
    box.fill(str(folder / "out"))
    box.press("Enter")
    page.get_by_text("MiB for 2 tasks").wait_for(timeout=LONG)  # the storage of this sweep's tasks
    page.locator(".js-plotly-plot").first.wait_for(timeout=LONG)
    body = page.inner_text("body")
    assert "Which criterion to trust" in body and "Storage as tasks grow" in body and "No sweep results" not in body
    _no_exception(page)
    page.screenshot(path=str(shots / "5_tasks.png"), full_page=True)


def _settled(page) -> None:
    """Wait until the script has finished its run (Streamlit's status widget says when it is running)."""
    page.wait_for_function("!document.querySelector(\"[data-testid='stStatusWidget']\")?.innerText?.includes('Running')",
                           timeout=LONG)
    page.wait_for_timeout(300)


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the select box ``label``: open it, type to filter, take the match; checked after the
    box loses focus (an unmatched text reverts), tried again if the list was not ready."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label).locator("input")
    for _ in range(3):
        box.click()
        page.keyboard.press("ArrowDown")  # open the list
        page.wait_for_timeout(300)
        box.fill(option)
        try:
            page.get_by_role("option", name=option, exact=True).wait_for(timeout=10_000)
        except Exception:  # the list closed while typing: open it again
            continue
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        page.wait_for_timeout(300)
        if box.input_value() == option:
            return
    raise AssertionError(f"could not choose {option!r} in {label!r}: it shows {box.input_value()!r}")


def _go(page, title: str) -> None:
    """Follow the sidebar link, as a user does (a new URL would start a new session)."""
    page.get_by_test_id("stSidebarNavLink").filter(has_text=title).first.click()


def test_5_four_sessions_at_once_each_see_their_own(app_url, browser, tmp_path):
    """Two datasets x two depths in four browser sessions driven side by side; each sees its own choices,
    and its numbers are those of the same selection studied alone."""
    from slsviz.study import Selection, Study

    limit = int(os.environ.get("SLSVIZ_BROWSER_LIMIT", "80"))
    plans = [("mnist5k", 3), ("mnist5k", 9), ("digits", 4), ("digits", 10)]
    expected = {}
    for dataset in ("mnist5k", "digits"):  # one session alone, in this process: the reference numbers
        study = Study.open(Selection(data=None if dataset == "mnist5k" else dataset, limit=limit))
        table = study.depths.table()
        flops = {d: r.flops_per_image for d, r in study.timing.benchmarks(time_budget_s=0.01).items()}
        expected[dataset] = {d: (f"{flops[d] / 1e9:.3f}", f"{100 * table.iloc[d - 1]['accuracy_as_is']:.2f}%",
                                 f"{100 * table.iloc[d - 1]['accuracy_head_refit']:.2f}%") for d in (3, 4, 9, 10)}
    pages = [browser.new_context(viewport={"width": 1400, "height": 1000}).new_page() for _ in plans]
    for page in pages:
        page.goto(app_url)
    for page, (dataset, _) in zip(pages, plans):
        page.get_by_text("Trainable (adapters + head)").wait_for(timeout=LONG)
        if dataset != "mnist5k":
            _settled(page)
            page.get_by_text("Load another backbone, task or dataset").click()
            _choose(page, "Dataset", dataset)
            box = page.get_by_label("Images per split (0: all)").first
            box.fill(str(limit))
            box.press("Tab")  # commit the value without submitting the form (Enter would)
            page.get_by_test_id("stFormSubmitButton").filter(has_text="Load").click()
    for page, (dataset, _) in zip(pages, plans):
        page.get_by_text(f"**Dataset** {dataset}".replace("**", "")).first.wait_for(timeout=LONG)
        _go(page, "Prune & benchmark")
    for page in pages:
        page.get_by_text("Accuracy against throughput, every depth").wait_for(timeout=LONG)
    for page, (_, depth) in zip(pages, plans):  # all four sliders move before any answer is read
        slider = page.locator("[data-testid='stSlider'] input[type='range']").first
        slider.focus()
        page.keyboard.press("Home")
        for _ in range(depth - 1):
            page.keyboard.press("ArrowRight")
    for page, (dataset, depth) in zip(pages, plans):
        gflops, as_is, refit = expected[dataset][depth]
        page.wait_for_function(
            "([label, want]) => { const m = [...document.querySelectorAll(\"[data-testid='stMetric']\")]"
            ".find(e => e.innerText.includes(label)); return m && m.innerText.includes(want); }",
            arg=["GFLOPs / image", gflops], timeout=LONG)
        page.wait_for_timeout(500)
        assert _metric(page, "Accuracy as is (task head)") == as_is, (dataset, depth)
        assert _metric(page, "Accuracy, head re-fit") == refit, (dataset, depth)
        _no_exception(page)
    for page in pages:
        _go(page, "Export")
    for page, (dataset, depth) in zip(pages, plans):
        page.get_by_role("button", name="Configuration (JSON)").wait_for(timeout=LONG)
        field = page.get_by_test_id("stNumberInput").filter(has_text="Blocks kept").locator("input")
        assert field.input_value() == str(depth), (dataset, depth)
        _go(page, "Model")
        page.get_by_text("Trainable (adapters + head)").wait_for(timeout=LONG)
        assert f"Dataset {dataset}" in page.inner_text("body")
        _no_exception(page)
