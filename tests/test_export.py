"""Export of an SLS result: config (JSON/YAML), pruned task checkpoint, restore, ONNX."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers import random_backbone
from safetensors.torch import load_file

from slsviz.errors import CheckpointError, SlsvizError
from slsviz.export import (
    CONFIG_SCHEMA,
    build_config,
    config_to_json,
    config_to_yaml,
    export_onnx,
    load_config,
    restore,
    save_config,
    save_pruned_task,
    validate_config,
)
from slsviz.models.depth import prune_to_depth
from slsviz.models.petl import PetlConfig, RepAdapter
from slsviz.models.task import TaskMeta, build_task_model, read_task_meta, save_task

TINY = "vit_tiny_patch16_224"
KEYS = ["schema", "backbone", "petl", "task", "depth", "num_layers", "alpha", "metric", "projection",
        "scores", "results", "environment"]


@pytest.fixture(scope="module")
def backbone():
    return random_backbone(TINY, img_size=32, depth=3, seed=0)


def _meta(backbone, petl: PetlConfig, num_classes: int = 4) -> TaskMeta:
    return TaskMeta(
        backbone_id=backbone.id, backbone_arch=backbone.arch, backbone_checksum=backbone.checksum,
        petl=petl.to_dict(), class_names=[f"c{i}" for i in range(num_classes)], img_size=backbone.img_size,
        mean=list(backbone.mean), std=list(backbone.std), dataset="toy", split_seed=0,
        num_layers=backbone.num_layers, val_accuracy=0.5, test_accuracy=0.25,
    )


def _task(backbone, method: str, num_classes: int = 4):
    """A task model whose adapters matter: their zero-initialised outputs are randomised."""
    petl = PetlConfig(method)
    model = build_task_model(backbone, petl, num_classes)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adapter_up" in name or "conv_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model.eval(), _meta(backbone, petl, num_classes)


@pytest.fixture(scope="module")
def convpass(backbone):
    return _task(backbone, "convpass")


@pytest.fixture(scope="module")
def repadapter(backbone):
    return _task(backbone, "repadapter")


def _config(backbone, meta, depth=2, **kwargs):
    scores = [{"layer": i + 1, "score": float(s)} for i, s in enumerate(np.linspace(0.1, 0.3, 3))]
    results = {"accuracy": {"full": 0.5, "pruned": np.float32(0.5)}, "throughput": {"device": "cpu", "speedup": 1.4}}
    return build_config(backbone=backbone, meta=meta, depth=depth, alpha=0.95, metric="silhouette",
                        projection="tsne", scores=scores, results=results, **kwargs)


def _images(n, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(5))


def _logits(model, x):
    with torch.inference_mode():
        return model.eval()(x)


# --- config ---------------------------------------------------------------------------------------


def test_config_has_exactly_the_documented_keys(backbone, convpass):
    _, meta = convpass
    config = _config(backbone, meta)
    assert list(config) == KEYS
    assert config["schema"] == CONFIG_SCHEMA == "slsviz-config/1"
    assert config["backbone"] == {"id": backbone.id, "arch": TINY, "checksum": backbone.checksum}
    assert config["petl"]["method"] == "convpass" and config["petl"]["hyperparameters"]["bottleneck"] == 8
    assert "method" not in config["petl"]["hyperparameters"]
    assert config["task"]["classes"] == ["c0", "c1", "c2", "c3"] and config["task"]["num_classes"] == 4
    assert set(config["task"]) == {"classes", "num_classes", "img_size", "mean", "std", "dataset", "split_seed",
                                   "val_accuracy", "test_accuracy", "source"}
    assert config["task"]["source"] is None  # slsviz's own task; another tool's records where it came from
    assert (config["depth"], config["num_layers"]) == (2, 3)
    assert type(config["results"]["accuracy"]["pruned"]) is float  # numpy scalars become plain numbers
    assert "torch" in config["environment"]
    with_extra = _config(backbone, meta, extra={"note": ("a", 1)})
    assert list(with_extra) == [*KEYS, "extra"] and with_extra["extra"] == {"note": ["a", 1]}
    bare = build_config(backbone=backbone, meta=meta, depth=3, alpha=0.9, metric="m", projection="pca")
    assert bare["scores"] == [] and bare["results"] == {}


def test_json_and_yaml_round_trips_are_equal(backbone, convpass, tmp_path):
    config = _config(backbone, convpass[1], extra={"ünïcode": "ok", "nan": np.float64("nan"), "arr": np.arange(2)})
    assert config["extra"]["nan"] is None and config["extra"]["arr"] == [0, 1]  # strict JSON: no NaN
    assert load_config(config_to_json(config)) == config
    assert load_config(config_to_yaml(config)) == config
    assert load_config(config_to_yaml(config).encode()) == config
    for name in ("c.json", "c.yaml", "c.yml"):
        path = save_config(config, tmp_path / name)
        assert load_config(path) == config and load_config(str(path)) == config
    assert json.loads((tmp_path / "c.json").read_text())["depth"] == 2
    assert config_to_yaml(config).startswith("schema: slsviz-config/1\n")  # key order kept
    with pytest.raises(SlsvizError, match=r"\*\.json, \*\.yaml or \*\.yml"):
        save_config(config, tmp_path / "c.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.yaml", "c.yml"]  # no temp files left


def test_validate_config_names_the_first_problem(backbone, convpass):
    config = _config(backbone, convpass[1])
    assert validate_config(config) is config

    def broken(edit):
        c = copy.deepcopy(config)
        edit(c)
        return c

    with pytest.raises(SlsvizError, match="config is missing 'depth'"):
        validate_config(broken(lambda c: c.pop("depth")))
    with pytest.raises(SlsvizError, match="schema 'x' is not slsviz-config/1"):
        validate_config(broken(lambda c: c.update(schema="x")))
    for depth in (0, 4):
        with pytest.raises(SlsvizError, match=f"'depth' {depth} is out of range"):
            validate_config(broken(lambda c, d=depth: c.update(depth=d)))
    with pytest.raises(SlsvizError, match="'depth' must be an integer"):
        validate_config(broken(lambda c: c.update(depth="2")))
    with pytest.raises(SlsvizError, match="config is missing 'backbone.checksum'"):
        validate_config(broken(lambda c: c["backbone"].pop("checksum")))
    with pytest.raises(SlsvizError, match="unknown key 'foo'"):
        validate_config(broken(lambda c: c.update(foo=1)))
    with pytest.raises(SlsvizError, match="out of range"):
        build_config(backbone=backbone, meta=convpass[1], depth=4, alpha=0.9, metric="m", projection="p")
    with pytest.raises(CheckpointError, match="keeps only 2 blocks"):
        build_config(backbone=backbone, meta=dataclasses.replace(convpass[1], depth=2), depth=3, alpha=0.9,
                     metric="m", projection="p")


def test_the_schema_is_a_json_schema_every_written_config_meets(backbone, convpass):
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("slsviz").joinpath("schemas", "config.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    config = _config(backbone, convpass[1])
    jsonschema.validate(json.loads(config_to_json(config)), schema, cls=jsonschema.Draft202012Validator)
    nested = copy.deepcopy(config)
    nested["task"]["img_size"] = "32"
    with pytest.raises(SlsvizError, match="config 'task.img_size' must be an integer, got str '32'"):
        validate_config(nested)
    nested["task"]["img_size"] = 32
    nested["task"]["classes"] = ["c0"]
    with pytest.raises(SlsvizError, match="'task.num_classes' is 4 but 'task.classes' names 1"):
        validate_config(nested)
    nested = copy.deepcopy(config)
    nested["alpha"] = float("nan")
    with pytest.raises(SlsvizError, match="'alpha' must be a finite number"):
        validate_config(nested)


def test_load_config_refuses_unparseable_or_foreign_input(backbone, convpass, tmp_path):
    with pytest.raises(SlsvizError, match="cannot be parsed as JSON or YAML"):
        load_config("a: [unclosed\nb: 1")
    with pytest.raises(SlsvizError, match="not a config mapping"):
        load_config("[1, 2]")
    with pytest.raises(SlsvizError, match="schema 'slsviz-task/1' is not slsviz-config/1"):
        load_config(json.dumps({"schema": "slsviz-task/1"}))
    with pytest.raises(SlsvizError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SlsvizError, match="not UTF-8"):
        load_config(bad)


def test_build_config_refuses_a_task_of_another_backbone(convpass):
    other = random_backbone(TINY, img_size=32, depth=3, seed=1)
    with pytest.raises(CheckpointError, match="pass the backbone the task was trained on"):
        build_config(backbone=other, meta=convpass[1], depth=2, alpha=0.9, metric="m", projection="p")


# --- checkpoint and restore -----------------------------------------------------------------------


def test_pruned_task_holds_only_kept_blocks(convpass, tmp_path):
    model, meta = convpass
    path = save_pruned_task(model, meta, 2, tmp_path / "d2.safetensors")
    assert read_task_meta(path).depth == 2
    names = list(load_file(str(path)))
    assert any(n.startswith("blocks.1.") for n in names)
    assert not any(n.startswith("blocks.2.") for n in names)
    assert len(model.blocks) == 3  # the input is not pruned


def test_a_pruned_task_never_carries_the_full_models_accuracies(convpass, tmp_path):
    """The Export page and `slsviz export` wrote a depth-2 file with the full model's 0.5 / 0.25 as its own."""
    model, meta = convpass
    unmeasured = read_task_meta(save_pruned_task(model, meta, 2, tmp_path / "d2.safetensors"))
    assert (unmeasured.val_accuracy, unmeasured.test_accuracy) == (None, None)
    measured = read_task_meta(save_pruned_task(model, meta, 2, tmp_path / "m2.safetensors", val_accuracy=0.4,
                                               test_accuracy=0.3))
    assert (measured.val_accuracy, measured.test_accuracy, measured.depth) == (0.4, 0.3, 2)
    assert measured.recipe["pruned_from_depth"] == 3
    assert (meta.val_accuracy, meta.test_accuracy) == (0.5, 0.25)  # the input's record is not touched


