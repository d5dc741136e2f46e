"""The command line: subcommands listed, JSON on stdout, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slsviz.cli import main


def test_help_lists_the_subcommands():
    out = subprocess.run([sys.executable, "-m", "slsviz", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("info", "backbone", "data", "train"):
        assert command in out


def test_data_prints_the_split(capsys):
    assert main(["data", "--data", "digits", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"] == {"train": 800, "val": 200, "test": 797}
    assert out["split_info"]["seed"] == 3 and out["num_classes"] == 10


def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["data", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slsviz: error:") and "\n" not in err and "missing" in err


def test_unavailable_device_is_a_clear_error(capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    assert main(["info", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_info_names_device_and_versions(capsys):
    assert main(["info", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"].startswith("cpu") and out["torch"] and out["timm"]
