"""Bad input, as a new user types it: the CLI answers with exit code 2 and one line naming the problem and
what to do - never a traceback, never a half-written file. Odd but valid input works, with a note.

Every command line runs in its own process (as a user runs it), forked from one that imported the modules
once; the processes run two at a time. Two of them also run in a fresh interpreter, which must answer the same.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import image_folder, pickle_that_runs_code, random_backbone
from PIL import Image
from safetensors.torch import save_file

from slsviz.cli import main
from slsviz.data import Preprocess, load_dataset, load_digits
from slsviz.models.backbones import load_backbone
from slsviz.models.petl import PetlConfig
from slsviz.models.task import fit_task, save_task
from slsviz.models.train import Recipe

TINY = "vit_tiny_patch16_224"
M = "--model {tiny} --checkpoint {ckpt} --img-size 32"
MT = M + " --task {task}"

# (name, command line, words the one-line reason must hold). {out} is a fresh path nothing may be left in.
CASES = [
    # numbers: zero, negative, NaN, infinite, huge, not a number
    ("analyze_batch_size_zero", "analyze --batch-size 0 --out {out}", "--batch-size"),
    ("analyze_batch_size_negative", "analyze --batch-size -4 --out {out}", "--batch-size"),
    ("analyze_batch_size_text", "analyze --batch-size many --out {out}", "not a whole number"),
    ("analyze_batch_size_huge", "analyze --batch-size 99999999999 --out {out}", "out of range"),
    ("analyze_alpha_nan", "analyze --alpha nan --out {out}", "--alpha"),
    ("analyze_alpha_infinite", "analyze --alpha inf --out {out}", "--alpha"),
    ("analyze_alpha_negative", "analyze --alpha=-0.3 --out {out}", "(0, 1]"),
    ("analyze_alpha_zero", "analyze --alpha 0 --out {out}", "(0, 1]"),
    ("analyze_alpha_above_one", "analyze --alpha 1.5 --out {out}", "(0, 1]"),
    ("analyze_alpha_text", "analyze --alpha high --out {out}", "not a fraction"),
    ("analyze_limit_zero", "analyze --limit 0 --out {out}", "--limit"),
    ("analyze_limit_negative", "analyze --limit -10 --out {out}", "--limit"),
    ("analyze_limit_fraction", "analyze --limit 2.5 --out {out}", "not a whole number"),
    ("analyze_workers_zero", "analyze --workers 0 --out {out}", "--workers"),
    ("analyze_workers_huge", "analyze --workers 100000 --out {out}", "--workers"),
    ("analyze_projection_unknown", "analyze --projection tsnee --out {out}", "invalid choice"),
    ("analyze_metric_unknown", "analyze --metric accuracy --out {out}", "invalid choice"),
    ("benchmark_depth_zero", f"benchmark {MT} --depth 0", "--depth"),
    ("benchmark_depth_negative", f"benchmark {MT} --depth -2", "--depth"),
    ("benchmark_depth_text", f"benchmark {MT} --depth two", "not a whole number"),
    ("benchmark_depth_beyond_the_model", f"benchmark {MT} --depth 13 --limit 8", "13"),
    ("benchmark_rounds_zero", f"benchmark {MT} --depth 2 --rounds 0", "--rounds"),
    ("benchmark_seconds_zero", f"benchmark {MT} --depth 2 --seconds 0", "--seconds"),
    ("benchmark_seconds_nan", f"benchmark {MT} --depth 2 --seconds nan", "--seconds"),
    ("benchmark_batch_size_zero", f"benchmark {MT} --depth 2 --batch-sizes 1 0", "--batch-sizes"),
    ("backbone_img_size_huge", "backbone --img-size 100000", "GiB"),
    ("backbone_img_size_below_a_patch", f"backbone {M.replace('32', '8')}", "patch"),
    ("backbone_img_size_zero", "backbone --img-size 0", "--img-size"),
    ("train_epochs_zero", "train --epochs 0 --out {out}/t.safetensors", "--epochs"),
    ("train_lr_nan", "train --lr nan --out {out}/t.safetensors", "--lr"),
    ("train_lr_negative", "train --lr=-0.001 --out {out}/t.safetensors", "--lr"),
    ("train_bottleneck_zero", "train --bottleneck 0 --out {out}/t.safetensors", "--bottleneck"),
    ("train_warmup_negative", "train --warmup-epochs -1 --out {out}/t.safetensors", "--warmup-epochs"),
    ("train_method_unknown", "train --method prefix --out {out}/t.safetensors", "invalid choice"),
    ("train_scale_nan", "train --scale nan --out {out}/t.safetensors", "--scale"),
    ("export_depth_zero", f"export {MT} --depth 0 --out {{out}}", "--depth"),
    ("export_depth_beyond_the_model", f"export {MT} --depth 99 --limit 8 --out {{out}}", "99"),
    ("evaluate_split_unknown", "evaluate --split dev", "invalid choice"),
    ("data_seed_negative", "data --seed -1", "--seed"),
    # paths
    ("analyze_out_is_a_file", f"analyze {MT} --limit 8 --out {{afile}}", "is a file"),
    ("analyze_out_under_a_file", f"analyze {MT} --limit 8 --out {{afile}}/report", "not a folder"),
    ("analyze_out_unwritable", f"analyze {MT} --limit 8 --out /proc/slsviz-out", "Cannot write"),
    ("train_out_is_a_folder", "train --epochs 1 --out {folder}", "is a folder"),
    ("prune_out_is_a_folder", f"prune {MT} --depth 2 --out {{folder}}", "is a folder"),
    ("data_missing_folder", "data --data {folder}/no-such-dataset", "no-such-dataset"),
    ("data_file_for_a_folder", "data --data {afile}", "is a file"),
    ("data_symlink_loop", "data --data {loop}", "loop"),
    ("evaluate_task_missing", "evaluate --task {folder}/missing.safetensors", "does not exist"),
    ("evaluate_task_is_a_folder", "evaluate --task {folder}", "{folder}"),
    ("backbone_checkpoint_missing", "backbone --model {tiny} --checkpoint {folder}/missing.pth", "does not exist"),
    ("backbone_checkpoint_unsupported_type", "backbone --model {tiny} --checkpoint {afile}", "unsupported file type"),
    ("backbone_model_unknown", "backbone --model vit_enormous_patch3", "Unknown backbone"),
    # checkpoints
    ("evaluate_task_corrupt", "evaluate --task {corrupt_task}", "cannot be read"),
    ("evaluate_task_truncated", "evaluate --task {truncated_task}", "cannot be read"),
    ("evaluate_task_foreign", "evaluate --task {foreign_task}", "not an slsviz task"),
    ("backbone_checkpoint_pickle_with_code", "backbone --model {tiny} --checkpoint {pickle_code}", "only reads weights"),
    ("backbone_checkpoint_corrupt", "backbone --model {tiny} --checkpoint {corrupt_pth}", "cannot be read"),
    ("backbone_checkpoint_wrong_width", "backbone --model {tiny} --checkpoint {wide_ckpt} --img-size 32", "wrong shape"),
    ("backbone_model_cnn", "backbone --model resnet18 --img-size 224", "'resnet18' is a ResNet, a convolutional network"),
    ("backbone_model_convnext", "backbone --model convnext_atto", "'convnext_atto' is a ConvNeXt, a convolutional network"),
    ("backbone_model_hierarchical", "analyze --model swinv2_tiny_window8_256 --checkpoint {corrupt_pth} --task none",
     "is a SwinTransformerV2, a hierarchical transformer other than timm's Swin"),
    ("backbone_checkpoint_wrong_depth", "backbone --model {tiny} --checkpoint {shallow_ckpt} --img-size 32", "missing"),
    ("analyze_task_of_another_backbone", f"analyze {MT.replace('{ckpt}', '{other_ckpt}')} --limit 8 --out {{out}}",
     "backbone"),
    ("evaluate_task_on_other_classes", "evaluate --task {task} --data {abc}", "not applicable"),
    # data
    ("data_empty_folder", "data --data {empty}", "no class subfolders"),
    ("data_one_class", "data --data {one_class}", "only one class"),
    ("data_one_image_per_class", "data --data {one_each}", "split is empty"),
    ("data_all_unreadable", "data --data {unreadable}", "could be read"),
    ("data_vtab_lists_missing", "data --data {vtab_partial}", "lacks the list file"),
]


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb, in a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files a user might hand slsviz: a tiny backbone and its task, and broken, foreign and odd ones."""
    root = tmp_path_factory.mktemp("bad-inputs")
    ckpt, other, wide, shallow = (root / f"{n}.safetensors" for n in ("tiny", "other", "wide", "shallow"))
    save_file(random_backbone(TINY, img_size=32, seed=0).model.state_dict(), str(ckpt))
    save_file(random_backbone(TINY, img_size=32, seed=1).model.state_dict(), str(other))
    save_file(random_backbone(TINY, img_size=32, embed_dim=96, num_heads=3).model.state_dict(), str(wide))
    save_file(random_backbone(TINY, img_size=32, depth=6).model.state_dict(), str(shallow))
    backbone = load_backbone(TINY, ckpt, img_size=32)
    model, meta, _ = fit_task(backbone, load_digits(), PetlConfig("convpass"), Recipe(epochs=1, batch_size=32), limit=64)
    task = save_task(root / "task.safetensors", model, meta)

    paths = {"tiny": TINY, "ckpt": ckpt, "other_ckpt": other, "wide_ckpt": wide, "shallow_ckpt": shallow, "task": task}
    (folder := root / "folder").mkdir()
    (afile := root / "notes.txt").write_text("not a folder, not a checkpoint\n")
    (root / "loop").symlink_to(root / "loop")
    rng = np.random.default_rng(0)
    (root / "corrupt_task.safetensors").write_bytes(rng.bytes(4096))
    (root / "truncated_task.safetensors").write_bytes(task.read_bytes()[: task.stat().st_size // 2])
    save_file({"weight": torch.zeros(3)}, str(root / "foreign.safetensors"))
    (root / "corrupt.pth").write_bytes(rng.bytes(4096))
    pickle_that_runs_code(root / "code.pth", root / "code-ran")
    (root / "empty").mkdir()
    image_folder(root / "one_class", {"cat": 6})
    image_folder(root / "one_each", {"a": 1, "b": 1, "c": 1})
    for name in ("a", "b"):
        (root / "unreadable" / name).mkdir(parents=True)
        for i in range(3):
            (root / "unreadable" / name / f"{i}.png").write_bytes(rng.bytes(200))
    (root / "vtab_partial").mkdir()
    (root / "vtab_partial" / "train800.txt").write_text("a/0.png 0\n")
    image_folder(root / "abc", {"ant": 6, "bee": 6, "cow": 6})
    paths |= {"folder": folder, "afile": afile, "loop": root / "loop", "corrupt_task": root / "corrupt_task.safetensors",
              "truncated_task": root / "truncated_task.safetensors", "foreign_task": root / "foreign.safetensors",
              "corrupt_pth": root / "corrupt.pth", "pickle_code": root / "code.pth", "empty": root / "empty",
              "one_class": root / "one_class", "one_each": root / "one_each", "unreadable": root / "unreadable",
              "vtab_partial": root / "vtab_partial", "abc": root / "abc", "root": root}
    return {k: str(v) for k, v in paths.items()}


def _env(world: dict) -> dict[str, str]:
    return {**os.environ, "TQDM_DISABLE": "1", "SLSVIZ_CACHE_DIR": str(Path(world["root"]) / "cache"),
            "HF_HUB_OFFLINE": "1"}


def _argv(world: dict, name: str, line: str) -> tuple[list[str], Path]:
    out = Path(world["root"]) / "outs" / name
    return [part.format(**world, out=out) for part in line.split()], out


@pytest.fixture(scope="module")
def answers(world):
    """Every case's process result: each command line in a process of its own, two at a time, forked from
    one that imported Python's and slsviz's modules once (tests/cli_runner.py)."""
    root = Path(world["root"]) / "runs"
    root.mkdir(exist_ok=True)
    jobs, outs = [], {}
    for name, line, _ in CASES:
        argv, outs[name] = _argv(world, name, line)
        jobs.append({"argv": argv, "cwd": world["root"], "stdout": str(root / f"{name}.out"),
                     "stderr": str(root / f"{name}.err")})
    (root / "jobs.json").write_text(json.dumps(jobs), encoding="utf-8")
    subprocess.run([sys.executable, str(Path(__file__).with_name("cli_runner.py")), str(root / "jobs.json")],
                   env=_env(world), check=True, timeout=1800)
    codes = json.loads((root / "jobs.json.codes").read_text(encoding="utf-8"))
    return {name: (subprocess.CompletedProcess(job["argv"], code, Path(job["stdout"]).read_text(),
                                               Path(job["stderr"]).read_text()), outs[name])
            for (name, _, _), job, code in zip(CASES, jobs, codes)}


@pytest.mark.parametrize("name", ["backbone_checkpoint_corrupt", "analyze_task_of_another_backbone"])
def test_a_fresh_interpreter_answers_as_the_forked_one(answers, world, name):
    """What a user's own `python -m slsviz` prints, import-time messages included, is what the forked runs saw."""
    argv, _ = _argv(world, name, next(line for n, line, _ in CASES if n == name))
    done = subprocess.run([sys.executable, "-m", "slsviz", *argv], capture_output=True, text=True, env=_env(world),
                          cwd=world["root"], timeout=300)
    forked = answers[name][0]
    assert (done.returncode, done.stdout, done.stderr) == (forked.returncode, forked.stdout, forked.stderr)


def test_there_are_at_least_50_named_cases():
    assert len({name for name, _, _ in CASES}) == len(CASES) >= 50


@pytest.mark.parametrize("name, line, words", CASES, ids=[c[0] for c in CASES])
def test_bad_command_line_is_one_clear_line(answers, world, name, line, words):
    done, out = answers[name]
    err = done.stderr.strip()
    assert done.returncode == 2, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr
    assert len(err.splitlines()) == 1, err
    assert "error:" in err and words.format(**world) in err, err
    assert done.stdout == ""
    assert not out.exists() or not any(out.rglob("*")), f"left behind: {sorted(out.rglob('*'))}"


def test_a_pickled_checkpoint_never_runs_its_code(answers, world):
    assert answers["backbone_checkpoint_pickle_with_code"][0].returncode == 2
    assert not (Path(world["root"]) / "code-ran").exists()


def test_a_typo_is_answered_without_loading_torch(world):
    code = ("import sys; from slsviz.cli import main; rc = main(['analyze', '--alpha', 'nan']); "
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "False"]


# --- odd but valid input: it works, and says what it did ------------------------------------------


def test_some_unreadable_or_huge_files_are_left_out_with_a_note(tmp_path, capsys):
    root = image_folder(tmp_path / "mixed", {"a": 5, "b": 5})
    (root / "a" / "broken.png").write_bytes(b"not a png")
    _png_header_only(root / "b" / "bomb.png", 100_000, 100_000)
    assert main(["data", "--data", str(root)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_images"] == 10 and json.loads(captured.out)["skipped"] == 2
    assert captured.err.startswith("slsviz: note: 2 file(s)") and "left out" in captured.err


def test_non_rgb_16_bit_and_1x1_images_are_read_as_rgb(tmp_path):
    root = tmp_path / "modes"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    gray16 = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(gray16).save(root / "a" / "gray16.png")
    Image.new("CMYK", (9, 7), (0, 255, 0, 0)).save(root / "a" / "cmyk.jpg")
    Image.new("P", (5, 5)).save(root / "a" / "palette.png")
    Image.new("LA", (6, 6), (128, 200)).save(root / "b" / "gray_alpha.png")
    Image.new("RGB", (1, 1), (10, 20, 30)).save(root / "b" / "one_pixel.png")
    Image.new("RGBA", (4, 4), (1, 2, 3, 4)).save(root / "b" / "rgba.png")
    data = load_dataset(str(root))
    assert len(data) == 6 and data.skipped == []
    identity = Preprocess(8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    by_name = {Path(p).name: i for i, p in enumerate(data.paths)}
    for i in range(len(data)):
        x = identity(data.image(i))
        assert x.shape == (3, 8, 8) and bool(x.isfinite().all()) and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    # 16-bit grey keeps its gradient: PIL's convert("RGB") alone would clip all but one pixel to white.
    gray = identity(data.image(by_name["gray16.png"]))[0].numpy()
    np.testing.assert_allclose(gray, np.round(gray16.astype(np.float64) * 255 / 65535) / 255, atol=1e-6)
    assert np.allclose(identity(data.image(by_name["one_pixel.png"]))[:, 0, 0].numpy(), np.array([10, 20, 30]) / 255)


def test_a_symlink_loop_inside_a_dataset_is_ignored(tmp_path):
    root = image_folder(tmp_path / "looped", {"a": 4, "b": 4})
    (root / "c").symlink_to(root / "c")
    (root / "a" / "self.png").symlink_to(root / "a" / "self.png")
    assert load_dataset(str(root)).class_names == ["a", "b"]


# --- a task scored on data with other classes ------------------------------------------------------


def test_a_task_on_other_classes_has_no_as_is_accuracy_but_everything_else(world, tmp_path, capsys):
    args = [*M.format(**world).split(), "--task", world["task"], "--data", world["abc"], "--projection", "pca"]
    assert main(["analyze", *args, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "slsviz: note: not applicable: the task's head was trained on 10 classes (0, 1, 2, 3, 4, ... (10 in all))" in err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["accuracy_full"] is None and report["accuracy_at_recommended_depth"] is None
    assert report["accuracy_as_is_note"].startswith("not applicable") and "3 classes (ant, bee, cow)" in report["accuracy_as_is_note"]
    assert 1 <= report["recommended_depth"] <= 12 and report["accuracy_full_head_refit"] is not None
    assert all(row["accuracy_as_is"] is None and row["accuracy_head_refit"] is not None for row in report["layers"])


def test_the_same_classes_from_another_dataset_are_scored_with_a_note(world, capsys):
    assert main(["evaluate", "--task", world["task"], "--data", "mnist5k", "--limit", "16"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert 0.0 <= result["accuracy"] <= 1.0 and result["dataset"] == "mnist5k"
    assert "trained on digits and is scored on mnist5k" in result["note"] and "slsviz: note:" in captured.err


def test_evaluate_finds_a_task_backbone_where_the_task_says(world, capsys):
    assert main(["evaluate", "--task", world["task"], "--limit", "16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "digits" and result["note"] is None and result["num_images"] == 16


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 78.00 GiB"),
                                 RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
                                 MemoryError()], ids=["cuda", "cpu", "python"])
def test_running_out_of_memory_is_a_reason_with_what_to_lower(monkeypatch, capsys, exc):
    from slsviz import cli

    def runs_out(args):
        raise exc

    monkeypatch.setattr(cli, "_cmd_data", runs_out)
    assert main(["data"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slsviz: error: Ran out of memory") and "--batch-size" in err and "\n" not in err


def test_other_runtime_errors_are_not_taken_for_out_of_memory(monkeypatch):
    from slsviz import cli

    def bug(args):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(cli, "_cmd_data", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # a bug keeps its traceback
        main(["data"])