@pytest.mark.parametrize("full_checkpoint", [False, True], ids=["pruned-checkpoint", "full-checkpoint"])
def test_round_trip_reproduces_pruned_logits_exactly(backbone, convpass, tmp_path, full_checkpoint):
    model, meta = convpass
    config = _config(backbone, meta, depth=2)
    save_config(config, tmp_path / "sls.yaml")
    if full_checkpoint:
        ckpt = save_task(tmp_path / "full.safetensors", model, meta)
    else:
        ckpt = save_pruned_task(model, meta, 2, tmp_path / "d2.safetensors")
    restored = restore(load_config(tmp_path / "sls.yaml"), ckpt, random_backbone(TINY, img_size=32, depth=3, seed=0))
    assert len(restored.blocks) == 2 and not restored.training
    x = _images(4)
    assert torch.equal(_logits(restored, x), _logits(prune_to_depth(model, 2), x))


def test_restore_refuses_mismatches(backbone, convpass, tmp_path):
    model, meta = convpass
    ckpt = save_pruned_task(model, meta, 2, tmp_path / "d2.safetensors")
    other = random_backbone(TINY, img_size=32, depth=3, seed=1)
    foreign = _config(other, dataclasses.replace(meta, backbone_id=other.id, backbone_checksum=other.checksum))
    with pytest.raises(CheckpointError, match=f"backbone.checksum: config '{other.checksum}', checkpoint '{backbone.checksum}'"):
        restore(foreign, ckpt, backbone)
    with pytest.raises(CheckpointError, match="does not fit the loaded backbone"):
        restore(_config(backbone, meta), ckpt, other)
    fewer = _config(backbone, dataclasses.replace(meta, class_names=["a", "b"]))
    with pytest.raises(CheckpointError, match="task.num_classes: config 2, checkpoint 4"):
        restore(fewer, ckpt, backbone)
    lora = _config(backbone, dataclasses.replace(meta, petl=PetlConfig("lora").to_dict()))
    with pytest.raises(CheckpointError, match="petl.method: config 'lora', checkpoint 'convpass'"):
        restore(lora, ckpt, backbone)
    with pytest.raises(CheckpointError, match="keeps 2 blocks but the config asks for depth 3"):
        restore(_config(backbone, meta, depth=3), ckpt, backbone)


