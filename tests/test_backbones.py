"""Backbones: the embedded DINOv2 default, local checkpoints in three formats, hub and random init."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_backbone
from safetensors.torch import save_file

from slsviz.errors import CheckpointError, OfflineError, SlsvizError
from slsviz.models import backbones
from slsviz.models.backbones import load_backbone

TINY = "vit_tiny_patch16_224"


# --- the embedded default ----------------------------------------------------------------------


@pytest.mark.integration
def test_default_matches_onnxruntime_at_518px():
    """Final normed tokens equal onnxruntime's output of the backbone's layernorm node."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

    model_proto = onnx.load(str(backbones.default_onnx_path()))
    graph = model_proto.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"  # exported at 224; the graph resizes itself
    layernorm = next(n.output[0] for n in graph.node if n.name == "/backbone/layernorm/Add_1")
    graph.output.append(onnx.helper.make_tensor_value_info(layernorm, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])

    x = np.random.default_rng(0).standard_normal((1, 3, 518, 518)).astype(np.float32)
    expected = session.run([layernorm], {graph.input[0].name: x})[0]

    model = load_backbone("default", img_size=518).model
    with torch.inference_mode():
        got = model.forward_features(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (1, 1 + 37 * 37, 384)
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.integration
def test_default_conversion_has_exactly_timms_keys():
    from slsviz.models.onnx_import import dinov2_state_dict_from_onnx

    sd = dinov2_state_dict_from_onnx(backbones.default_onnx_path())
    model = backbones._create(backbones.DEFAULT_ARCH, 518)
    expected = model.state_dict()
    assert set(sd) == set(expected)
    assert all(sd[k].shape == expected[k].shape for k in sd)


@pytest.mark.integration
def test_default_is_converted_once_then_read_from_cache(default_backbone, monkeypatch):
    assert backbones.default_weights_path().is_file()

    def no_second_conversion(*_a, **_k):
        raise AssertionError("converted again")

    monkeypatch.setattr("slsviz.models.onnx_import.dinov2_state_dict_from_onnx", no_second_conversion)
    again = load_backbone("default")
    assert again.checksum == default_backbone.checksum
    for a, b in zip(again.model.state_dict().values(), default_backbone.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.integration
def test_default_describes_itself(default_backbone):
    info = default_backbone.describe()
    assert info["arch"] == "vit_small_patch14_dinov2"
    assert info["num_layers"] == 12 and info["embed_dim"] == 384 and info["img_size"] == 112
    assert default_backbone.model.pos_embed.shape == (1, 1 + 8 * 8, 384)  # resampled from 37x37
    assert 21e6 < info["num_params"] < 23e6
    assert len(info["checksum"]) == 16


@pytest.mark.integration
def test_default_weights_are_really_trained(default_backbone):
    """A linear probe on real digits is far better on the pretrained weights than on random ones."""
    from sklearn.linear_model import LogisticRegression

    from slsviz.data import Preprocess, load_digits, make_loader

    data = load_digits(seed=0)
    preprocess = Preprocess(112, default_backbone.mean, default_backbone.std)

    def probe_accuracy(model: torch.nn.Module) -> float:
        feats = {}
        for split in ("train", "val"):
            xs, ys = [], []
            with torch.inference_mode():
                for images, labels in make_loader(data, split, preprocess, batch_size=100, limit=400):
                    xs.append(model.forward_features(images)[:, 0])
                    ys.append(labels)
            feats[split] = (torch.cat(xs).numpy(), torch.cat(ys).numpy())
        clf = LogisticRegression(max_iter=2000).fit(*feats["train"])
        return clf.score(*feats["val"])

    trained = probe_accuracy(default_backbone.model)
    random = probe_accuracy(random_backbone(backbones.DEFAULT_ARCH, img_size=112, seed=0).model)
    assert trained > 0.85
    assert trained > random + 0.15


# --- timm names with local checkpoints ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_source():
    """A random vit_tiny with a 10-class head: stands in for someone's fine-tuned checkpoint."""
    import timm

    torch.manual_seed(1)
    return timm.create_model(TINY, pretrained=False, num_classes=10).eval()


def _tokens(model: torch.nn.Module, size: int = 224) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return model.forward_features(x)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_state_dict_checkpoints_load_exactly(tiny_source, tmp_path, suffix):
    path = tmp_path / f"tiny{suffix}"
    sd = tiny_source.state_dict()
    if suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"model": sd}, path)  # a training-script wrapper is unwrapped
    loaded = load_backbone(TINY, path)
    assert loaded.id == f"{TINY}:{path}" and loaded.arch == TINY
    assert torch.equal(_tokens(loaded.model), _tokens(tiny_source))


