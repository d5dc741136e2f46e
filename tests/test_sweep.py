"""Sweeps: the spec, both backends giving the same answers, failures recorded, finished tasks skipped."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import image_folder, recommend_depth, tiny_digits_tasks

from slsviz.cli import main
from slsviz.errors import SlsvizError
from slsviz.sweep import TaskEntry, Training, load_spec, run_sweep, spec_from_dict

TINY = "vit_tiny_patch16_224"
CRITERIA = ["sls", "sls_raw", "sls_calinski_harabasz", "sls_davies_bouldin", "sls_probe", "knn_accuracy",
            "block_influence", "angular_distance", "cka_to_last", "reverse_order", "taylor", "val_loss", "oracle"]


@pytest.fixture(scope="module")
def tiny_tasks(tmp_path_factory):
    """A tiny 12-block backbone (32 px) and two tasks on digits (Convpass, LoRA), with a spec beside them."""
    return tiny_digits_tasks(tmp_path_factory.mktemp("sweep"), ("convpass", "lora"), TINY)


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


OPENED: list[str] = []  # the tasks the local run opened, once per opening


@pytest.fixture(scope="module")
def local_run(tiny_tasks, tmp_path_factory):
    """Two tasks and one whose checkpoint is gone, two alphas, two seeds, every depth timed: swept here."""
    from slsviz.sweep import stages

    spec = load_spec(_write(tiny_tasks, _spec(tiny_tasks, tasks=("convpass", "gone", "lora"),
                                              measure={"benchmarks": True, "seconds": 0.02})))
    out = tmp_path_factory.mktemp("local-sweep") / "out"
    real = stages.open_study
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stages, "open_study", lambda entry, *a, **k: OPENED.append(entry.name) or real(entry, *a, **k))
        return spec, run_sweep(spec, out, backend="local", use_cache=False, progress=False)


def test_a_local_sweep_opens_each_task_once(local_run):
    """It opened each task twice: for the features, then again for the benchmark."""
    spec, run = local_run
    assert sorted(OPENED) == sorted(task.name for task in spec.tasks) and len(run.finished) == 2


def test_local_and_ray_backends_give_identical_answers_and_ray_records_a_killed_worker(local_run, ray_cluster, tmp_path):
    spec, local = local_run
    # On Ray, one more task: its worker is killed (SIGKILL) while it opens the model.
    killed = TaskEntry("killed-worker", opener=functools.partial(signal.raise_signal, signal.SIGKILL))
    # And one trained on a worker, which reports its epochs back to this process as it goes.
    trained = TaskEntry("trained-on-ray", selection=spec.tasks[0].selection,
                        train=Training(method="adaptformer", epochs=1, limit=30))
    heard: list[str] = []
    on_ray = run_sweep(dataclasses.replace(spec, tasks=(*spec.tasks, killed, trained)), tmp_path / "ray", backend="ray",
                       use_cache=False, progress=False, on_progress=lambda state: heard.extend(state.running.values()))
    assert local.finished == ["digits-convpass", "digits-lora"]
    assert sorted(on_ray.finished) == [*local.finished, "trained-on-ray"]
    assert any(re.fullmatch(r"train epoch 1/1, loss \d+\.\d{3}, val acc\. \d+\.\d%", line) for line in heard), heard
    assert any("scored" in line for line in heard) and any(line == "features done" for line in heard)
    assert [f["task"] for f in local.failed] == ["digits-gone"]
    failed = {f["task"]: f for f in on_ray.failed}
    assert failed.keys() == {"digits-gone", "killed-worker"}  # the task that raises, and the dead worker
    assert failed["digits-gone"]["stage"] == "features" and "gone.safetensors" in failed["digits-gone"]["reason"]
    assert failed["killed-worker"]["stage"] == "features" and "died" in failed["killed-worker"]["reason"].lower()
    assert set(pd.read_csv(tmp_path / "ray" / "failures.csv").task) == {"digits-gone", "killed-worker"}

    a, b = _reports(local.out), _reports(tmp_path / "ray")
    b.pop("trained-on-ray")
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
    ray_table = pd.read_csv(tmp_path / "ray" / "results.csv").query("task != 'trained-on-ray'").reset_index(drop=True)
    pd.testing.assert_frame_equal(table.drop(columns=measured), ray_table.drop(columns=measured), check_exact=False,
                                  atol=1e-9)
    sweep = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert sweep["where"]["backend"] == "ray" and sweep["where"]["nodes"] == 2  # across the head and a second node
    assert sweep["where"]["node_addresses"] == ["127.0.0.1"]  # sweep.json says where the nodes ran
    assert {node["NodeManagerAddress"] for node in ray_cluster.nodes()} == {"127.0.0.1"}  # both on loopback only
    assert [t["status"] for t in sweep["tasks"]] == ["finished", "failed", "finished", "failed", "finished"]


def test_the_results_table_has_a_row_per_task_criterion_alpha_and_seed(local_run):
    spec, run = local_run
    table = pd.read_csv(run.out / "results.csv")
    pd.testing.assert_frame_equal(pd.read_parquet(run.out / "results.parquet"), run.results, check_dtype=False)
    by_alpha, by_seed = 4, 8  # SLS variants per alpha and seed; the probe (its own rule) and the others per seed
    assert len(table) == 2 * (by_alpha * 2 * 2 + by_seed * 2 + 1)  # and the oracle once
    assert table.query("criterion == 'sls_probe'")["alpha"].isna().all() and (table.query("criterion == 'sls'")["setting"]
                                                                             == table.query("criterion == 'sls'")["alpha"]).all()
    assert {"task", "criterion", "alpha", "seed", "depth", "num_layers", "accuracy_as_is", "accuracy_head_refit",
            "accuracy_head_refit_full", "flops", "bytes_sls", "bytes_pruned", "shared_backbone_bytes"} <= set(table.columns)
    full = table[table.depth == 12]
    assert (full.accuracy_head_refit == full.accuracy_head_refit_full).all() and (full.flops == full.flops_full).all()
    assert (table.bytes_sls < table.bytes_pruned).all() and (table.images_per_s > 0).all()
    report = json.loads((run.out / "tasks" / "digits-lora" / "report.json").read_text())
    assert report["model"]["method"] == "lora" and len(report["depth_table"]) == 12 and len(report["benchmarks"]) == 12
    assert set(report["scores"]["0"]) == set(CRITERIA) - {"oracle"} and len(report["scores"]["oracle"]) == 12


def test_the_sweep_writes_its_leaderboard_and_the_command_recomputes_it(local_run, capsys):
    spec, run = local_run
    board = pd.read_csv(run.out / "leaderboard.csv")
    assert set(board["kind"]) == {"fixed", "leave-one-task-out"} and (board["tasks"] == 2).all()
    assert "oracle" not in set(board["criterion"])  # the reference, not a contestant
    # the paper's SLS at alpha 0.3, by hand from the results table: each task's seeds averaged, then the tasks
    sls = run.results.query("criterion == 'sls' and alpha == 0.3")
    per_task = sls.assign(d=sls.oracle_distance.abs(), lost=sls.accuracy_head_refit_full - sls.accuracy_head_refit) \
        .groupby("task")[["d", "lost"]].mean()
    row = board.query("criterion == 'sls' and kind == 'fixed' and setting == 0.3").iloc[0]
    assert row["abs_distance"] == pytest.approx(per_task["d"].mean())
    assert row["worst_abs_distance"] == pytest.approx(per_task["d"].max())
    assert row["accuracy_lost_head_refit"] == pytest.approx(per_task["lost"].mean())
    assert row["abs_distance_low"] <= row["abs_distance"] <= row["abs_distance_high"]
    chosen = json.loads((run.out / "leaderboard.json").read_text())["chosen_per_left_out_task"]
    assert {c["task"] for c in chosen} == {"digits-convpass", "digits-lora"}
    assert main(["leaderboard", str(run.out)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tasks"] == ["digits-convpass", "digits-lora"] and set(out["calibrated_on_all_tasks"]) >= {"sls", "taylor"}
    pd.testing.assert_frame_equal(pd.read_csv(run.out / "leaderboard.csv"), board)  # the same figures again
    assert main(["leaderboard", str(run.out / "tasks")]) == 2
    assert "No sweep results in" in capsys.readouterr().err


def test_a_ray_sweep_refuses_an_address_nothing_answers_at_within_seconds(tiny_tasks, tmp_path, capsys):
    good = _write(tiny_tasks, _spec(tiny_tasks), "dead-address.yaml")
    start = time.perf_counter()
    assert main(["sweep", str(good), "--backend", "ray", "--address", "127.0.0.1:9", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert time.perf_counter() - start < 10 and "\n" not in err and "Nothing answers at the Ray address 127.0.0.1:9" in err


def test_without_an_address_ray_starts_its_own_cluster_whatever_a_gone_one_left_behind():
    """A head stopped by a signal leaves ``ray_current_cluster`` behind: Ray's own lookup then names a
    cluster that is gone, and joining it failed ("num_cpus ... must not be provided")."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="slsviz-stale-", dir="/tmp"))
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")  # nothing listens there
    code = ("import ray\nfrom slsviz.sweep.backends import RayBackend\nwith RayBackend(num_cpus=1):\n"
            "    print(sorted({n['NodeManagerAddress'] for n in ray.nodes()}), ray.cluster_resources()['CPU'])")
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: a one-node Ray keeps to 127.0.0.1 (see ray_loopback.py)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {
        "RAY_TMPDIR": str(ray_tmp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.split("\n")[0] == "['127.0.0.1'] 1.0"  # its own, of the CPUs asked for, on loopback only


def test_a_sweeps_scores_are_those_of_the_one_task_analysis(local_run):
    from slsviz.layers.analysis import AnalysisSettings
    from slsviz.study import Study

    spec, run = local_run
    report = json.loads((run.out / "tasks" / "digits-convpass" / "report.json").read_text())
    study = Study.open(spec.tasks[0].selection, use_cache=False)  # what the app and `slsviz compare` open
    for name, settings, metric in (("sls", AnalysisSettings(), "silhouette"),
                                   ("sls_raw", AnalysisSettings(space="raw"), "silhouette"),
                                   ("sls_davies_bouldin", AnalysisSettings(seed=1), "davies_bouldin"),
                                   ("sls_probe", AnalysisSettings(seed=1), "probe_accuracy")):
        expected = study.layers.analysis(settings).table()[metric].to_numpy()
        np.testing.assert_allclose(report["scores"][str(settings.seed)][name], expected, rtol=0, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(report["scores"]["oracle"], study.depths.head_refit_accuracy("val"), rtol=0, atol=1e-9)
    assert [row["accuracy_head_refit"] for row in report["depth_table"]] == pytest.approx(
        study.depths.table()["accuracy_head_refit"].tolist(), abs=1e-9)


def test_a_failed_task_is_recorded_and_a_finished_one_is_skipped_next_time(local_run, tmp_path):
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
    changed = dataclasses.replace(spec, alphas=(0.5,))
    assert changed.fingerprint(spec.tasks[0]) != spec.fingerprint(spec.tasks[0])
    # So is the same task on an image folder whose images were replaced under the same names.
    folder = image_folder(tmp_path / "images", {"a": 2, "b": 2})
    entry = dataclasses.replace(spec.tasks[0], selection=dataclasses.replace(spec.tasks[0].selection, data=str(folder)))
    before = spec.fingerprint(entry)
    image_folder(tmp_path / "images", {"a": 2}, size=16)
    assert spec.fingerprint(entry) != before


def test_the_sweep_command_trains_a_task_writes_the_table_and_skips_it_next_time(tiny_tasks, tmp_path, capsys):
    raw = _spec(tiny_tasks, tasks=("convpass",), criteria=["sls_raw", "block_influence", "oracle"], alphas=[0.3],
                seeds=[0], measure={"accuracy": ["head_refit"]})
    raw["tasks"].append({"name": "digits-adaptformer", "data": "digits",
                         "train": {"method": "adaptformer", "epochs": 1, "limit": 32, "batch_size": 32}})
    path, out = _write(tiny_tasks, raw, "cli.yaml"), tmp_path / "out"
    assert main(["sweep", str(path), "--backend", "local", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["finished"] == ["digits-convpass", "digits-adaptformer"] and summary["rows"] == 6
    assert "2 finished, 0 skipped (finished before), 0 failed" in captured.err
    assert re.search(r"digits-adaptformer: train epoch 1/1, loss \d+\.\d{3}, val acc\. \d+\.\d%", captured.err)  # the bar
    table = pd.read_csv(out / "results.csv")
    assert table.criterion.tolist() == ["sls_raw", "block_influence", "oracle"] * 2 and "accuracy_as_is" not in table
    assert table.method.tolist()[3:] == ["adaptformer"] * 3
    [trained] = (out / "tasks" / "digits-adaptformer").glob("trained-*.safetensors")
    report = json.loads((out / "tasks" / "digits-adaptformer" / "report.json").read_text())
    assert report["task"]["selection"]["task"] == str(trained) and report["model"]["method"] == "adaptformer"
    written = trained.stat().st_mtime_ns

    assert main(["sweep", str(path), "--out", str(out)]) == 0  # again: both finished, neither runs (nor trains) again
    again = json.loads(capsys.readouterr().out)
    assert again["skipped"] == ["digits-convpass", "digits-adaptformer"] and again["finished"] == [] and again["rows"] == 6
    assert trained.stat().st_mtime_ns == written


def test_sweep_cli_refuses_bad_input_in_one_line(tiny_tasks, tmp_path, capsys):
    bad = _write(tmp_path, {"tasks": [{"name": "x"}]}, "bad.yaml")
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slsviz: error: The sweep spec is invalid at tasks[0]") and "\n" not in err
    good = _write(tiny_tasks, _spec(tiny_tasks), "good.yaml")
    assert main(["sweep", str(good), "--address", "auto", "--out", str(tmp_path / "o")]) == 2
    assert "--backend ray" in capsys.readouterr().err


def test_the_tasks_page_shows_a_sweep_and_follows_its_controls(local_run, tiny_tasks, tmp_path):
    from streamlit.testing.v1 import AppTest

    from slsviz import defaults
    from slsviz.sweep.results import SweepResults
    from slsviz.sweep.runner import read_progress

    spec, run = local_run
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.switch_page("pages/5_Tasks.py").run()
    # nothing in sweep-out yet: said as information, and the shipped example shown meanwhile, leaderboard first
    assert not at.exception and not at.error and "No sweep results in sweep-out yet" in at.info[0].value
    example = SweepResults.open(defaults.EXAMPLE_SWEEP)
    assert [m.value for m in at.metric][:2] == [str(len(example.tasks)), "0"] and len(example.tasks) >= 8
    shipped = pd.read_csv(defaults.EXAMPLE_SWEEP / "leaderboard.csv")
    assert at.dataframe[0].value["abs_distance"].tolist() == pytest.approx(shipped["abs_distance"].tolist())
    assert "lands nearest the oracle" in at.success[0].value

    at.text_input(key="slsviz.tasks.folder").set_value(str(run.out)).run()
    assert not at.exception and not at.error
    assert [m.value for m in at.metric] == ["2", "1", str(len(CRITERIA))]
    assert "digits-gone" in at.dataframe[0].value["task"].tolist()  # the failure, with its reason
    board = at.dataframe[1].value  # the leaderboard first, as leaderboard.csv holds it
    written = pd.read_csv(run.out / "leaderboard.csv")
    assert len(board) == len(written) and board["abs_distance"].tolist() == pytest.approx(written["abs_distance"].tolist())
    assert "FLOPs saved (%)" in at.get("plotly_chart")[0].proto.spec  # accuracy lost against FLOPs saved
    depths = at.dataframe[2].value
    results = SweepResults.open(run.out)
    assert list(depths.index) == ["digits-convpass", "digits-lora"] and list(depths.columns) == CRITERIA
    for task in depths.index:
        for criterion in ("sls", "knn_accuracy", "oracle"):
            row = run.results.query("task == @task and criterion == @criterion and (alpha.isna() or alpha == 0.3) and "
                                    "(seed.isna() or seed == 0)")
            assert depths.loc[task, criterion] == row["depth"].item()
    per_task = at.dataframe[3].value
    assert per_task["depth"].tolist() == depths["sls"].tolist()
    growth = results.storage_growth("sls", 0.3, 0)
    chart = at.get("plotly_chart")[1].proto.spec
    assert '"tasks stored"' in chart and "structurally pruned" in chart
    two = growth[growth["tasks"] == 2].set_index("scheme")["bytes"]
    sls, pruned, full = (two[next(s for s in two.index if s.startswith(k))] for k in ("SLS", "structurally", "full"))
    # One shared backbone, then a few kilobytes a task; a pruned backbone per task grows by a backbone a task.
    table = run.results[run.results.criterion == "sls"].query("alpha == 0.3 and seed == 0")
    assert sls == table.shared_backbone_bytes.iloc[0] + table.bytes_sls.sum() and pruned == table.bytes_pruned.sum()
    assert sls <= full and sls < pruned

    at.selectbox(key="slsviz.tasks.criterion").set_value("oracle").run()
    assert not at.exception
    assert at.dataframe[3].value["depth"].tolist() == depths["oracle"].tolist()
    at.selectbox(key="slsviz.tasks.alpha").set_value(0.6).run()
    strict = results.depths(0.6, 0)
    assert not at.exception and at.dataframe[2].value["sls"].tolist() == strict["sls"].tolist()

    # a sweep under way in another process (slsviz sweep writes progress.json as it goes)
    running = tmp_path / "running"
    running.mkdir()
    (running / "progress.json").write_text(json.dumps({"total": 8, "done": 2, "failed": 0, "finished": False,
                                                       "backend": "ray", "running": {"t3": "train epoch 2/3, loss 0.412"}}))
    at.text_input(key="slsviz.tasks.folder").set_value(str(running)).run()
    assert not at.exception and not at.error
    assert "A sweep (ray) is under way" in at.info[0].value and "t3: train epoch 2/3, loss 0.412" in at.info[0].value
    assert "No sweep results in" in at.info[1].value  # meanwhile the shipped example

    # a sweep run from the page, into a new folder: progress while it runs, then its results
    spec_path = _write(tiny_tasks, _spec(tiny_tasks, tasks=("convpass",), criteria=["sls_raw", "reverse_order", "oracle"],
                                         alphas=[0.3], seeds=[0], measure={"accuracy": ["head_refit"]}), "page.yaml")
    at.text_input(key="slsviz.tasks.folder").set_value(str(tmp_path / "from-page")).run()
    assert not at.exception and not at.error and "No sweep results in" in at.info[0].value
    at.text_input(key="slsviz.tasks.spec").set_value(str(spec_path)).run()
    at.button(key="slsviz.tasks.run").click().run()
    assert not at.exception and not at.error
    assert [m.value for m in at.metric][:2] == ["1", "0"] and (tmp_path / "from-page" / "leaderboard.csv").is_file()
    assert any("needs two or more" in i.value for i in at.info)  # one task: nothing to calibrate on
    assert read_progress(tmp_path / "from-page")["finished"] is True
