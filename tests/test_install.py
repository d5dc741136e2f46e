"""`pip install .` (not editable) gives a package that finds its shipped default task from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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


def test_the_wheel_carries_the_default_task_and_the_schema(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"slsviz/assets/default_task.safetensors", "slsviz/assets/default_task.json",
            "slsviz/schemas/config.schema.json"} <= names


def test_the_installed_package_evaluates_its_default_task_from_another_folder(installed, tmp_path):
    _, target = installed
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    where = subprocess.run([sys.executable, "-c", "import slsviz.defaults as d; print(d.__file__); print(d.TASK_PATH)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(target) for p in where), where  # the installed copy, not the checkout
    done = subprocess.run([sys.executable, "-m", "slsviz", "evaluate", "--limit", "8", "--device", "cpu"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert Path(result["task"]).is_relative_to(target) and result["num_images"] == 8