# --- ONNX -----------------------------------------------------------------------------------------


def _onnx_outputs(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


def _node_names(path):
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("method", ["convpass", "repadapter"])
def test_onnx_matches_torch_with_a_dynamic_batch(method, convpass, repadapter, tmp_path):
    model, _ = convpass if method == "convpass" else repadapter
    pruned = prune_to_depth(model, 2)
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    path = export_onnx(pruned, 32, tmp_path / "m.onnx")
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    for n in (1, 3):
        x = _images(n)
        np.testing.assert_allclose(_onnx_outputs(path, x), _logits(pruned, x).numpy(), atol=1e-4, rtol=0)
    has_adapter_nodes = any("adapter" in name for name in _node_names(path))
    assert has_adapter_nodes == (method == "convpass")  # RepAdapter is merged away, Convpass cannot be
    # The input model is untouched: same tensors, adapters still in place.
    after = pruned.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    if method == "repadapter":
        assert all(isinstance(b.adapter_attn, RepAdapter) and isinstance(b.adapter_mlp, RepAdapter) for b in pruned.blocks)


@pytest.mark.filterwarnings("ignore:Exporting to ONNX opset version")
def test_onnx_export_errors_are_clear(convpass, tmp_path):
    model, _ = convpass
    with pytest.raises(SlsvizError, match="img_size must be a positive integer"):
        export_onnx(model, 0, tmp_path / "m.onnx")
    with pytest.raises(SlsvizError, match="ONNX export failed"):
        export_onnx(model, 32, tmp_path / "m.onnx", opset=99)
    assert not list(tmp_path.iterdir())