def test_npz_google_format_loads_exactly(tiny_source, tmp_path):
    path = tmp_path / "ViT-Ti_16.npz"
    _write_google_npz(tiny_source, path)
    loaded = load_backbone(TINY, path)
    assert torch.allclose(_tokens(loaded.model), _tokens(tiny_source), atol=1e-5)


def test_checkpoint_at_other_img_size_is_resampled(tiny_source, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_source.state_dict(), str(path))
    loaded = load_backbone(TINY, path, img_size=112)
    assert loaded.model.pos_embed.shape == (1, 1 + 7 * 7, 192)
    assert _tokens(loaded.model, 112).shape == (2, 50, 192)


def test_mismatched_checkpoint_names_keys(tmp_path):
    import timm

    other = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, depth=2)
    path = tmp_path / "small.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_backbone(TINY, path)
    msg = str(err.value)
    assert str(path) in msg
    assert "120 missing (blocks.10." in msg  # blocks 2..11 are not in the file; a few are named
    assert "wrong shape (blocks.0." in msg


def test_mismatched_npz_names_the_missing_key(tiny_source, tmp_path):
    path = tmp_path / "partial.npz"
    _write_google_npz(tiny_source, path, drop="Transformer/encoder_norm/scale")
    with pytest.raises(CheckpointError, match="encoder_norm/scale"):
        load_backbone(TINY, path)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("broken.pth", b"not a torch file", "cannot be read"),
        ("broken.safetensors", b"\x00\x01garbage", "cannot be read"),
        ("broken.npz", b"PK\x03\x04 truncated", "not a readable .npz"),
        ("weights.bin", b"", "unsupported file type"),
    ],
)
def test_corrupt_or_unknown_checkpoint_is_a_clear_error(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_backbone(TINY, path)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone(TINY, tmp_path / "nope.pth")


def test_pickled_objects_are_refused(tmp_path):
    """weights_only=True: a checkpoint that needs arbitrary unpickling is not executed."""
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": _Pickled()}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_backbone(TINY, path)


class _Pickled:
    pass


# --- other sources -------------------------------------------------------------------------------


def test_unknown_name_and_missing_weight_source_are_clear():
    with pytest.raises(SlsvizError, match="Unknown backbone"):
        load_backbone("resnet_9000")
    with pytest.raises(SlsvizError, match="No weights given"):
        load_backbone(TINY)  # never a silent random fallback
    with pytest.raises(SlsvizError, match="Choose one weight source"):
        load_backbone(TINY, "x.pth", hub=True)


def test_hub_offline_is_a_clear_error_that_touches_no_network(monkeypatch):
    """conftest sets HF_HUB_OFFLINE=1: no connection is even tried and the message says what to do."""
    import socket

    def no_network(*args, **kwargs):
        pytest.fail("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(OfflineError, match="local"):
        load_backbone(TINY, hub=True)


def test_random_test_backbones_are_seeded():
    a = random_backbone(TINY, img_size=112, seed=3)
    b = random_backbone(TINY, img_size=112, seed=3)
    c = random_backbone(TINY, img_size=112, seed=4)
    assert a.checksum == b.checksum != c.checksum
    assert "random" in a.source and a.id == f"{TINY}:random(3)"


def test_tiny_random_backbone_for_unit_tests():
    b = random_backbone(TINY, img_size=32, depth=3)
    assert b.num_layers == 3 and b.img_size == 32


# --- helpers -------------------------------------------------------------------------------------


def _write_google_npz(model: torch.nn.Module, path, drop: str | None = None) -> None:
    """Write ``model`` in the original Google ViT .npz layout (the inverse of timm's reader)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
    w = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
    }
    for i in range(len(model.blocks)):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = p + "MultiHeadDotProductAttention_1/"
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
        qkv_w = np.split(sd[b + "attn.qkv.weight"], 3)
        qkv_b = np.split(sd[b + "attn.qkv.bias"], 3)
        for name, wt, bs in zip(("query", "key", "value"), qkv_w, qkv_b):
            w[mha + f"{name}/kernel"] = wt.T.reshape(dim, heads, dim // heads)
            w[mha + f"{name}/bias"] = bs.reshape(heads, dim // heads)
        w[mha + "out/kernel"] = sd[b + "attn.proj.weight"].reshape(dim, heads, dim // heads).transpose(1, 2, 0)
        w[mha + "out/bias"] = sd[b + "attn.proj.bias"]
        for r in range(2):
            w[p + f"MlpBlock_3/Dense_{r}/kernel"] = sd[b + f"mlp.fc{r + 1}.weight"].T
            w[p + f"MlpBlock_3/Dense_{r}/bias"] = sd[b + f"mlp.fc{r + 1}.bias"]
    if drop:
        del w[drop]
    np.savez(path, **w)
