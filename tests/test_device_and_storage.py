"""Device choice and atomic writes."""

from __future__ import annotations

import pytest
import torch

from slsviz.device import describe_device, resolve_device
from slsviz.errors import DeviceError
from slsviz.storage import atomic_path, cache_dir


def test_auto_prefers_cuda_then_cpu():
    expected = "cuda" if torch.cuda.is_available() else None
    device = resolve_device("auto")
    if expected:
        assert device.type == "cuda"
    else:
        assert device.type in {"cpu", "mps"}
    assert resolve_device(None) == device


def test_explicit_devices():
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert describe_device(torch.device("cpu")).startswith("cpu (")
    with pytest.raises(DeviceError, match="Unknown device"):
        resolve_device("gpu please")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_cache_dir_honours_override(tmp_path, monkeypatch):
    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir().is_dir()
    monkeypatch.delenv("SLSVIZ_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "slsviz"


def test_uploads_are_kept_once_by_content(tmp_path, monkeypatch):
    from slsviz.storage import keep_upload

    monkeypatch.setenv("SLSVIZ_CACHE_DIR", str(tmp_path))
    a = keep_upload("../task file.safetensors", b"abc")
    assert a.read_bytes() == b"abc" and a.parent == tmp_path / "uploads" and a.name.endswith("task_file.safetensors")
    assert keep_upload("other.safetensors", b"abc").read_bytes() == b"abc"
    assert keep_upload("../task file.safetensors", b"abc") == a
