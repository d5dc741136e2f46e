"""Bad input through the pages (Streamlit AppTest): one st.error naming the problem, never an exception;
and state that belongs to one model never leaks into the next."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import image_folder, pickle_that_runs_code
from streamlit.testing.v1 import AppTest

from slsviz.app import ui
from slsviz.layers.analysis import AnalysisSettings
from slsviz.study import Selection

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration
QUICK = Selection(limit=60)


def run(name: str, selection: Selection = QUICK, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / name), default_timeout=300)
    at.session_state[ui.SELECTION] = selection
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def _bad_selections(tmp: Path) -> dict[str, tuple[Selection, str]]:
    (tmp / "corrupt.safetensors").write_bytes(np.random.default_rng(0).bytes(2048))
    pickle_that_runs_code(tmp / "code.pth", tmp / "code-ran")
    (tmp / "empty").mkdir()
    one_class = image_folder(tmp / "one_class", {"cat": 5})
    cases = {
        "corrupt task": (Selection(task=str(tmp / "corrupt.safetensors")), "cannot be read"),
        "unknown backbone": (Selection(model="vit_enormous_patch3", checkpoint=str(tmp / "x.pth"), task="none"),
                             "Unknown backbone"),
        "missing backbone checkpoint": (Selection(model="vit_small_patch14_dinov2", checkpoint=str(tmp / "x.pth"),
                                                  task="none"), "does not exist"),
        "pickled code": (Selection(model="vit_small_patch14_dinov2", checkpoint=str(tmp / "code.pth"), task="none"),
                         "only reads weights"),
        "missing dataset": (Selection(data=str(tmp / "no-such-folder")), "no-such-folder"),
        "empty dataset": (Selection(data=str(tmp / "empty")), "no class subfolders"),
        "one-class dataset": (Selection(data=str(one_class)), "only one class"),
        "input size the task was not trained at": (Selection(img_size=224), "trained at 112"),
        "input size beyond memory": (Selection(task="none", img_size=100_000), "GiB"),
    }
    if not torch.cuda.is_available():
        cases["absent GPU"] = (Selection(device="cuda"), "CUDA is not available")
    return cases


def test_bad_selections_are_one_error_each(tmp_path):
    cases = _bad_selections(tmp_path)
    assert len(cases) >= 9
    for name, (selection, words) in cases.items():
        at = run("app.py", selection)
        assert not at.exception, name
        assert len(at.error) == 1 and words in at.error[0].value, (name, [e.value for e in at.error])
    assert not (tmp_path / "code-ran").exists()


def test_a_missing_folder_typed_into_the_load_form_is_an_error(tmp_path):
    at = run("app.py")
    at.radio(key="slsviz.home.backbone").set_value("Embedded default: DINOv2 ViT-S/14")
    at.selectbox(key="slsviz.home.data").set_value("an image folder or VTAB-1k root")
    at.text_input(key="slsviz.home.folder").set_value(str(tmp_path / "typo"))
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception
    assert "typo" in at.error[0].value and "no such built-in dataset or folder" in at.error[0].value


def test_an_image_folder_edited_and_loaded_again_is_a_new_study(tmp_path):
    """The app kept one study per selection: images fixed under the same names showed the old answer."""
    from PIL import Image

    root = image_folder(tmp_path / "pets", {"cat": 8, "dog": 8})
    at = run("app.py")
    at.selectbox(key="slsviz.home.data").set_value("an image folder or VTAB-1k root")
    at.text_input(key="slsviz.home.folder").set_value(str(root))
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception and not at.error
    first, selection = at.session_state[ui.CONTENT], at.session_state[ui.SELECTION]
    rng = np.random.default_rng(7)
    for path in sorted((root / "dog").iterdir()):  # other images under the same names
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path)
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception and not at.error
    second = at.session_state[ui.CONTENT]
    assert at.session_state[ui.SELECTION] == selection and None is not first != second is not None
    assert ui.study(selection, first) is not ui.study(selection, second)  # what the pages get: a new study


@pytest.fixture(scope="module")
def exported():
    """A valid configuration and task checkpoint from the Export page's study, to spoil one way at a time."""
    at = run("pages/3_Export.py", **{ui.CHOSEN: 5})
    assert not at.exception and not at.error
    config = at.json[0].value
    config = json.loads(config) if isinstance(config, str) else config
    return config, ui.study(QUICK).exports.task_checkpoint(5)


