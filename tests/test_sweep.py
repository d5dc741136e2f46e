"""Sweeps: the spec, both backends giving the same answers, failures recorded, finished tasks skipped."""

from __future__ import annotations

import functools
import json
import re
import signal

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import random_backbone, recommend_depth
from safetensors.torch import save_file

from slsviz.cli import main
from slsviz.data import load_digits
from slsviz.errors import SlsvizError
from slsviz.models.backbones import load_backbone
from slsviz.models.petl import PetlConfig
from slsviz.models.task import fit_task, save_task
from slsviz.models.train import Recipe
from slsviz.sweep import TaskEntry, load_spec, run_sweep, spec_from_dict

TINY = "vit_tiny_patch16_224"
CRITERIA = ["sls", "sls_raw", "sls_calinski_harabasz", "sls_davies_bouldin", "sls_probe", "knn_accuracy",
            "block_influence", "angular_distance", "cka_to_last", "oracle"]


@pytest.fixture(scope="module")
def tiny_tasks(tmp_path_factory):
    """A tiny 12-block backbone (32 px) and two tasks on digits (Convpass, LoRA), with a spec beside them."""
    folder = tmp_path_factory.mktemp("sweep")
    save_file(random_backbone(TINY, img_size=32, seed=0).model.state_dict(), str(folder / "tiny.safetensors"))
    backbone = load_backbone(TINY, folder / "tiny.safetensors", img_size=32)
    for method in ("convpass", "lora"):
        model, meta, _ = fit_task(backbone, load_digits(), PetlConfig(method), Recipe(epochs=1, batch_size=32), limit=64)
        save_task(folder / f"{method}.safetensors", model, meta)
    return folder


def _spec(folder, tasks=("convpass", "lora"), **extra) -> dict:
    return {"name": "tiny", "defaults": {"model": TINY, "checkpoint": "tiny.safetensors", "img_size": 32, "limit": 60,
                                         "device": "cpu"},
            "tasks": [{"name": f"digits-{m}", "task": f"{m}.safetensors"} for m in tasks],
            "criteria": CRITERIA, "alphas": [0.3, 0.6], "seeds": [0, 1], **extra}


def _write(folder, spec: dict, name: str = "spec.yaml"):
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return path


def _reports(out) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((out / "tasks").glob("*/report.json"))}


@pytest.mark.parametrize(("spec", "where"), [
    ({"tasks": []}, "tasks"),
    ({"tasks": [{"name": "a"}]}, "tasks[0]"),
    ({"tasks": [{"name": "a", "task": "x", "train": {"method": "lora", "epochs": 1}}]}, "tasks[0]"),
    ({"tasks": [{"name": "a", "train": {"method": "nope", "epochs": 1}}]}, "tasks[0].train.method"),
    ({"tasks": [{"name": "a", "task": "x"}], "criteria": ["sls", "vibes"]}, "criteria[1]"),
    ({"tasks": [{"name": "a", "task": "x", "colour": 1}]}, "tasks[0]"),
    ({"tasks": [{"name": "a/b", "task": "x"}]}, "tasks[0].name"),
])
def test_a_bad_spec_is_refused_with_where_and_why(spec, where):
    with pytest.raises(SlsvizError, match="invalid at " + re.escape(where) + ":"):
        spec_from_dict(spec)


def test_a_spec_reads_paths_from_its_folder_and_refuses_twin_names(tmp_path):
    spec = load_spec(_write(tmp_path, {"tasks": [{"name": "a", "task": "t.safetensors"},
                                                  {"name": "b", "train": {"method": "lora", "epochs": 2}}]}))
    assert spec.tasks[0].selection.task == str(tmp_path / "t.safetensors")
    assert spec.tasks[1].train.method == "lora" and spec.alphas == (0.3,) and "oracle" in spec.criteria
    with pytest.raises(SlsvizError, match="unique; a appear"):
        spec_from_dict({"tasks": [{"name": "a", "task": "x"}, {"name": "a", "task": "y"}]})
    with pytest.raises(SlsvizError, match="No sweep spec at"):
        load_spec(tmp_path / "missing.yaml")


