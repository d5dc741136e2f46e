"""The app serves many sessions from one process: no engine call may change process-wide state."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_backbone

from slsviz.data import Preprocess, load_digits
from slsviz.models.petl import PetlConfig
from slsviz.models.task import build_task_model
from slsviz.models.train import Recipe, train_task
from slsviz.pruning.bench import benchmark_models
from slsviz.storage import atomic_path


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    pytest.skip("no /proc/self/status here")


def test_benchmarks_leave_the_process_peak_memory_alone():
    big = np.ones(64 * 2**20, np.uint8)  # lift the process's peak RSS above what a tiny benchmark uses
    del big
    before = _peak_rss()
    model = random_backbone("vit_tiny_patch16_224", img_size=32, depth=2).model
    timed = benchmark_models({2: model}, 32, batch_size=1, time_budget_s=0.05, rounds=2, warmup_steps=1)
    assert _peak_rss() >= before
    assert timed[2].peak_memory_bytes > 0 and "RSS" in timed[2].memory_kind


def test_writing_a_file_never_touches_the_umask(tmp_path, monkeypatch):
    def no_umask(mask):
        raise AssertionError("os.umask changes the umask of every thread in the process")

    monkeypatch.setattr(os, "umask", no_umask)
    with atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "x.txt").read_text() == "x"
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~int(
        next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("Umask:")), 8)


def test_training_leaves_torchs_global_generator_as_it_was():
    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=2)
    model = build_task_model(backbone, PetlConfig("convpass"), 10)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    train_task(model, load_digits(), Preprocess(32, backbone.mean, backbone.std), Recipe(epochs=1, batch_size=16, seed=7),
               limit=32)
    assert torch.equal(torch.get_rng_state(), state)


def test_training_is_still_seeded_by_its_recipe():
    backbone = random_backbone("vit_tiny_patch16_224", img_size=32, depth=2)
    runs = []
    for outer_seed in (0, 99):
        torch.manual_seed(outer_seed)  # whatever the caller's generator holds
        model = build_task_model(backbone, PetlConfig("convpass"), 10)
        result = train_task(model, load_digits(), Preprocess(32, backbone.mean, backbone.std),
                            Recipe(epochs=1, batch_size=16, seed=7), limit=32)
        runs.append(result.history[0]["loss"])
    assert runs[0] == runs[1]
