"""`pip install .` (not editable) gives a package that runs everything from any folder: its shipped
default task, the app (router, pages and settings inside the package), a sweep and a comparison."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers import CHROMIUM, CHROMIUM_ARGS, free_port, tiny_digits_tasks, wait_healthy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the tracked files, installed into a folder of its own."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    source = tmp_path_factory.mktemp("source")
    for name in tracked.stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    wheels, target = tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(wheels)],
                   check=True, capture_output=True)
    wheel = next(wheels.glob("slsviz-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True)
    return wheel, target


def _env(target: Path) -> dict[str, str]:
    """The installed copy on the path, not the checkout; no hub."""
    return {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def _slsviz(target: Path) -> list[str]:
    """The installed console script (pip writes it beside the package's folder)."""
    return [sys.executable, str(target / "bin" / "slsviz")]


def test_the_wheel_carries_every_package_the_app_and_the_default_task(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"slsviz/assets/default_task.safetensors", "slsviz/assets/default_task.json",
            "slsviz/schemas/config.schema.json", "slsviz/schemas/sweep.schema.json", "slsviz/app/router.py",
            "slsviz/streamlit_config/config.toml"} <= names
    assert {f"slsviz/app/pages/{p.name}" for p in (ROOT / "pages").glob("*.py")} <= names
    # Every engine package, found: a sub-package added tomorrow cannot be left out by a hand list.
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "slsviz").rglob("__init__.py")}
    assert {f"{p}/__init__.py" for p in packages} <= names, sorted(packages)


def test_the_installed_package_evaluates_its_default_task_from_another_folder(installed, tmp_path):
    _, target = installed
    env = _env(target)
    where = subprocess.run([sys.executable, "-c", "import slsviz.defaults as d; print(d.__file__); print(d.TASK_PATH)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(target) for p in where), where  # the installed copy, not the checkout
    done = subprocess.run([sys.executable, "-m", "slsviz", "evaluate", "--limit", "8", "--device", "cpu"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert Path(result["task"]).is_relative_to(target) and result["num_images"] == 8


def test_the_installed_cli_sweeps_and_compares_from_another_folder(installed, tmp_path):
    _, target = installed
    tasks = tiny_digits_tasks(tmp_path, ("convpass",))
    spec = {"name": "tiny", "defaults": {"model": "vit_tiny_patch16_224", "checkpoint": "tiny.safetensors",
                                         "img_size": 32, "limit": 40, "device": "cpu"},
            "tasks": [{"name": "digits-convpass", "task": "convpass.safetensors"}],
            "criteria": ["sls_raw", "block_influence", "oracle"], "alphas": [0.3], "seeds": [0],
            "measure": {"accuracy": ["head_refit"]}}
    (tasks / "spec.yaml").write_text(yaml.safe_dump(spec))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    swept = subprocess.run([*_slsviz(target), "sweep", str(tasks / "spec.yaml"), "--backend", "local", "--out", "out"],
                           cwd=elsewhere, env=_env(target), capture_output=True, text=True)
    assert swept.returncode == 0, swept.stderr[-2000:]
    assert json.loads(swept.stdout)["finished"] == ["digits-convpass"] and (elsewhere / "out" / "results.csv").is_file()
    compared = subprocess.run([*_slsviz(target), "compare", "--model", "vit_tiny_patch16_224", "--checkpoint",
                               str(tasks / "tiny.safetensors"), "--img-size", "32", "--task",
                               str(tasks / "convpass.safetensors"), "--limit", "60", "--seconds", "0.05",
                               "--device", "cpu", "--out", "cmp"],
                              cwd=elsewhere, env=_env(target), capture_output=True, text=True)
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert (elsewhere / "cmp" / "compare.json").is_file()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it)")
def test_the_installed_app_starts_from_another_folder_and_shows_its_pages(installed, tmp_path):
    from playwright.sync_api import sync_playwright

    _, target = installed
    port = free_port()
    env = {**_env(target), "SLSVIZ_PREFETCH": "0", "SLSVIZ_LIMIT": "8", "SLSVIZ_CACHE_DIR": str(tmp_path / "cache")}
    # What `make run` passes, and no more: the app's own settings (port, address, theme) come with the package.
    server = subprocess.Popen([*_slsviz(target), "app", "--server.port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(url), "the installed app did not start within 120 s"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            page.get_by_text("Straightforward Layer-wise Pruning").wait_for(timeout=120_000)
            page.get_by_text("Trainable (adapters + head)").wait_for(timeout=300_000)  # the shipped task's card
            page.get_by_text("Next: see every layer").wait_for(timeout=60_000)  # a link to another page, resolved
            links = page.get_by_test_id("stSidebarNavLink").all_inner_texts()
            assert len(links) == 6 and links[-1].strip().endswith("Tasks"), links
            assert page.get_by_text("Deploy", exact=True).count() == 0  # the shipped toolbarMode = viewer
            assert "has encountered an error" not in page.inner_text("body")
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