@pytest.fixture(scope="module")
def local_run(tiny_tasks, tmp_path_factory):
    """Two tasks and one whose checkpoint is gone, two alphas, two seeds, every depth timed: swept here."""
    spec = load_spec(_write(tiny_tasks, _spec(tiny_tasks, tasks=("convpass", "gone", "lora"),
                                              measure={"benchmarks": True, "seconds": 0.02})))
    out = tmp_path_factory.mktemp("local-sweep") / "out"
    return spec, run_sweep(spec, out, backend="local", use_cache=False, progress=False)


def test_local_and_ray_backends_give_identical_answers(local_run, ray_cluster, tmp_path):
    spec, local = local_run
    on_ray = run_sweep(spec, tmp_path / "ray", backend="ray", use_cache=False, progress=False)
    assert local.finished == ["digits-convpass", "digits-lora"] and sorted(on_ray.finished) == local.finished
    assert [f["task"] for f in on_ray.failed] == [f["task"] for f in local.failed] == ["digits-gone"]

    a, b = _reports(local.out), _reports(tmp_path / "ray")
    assert a.keys() == b.keys() == {"digits-convpass", "digits-lora"}
    for name in a:
        assert [(p["name"], p["alpha"], p["seed"], p["depth"]) for p in a[name]["picks"]] == \
               [(p["name"], p["alpha"], p["seed"], p["depth"]) for p in b[name]["picks"]]
        for seed, by_criterion in a[name]["scores"].items():
            other = b[name]["scores"][seed]
            if seed == "oracle":
                np.testing.assert_allclose(by_criterion, other, rtol=0, atol=1e-9)
                continue
            assert by_criterion.keys() == other.keys()
            for criterion, scores in by_criterion.items():
                np.testing.assert_allclose(np.array(scores, float), np.array(other[criterion], float), rtol=0, atol=1e-9,
                                           equal_nan=True, err_msg=f"{name} seed {seed} {criterion}")
        # The SLS rule re-implemented independently, on the scores of every seed and alpha.
        for pick in a[name]["picks"]:
            if pick["name"] == "sls":
                scores = a[name]["scores"][str(pick["seed"])]["sls"]
                assert pick["depth"] == recommend_depth(scores, pick["alpha"])
    measured = ["images_per_s", "images_per_s_full"]  # timings differ from run to run; everything else is equal
    table = pd.read_csv(local.out / "results.csv")
    pd.testing.assert_frame_equal(table.drop(columns=measured), pd.read_csv(tmp_path / "ray" / "results.csv").drop(
        columns=measured), check_exact=False, atol=1e-9)
    sweep = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert sweep["where"]["backend"] == "ray" and [t["status"] for t in sweep["tasks"]] == ["finished", "failed", "finished"]


def test_the_results_table_has_a_row_per_task_criterion_alpha_and_seed(local_run):
    spec, run = local_run
    table = pd.read_csv(run.out / "results.csv")
    pd.testing.assert_frame_equal(pd.read_parquet(run.out / "results.parquet"), run.results, check_dtype=False)
    sls_variants, others = 5, 4  # per alpha and seed; per seed; and the oracle once
    assert len(table) == 2 * (sls_variants * 2 * 2 + others * 2 + 1)
    assert {"task", "criterion", "alpha", "seed", "depth", "num_layers", "accuracy_as_is", "accuracy_head_refit",
            "accuracy_head_refit_full", "flops", "bytes_sls", "bytes_pruned", "shared_backbone_bytes"} <= set(table.columns)
    full = table[table.depth == 12]
    assert (full.accuracy_head_refit == full.accuracy_head_refit_full).all() and (full.flops == full.flops_full).all()
    assert (table.bytes_sls < table.bytes_pruned).all() and (table.images_per_s > 0).all()
    report = json.loads((run.out / "tasks" / "digits-lora" / "report.json").read_text())
    assert report["model"]["method"] == "lora" and len(report["depth_table"]) == 12 and len(report["benchmarks"]) == 12
    assert set(report["scores"]["0"]) == set(CRITERIA) - {"oracle"} and len(report["scores"]["oracle"]) == 12


