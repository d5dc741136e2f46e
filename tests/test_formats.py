"""The registry of task formats: every format answers through one ``detect`` and one ``open``, a file is
read once on its way to a loaded model, and a new format is one module and one line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import timm
import torch

from slsviz.models import formats
from slsviz.models.backbones import Backbone
from slsviz.models.petl import PetlConfig
from slsviz.models.task import TaskMeta, build_task_model
from slsviz.models.weights import WeightsFile
from slsviz.study import Selection, open_selection

TINY = "vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    torch.manual_seed(0)
    model = timm.create_model(TINY, img_size=32, num_classes=10).eval()
    torch.save(model.state_dict(), root / "tuned.pth")
    return root / "tuned.pth", model


@pytest.fixture
def reads(monkeypatch):
    """Each torch file unpickled (every reader, timm's included, goes through ``torch.load``)."""
    seen: list[str] = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: seen.append(str(f)) or real(f, *a, **k))
    return seen


def test_a_full_fine_tune_is_read_once_from_what_it_is_to_the_loaded_model(tuned, reads):
    path, model = tuned
    loaded = open_selection(Selection(model=TINY, task=str(path), data="digits", limit=4, device="cpu"))
    # Before the registry: the official detector, the full-fine-tune detector and the backbone each read it.
    assert reads.count(str(path)) == 1
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), model(x), atol=1e-5, rtol=0)


def test_every_format_is_told_apart_by_its_detector(tuned, tmp_path):
    path, _ = tuned
    found = formats.detect(path)
    assert found.kind == "full" and found.records_dataset is False and "model" in found.needs
    assert formats.detect(tmp_path) is None  # an empty folder: no format claims it
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3)}, tmp_path / "stray.pt")
    assert formats.detect(tmp_path / "stray.pt") is None
    with pytest.raises(Exception, match="not a task checkpoint slsviz opens"):
        formats.open_source(tmp_path / "stray.pt")
    assert [d.__module__ for d in formats.DETECTORS] == ["slsviz.models.task", "slsviz.models.official",
                                                         "slsviz.models.peft_lora", "slsviz.models.full"]


@dataclass(frozen=True)
class _HeadOnly:
    """A format of this test's own: a torch file holding only ``{"classifier": (C, D) tensor}``."""

    path: Path
    weight: torch.Tensor
    kind: ClassVar[str] = "head-only"
    records_dataset: ClassVar[bool] = False
    needs: ClassVar[tuple[str, ...]] = ("data",)
    missing: ClassVar[tuple[str, ...]] = ("the dataset",)

    def input_size(self, asked):
        return asked or 32

    def backbone(self, model, checkpoint):
        return model, checkpoint

    def open(self, backbone: Backbone, options):
        model = build_task_model(backbone, PetlConfig("linear"), int(self.weight.shape[0]))
        model.head.weight.data.copy_(self.weight)
        meta = TaskMeta(backbone_id=backbone.id, backbone_arch=backbone.arch, backbone_checksum=backbone.checksum,
                        petl=PetlConfig("linear").to_dict(), class_names=[str(i) for i in range(10)],
                        img_size=backbone.img_size, mean=list(backbone.mean), std=list(backbone.std),
                        dataset="head-only:x", split_seed=None, num_layers=backbone.num_layers, recipe={})
        return model.eval(), meta

    def describe(self):
        return {"format": "head only"}


def _head_only(file: WeightsFile):
    if file.path.suffix != ".head":
        return None
    return _HeadOnly(file.path, file.reading("head", lambda p: torch.load(p, weights_only=True))["classifier"])


def test_a_new_format_is_one_detector_in_the_registry(tuned, tmp_path, monkeypatch):
    path, _ = tuned
    torch.save({"classifier": torch.ones(10, 192)}, tmp_path / "task.head")
    monkeypatch.setattr(formats, "DETECTORS", (*formats.DETECTORS, _head_only))
    loaded = open_selection(Selection(model=TINY, checkpoint=str(path), task=str(tmp_path / "task.head"),
                                      data="digits", limit=4, device="cpu"))
    assert loaded.method == "linear" and float(loaded.model.head.weight.detach().sum()) == 10 * 192
    assert loaded.head_applies  # ten digits, a ten-class head