def _import(config: bytes, task: bytes) -> AppTest:
    at = run("pages/3_Export.py", **{ui.CHOSEN: 5})
    at.file_uploader(key="slsviz.export.in_config").upload("config.json", config, "application/json")
    at.file_uploader(key="slsviz.export.in_task").upload("task.safetensors", task)
    return at.run()


def test_a_good_import_restores_the_same_model(exported):
    config, _ = exported
    recommended = int(ui.study(QUICK).layers.recommend(AnalysisSettings()).depth_)
    depth = 3 if recommended != 3 else 4
    at = _import(json.dumps({**config, "depth": depth}).encode(), ui.study(QUICK).exports.task_checkpoint(depth))
    assert not at.exception and not at.error
    assert "logits identical" in at.success[0].value
    # the import sets the chosen depth, never the recommendation: the next export still records the rule's
    assert at.session_state[ui.CHOSEN] == depth and at.session_state[ui.DEPTH] == recommended
    at.session_state[ui.EXPORT_DEPTH] = depth
    at.run()
    config = at.json[0].value
    config = json.loads(config) if isinstance(config, str) else config
    assert config["depth"] == depth and config["results"]["recommended_depth"] == recommended


@pytest.mark.parametrize("spoil, words", [
    (lambda c: b"\x00\xff not json, not yaml {", "config"),
    (lambda c: json.dumps({k: v for k, v in c.items() if k != "petl"}).encode(), "petl"),
    (lambda c: json.dumps({**c, "depth": 99}).encode(), "depth"),
    (lambda c: json.dumps({**c, "backbone": {**c["backbone"], "checksum": "0123456789abcdef"}}).encode(), "checksum"),
], ids=["garbage", "wrong schema", "depth out of range", "another backbone"])
def test_a_bad_configuration_to_import_is_one_error(exported, spoil, words):
    config, task = exported
    at = _import(spoil(config), task)
    assert not at.exception
    assert len(at.error) == 1 and words in at.error[0].value, [e.value for e in at.error]


def test_a_broken_task_checkpoint_to_import_is_one_error(exported):
    config, task = exported
    at = _import(json.dumps(config).encode(), task[: len(task) // 2])
    assert not at.exception
    assert len(at.error) == 1 and "cannot be read" in at.error[0].value


def test_loading_a_shallower_task_forgets_the_old_depths(exported, tmp_path):
    pruned = tmp_path / "task-depth6.safetensors"
    pruned.write_bytes(ui.study(QUICK).exports.task_checkpoint(6))
    at = run("app.py")  # one browser session, moving between pages
    at.switch_page("pages/2_Prune_and_benchmark.py").run()
    at.slider(key=ui.PRUNE_DEPTH).set_value(11).run()
    assert at.session_state[ui.CHOSEN] == 11
    at.switch_page("pages/0_Model.py").run()
    at.text_input(key="slsviz.home.task").set_value(str(pruned))
    at.number_input(key="slsviz.home.limit").set_value(60)
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception and not at.error
    assert next(m.value for m in at.metric if m.label == "Blocks") == "6"
    assert [key for key in ui.MODEL_KEYS if key in at.session_state] == []
    at.switch_page("pages/3_Export.py").run()
    assert not at.exception and not at.error
    assert at.number_input(key=ui.EXPORT_DEPTH).value == 6 and at.json[0].value


def test_data_with_other_classes_says_as_is_accuracy_does_not_apply(tmp_path):
    other = image_folder(tmp_path / "animals", {"ant": 8, "bee": 8, "cow": 8})
    at = run("pages/2_Prune_and_benchmark.py", Selection(data=str(other)))
    assert not at.exception and not at.error
    assert "not applicable: the task's head was trained on 10 classes" in at.warning[0].value
    assert next(m.value for m in at.metric if m.label == "Accuracy as is (task head)") == "-"
    assert next(m.value for m in at.metric if m.label == "Accuracy, head re-fit").endswith("%")