def test_a_failed_task_is_recorded_and_a_finished_one_is_skipped_next_time(local_run):
    spec, run = local_run
    [failure] = run.failed
    assert failure["task"] == "digits-gone" and failure["stage"] == "features" and "gone.safetensors" in failure["reason"]
    assert pd.read_csv(run.out / "failures.csv").task.tolist() == ["digits-gone"]
    assert json.loads((run.out / "tasks" / "digits-gone" / "failure.json").read_text())["stage"] == "features"
    report = run.out / "tasks" / "digits-convpass" / "report.json"
    written = report.stat().st_mtime_ns

    again = run_sweep(spec, run.out, backend="local", use_cache=False, progress=False)
    assert again.skipped == ["digits-convpass", "digits-lora"] and again.finished == [] and len(again.failed) == 1
    assert report.stat().st_mtime_ns == written and len(again.results) == len(run.results)
    # Another analysis of the same task is another fingerprint: it would run again.
    changed = spec.__class__(**{**spec.__dict__, "alphas": (0.5,)})
    assert changed.fingerprint(spec.tasks[0]) != spec.fingerprint(spec.tasks[0])


def test_ray_records_a_task_that_raises_and_a_killed_worker_and_completes(tiny_tasks, ray_cluster, tmp_path):
    spec = load_spec(_write(tiny_tasks, _spec(tiny_tasks, tasks=("convpass", "gone"), criteria=["sls", "oracle"],
                                              alphas=[0.3], seeds=[0]), "kill.yaml"))
    killed = TaskEntry("killed-worker", opener=functools.partial(signal.raise_signal, signal.SIGKILL))
    spec = spec.__class__(**{**spec.__dict__, "tasks": (*spec.tasks, killed)})
    run = run_sweep(spec, tmp_path / "out", backend="ray", use_cache=False, progress=False)
    assert run.finished == ["digits-convpass"]
    failed = {f["task"]: f for f in run.failed}
    assert failed.keys() == {"digits-gone", "killed-worker"}
    assert failed["digits-gone"]["stage"] == "features" and "gone.safetensors" in failed["digits-gone"]["reason"]
    assert failed["killed-worker"]["stage"] == "features" and "died" in failed["killed-worker"]["reason"].lower()
    assert set(pd.read_csv(tmp_path / "out" / "failures.csv").task) == {"digits-gone", "killed-worker"}
    assert set(pd.read_csv(tmp_path / "out" / "results.csv").task) == {"digits-convpass"}


def test_the_sweep_command_writes_the_results_table(tiny_tasks, tmp_path, capsys):
    path = _write(tiny_tasks, _spec(tiny_tasks, tasks=("convpass",), criteria=["sls_raw", "block_influence", "oracle"],
                                    alphas=[0.3], seeds=[0], measure={"accuracy": ["head_refit"]}), "cli.yaml")
    assert main(["sweep", str(path), "--backend", "local", "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["finished"] == ["digits-convpass"] and summary["rows"] == 3
    assert "1 finished, 0 skipped (finished before), 0 failed" in captured.err
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert table.criterion.tolist() == ["sls_raw", "block_influence", "oracle"] and "accuracy_as_is" not in table


def test_sweep_cli_refuses_bad_input_in_one_line(tiny_tasks, tmp_path, capsys):
    bad = _write(tmp_path, {"tasks": [{"name": "x"}]}, "bad.yaml")
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slsviz: error: The sweep spec is invalid at tasks[0]") and "\n" not in err
    good = _write(tiny_tasks, _spec(tiny_tasks), "good.yaml")
    assert main(["sweep", str(good), "--address", "auto", "--out", str(tmp_path / "o")]) == 2
    assert "--backend ray" in capsys.readouterr().err
