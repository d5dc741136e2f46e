"""PETL modules inside timm ViT blocks: wiring, zero-init equivalence, merging, training aids."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import random_backbone
from timm.layers import DropPath
from torch import nn

from slsviz.errors import SlsvizError
from slsviz.models.petl import (
    METHODS,
    ConvpassAdapter,
    ConvpassBlock,
    LoraLinear,
    PetlConfig,
    RepAdapter,
    attach_petl,
    config_of,
    is_petl_param,
    merge_petl,
    petl_state_dict,
    set_drop_path,
    trainable_names,
)

TINY = "vit_tiny_patch16_224"  # no layer scale, D = 192, patch 16
DINO = "vit_small_patch14_dinov2"  # layer scale (ls1.gamma), D = 384, patch 14
ARCHS = {
    # 2x2 patch grids; DINOv2's layer scale set to 0.5 so its branches are not drowned by 1e-5.
    "tiny": (TINY, 32, {}),
    "dino": (DINO, 28, {"init_values": 0.5}),
}
ADAPTERS = tuple(m for m in METHODS if m not in ("linear", "full"))
MERGEABLE = ("repadapter", "lora")


def make_backbone(key: str, depth: int = 2, **kwargs) -> nn.Module:
    arch, img_size, extra = ARCHS[key]
    return random_backbone(arch, img_size=img_size, depth=depth, **extra, **kwargs).model


@pytest.fixture(scope="module", params=sorted(ARCHS))
def backbone(request) -> tuple[nn.Module, torch.Tensor]:
    """A tiny random ViT in eval mode and an input batch for it."""
    model = make_backbone(request.param)
    size = ARCHS[request.param][1]
    return model, torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def adapted(model: nn.Module, method: str, **config) -> nn.Module:
    return attach_petl(copy.deepcopy(model), PetlConfig(method, **config)).eval()


def randomise(model: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    """Non-zero values in every PETL parameter, so the adapters change what the model computes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_petl_param(name):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def features(model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_features(x, **kwargs)


# --- wiring ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_forward_shapes_and_intermediates(backbone, method):
    base, x = backbone
    model = adapted(base, method)
    depth, dim = len(model.blocks), model.embed_dim
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 1 + 4, dim)
        inter = model.forward_intermediates(x, indices=depth, intermediates_only=True)
        assert len(inter) == depth and all(t.shape == (2, dim, 2, 2) for t in inter)
        nlc = model.forward_intermediates(x, indices=[0], output_fmt="NLC", intermediates_only=True)
        assert len(nlc) == 1 and nlc[0].shape == (2, 4, dim)
        final, inter = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x)) and len(inter) == depth
        assert model(x).shape == (2, dim)


@pytest.mark.parametrize("method", METHODS)
def test_backbone_keys_unchanged_and_petl_names_marked(backbone, method):
    base, _ = backbone
    model = adapted(base, method)
    base_keys = list(base.state_dict())
    keys = list(model.state_dict())
    assert [k for k in keys if not is_petl_param(k)] == base_keys  # same names, same order
    petl_keys = [k for k in keys if k not in base_keys]
    assert all(is_petl_param(k) for k in petl_keys)
    assert bool(petl_keys) == (method in ADAPTERS)
    result = model.load_state_dict(base.state_dict(), strict=False)  # a backbone checkpoint still loads
    assert sorted(result.missing_keys) == sorted(petl_keys) and not result.unexpected_keys


@pytest.mark.parametrize("method", METHODS)
def test_fresh_adapters_equal_backbone(backbone, method):
    base, x = backbone
    model = adapted(base, method)
    assert (features(model, x) - features(base, x)).abs().max() <= 1e-6
    with torch.no_grad():
        ours = model.forward_intermediates(x, intermediates_only=True)
        theirs = base.forward_intermediates(x, intermediates_only=True)
    assert all((a - b).abs().max() <= 1e-6 for a, b in zip(ours, theirs))


@pytest.mark.parametrize("method", ADAPTERS)
def test_randomised_adapters_change_every_block(backbone, method):
    base, x = backbone
    model = randomise(adapted(base, method))
    with torch.no_grad():
        ours = model.forward_intermediates(x, intermediates_only=True)
        theirs = base.forward_intermediates(x, intermediates_only=True)
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(ours, theirs))


def test_attention_mask_is_passed_through(backbone):
    """timm calls blocks as blk(x, attn_mask=..., is_causal=...) when given a mask."""
    base, x = backbone
    mask = torch.zeros(5, 5).masked_fill(torch.eye(5, dtype=torch.bool).roll(1, 0), float("-inf"))
    for method in ADAPTERS:
        model = adapted(base, method)
        masked = features(model, x, attn_mask=mask)
        assert (masked - features(base, x, attn_mask=mask)).abs().max() <= 1e-6
        assert (masked - features(model, x)).abs().max() > 1e-4  # the mask did reach attention
        assert features(model, x, is_causal=True).shape == masked.shape


@pytest.mark.parametrize("method", METHODS)
def test_sliced_blocks_still_run(backbone, method):
    base, x = backbone
    model = randomise(adapted(base, method))
    with torch.no_grad():
        first = model.forward_intermediates(x, indices=[0], output_fmt="NLC", intermediates_only=True)[0]
        model.blocks = model.blocks[:1]
        assert len(model.blocks) == 1
        out = model.forward_features(x)
    assert torch.allclose(model.norm(first), out[:, 1:], atol=1e-6)


def test_grid_size_comes_from_input():
    """8x8 (the 112-px grid), 2x2 and a non-square 2x4 grid; the model's own grid is not required."""
    for img_size, tokens in ((128, 64), (32, 4), ((32, 64), 8)):
        base = random_backbone(TINY, img_size=img_size, depth=1).model
        model = randomise(adapted(base, "convpass"))
        shape = (1, 3, *img_size) if isinstance(img_size, tuple) else (1, 3, img_size, img_size)
        x = torch.randn(shape)
        assert features(model, x).shape == (1, 1 + tokens, model.embed_dim)
    adapter = randomise(ConvpassAdapter(16, 4, scale=1.0, dropout=0.0, num_prefix_tokens=1, grid_size=(2, 2)))
    assert adapter(torch.randn(1, 1 + 36, 16)).shape == (1, 37, 16)  # a square grid other than the model's
    with pytest.raises(SlsvizError, match="grid"):
        adapter(torch.randn(1, 1 + 7, 16))


def test_register_tokens_are_prefix_tokens():
    base = random_backbone("vit_small_patch14_reg4_dinov2", img_size=28, depth=1, init_values=0.5).model
    assert base.num_prefix_tokens == 5
    x = torch.randn(2, 3, 28, 28)
    for method in ADAPTERS:
        model = adapted(base, method)
        assert (features(model, x) - features(base, x)).abs().max() <= 1e-6
        assert (features(randomise(model), x) - features(base, x)).abs().max() > 1e-3
    assert adapted(base, "convpass").blocks[0].adapter_attn.num_prefix_tokens == 5


@pytest.mark.integration
def test_default_backbone_at_112px(default_backbone):
    """The real DINOv2 ViT-S/14 at 112 px: an 8x8 grid through all 12 adapted blocks."""
    base = default_backbone.model
    x = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    expected = features(base, x)
    for method in ("convpass", "lora"):
        model = adapted(base, method)
        with torch.no_grad():
            inter = model.forward_intermediates(x, intermediates_only=True)
        assert len(inter) == 12 and all(t.shape == (1, 384, 8, 8) for t in inter)
        assert (features(model, x) - expected).abs().max() <= 1e-5


# --- Convpass ---------------------------------------------------------------------------------------


def reference_convpass(adapter: ConvpassAdapter, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Jie & Deng's Convpass forward, with the 14x14 grid and CLS-only prefix made parameters."""
    b, n, _ = x.shape
    dim = adapter.adapter_conv.in_channels
    act = lambda t: t * torch.sigmoid(1.702 * t)  # noqa: E731
    down = act(adapter.adapter_down(x))
    patch = down[:, 1:].reshape(b, rows, cols, dim).permute(0, 3, 1, 2)
    patch = adapter.adapter_conv(patch).permute(0, 2, 3, 1).reshape(b, rows * cols, dim)
    cls = down[:, :1].reshape(b, 1, 1, dim).permute(0, 3, 1, 2)
    cls = adapter.adapter_conv(cls).permute(0, 2, 3, 1).reshape(b, 1, dim)
    return adapter.adapter_up(act(torch.cat([cls, patch], dim=1))) * adapter.scale


@pytest.mark.parametrize("rows,cols", [(8, 8), (2, 2), (2, 4)])
def test_convpass_adapter_matches_reference(rows, cols):
    adapter = ConvpassAdapter(24, 6, scale=0.7, dropout=0.1, num_prefix_tokens=1, grid_size=(rows, cols)).eval()
    randomise(adapter, std=0.3)
    x = torch.randn(3, 1 + rows * cols, 24)
    with torch.no_grad():
        assert torch.allclose(adapter(x), reference_convpass(adapter, x, rows, cols), atol=1e-6)


def test_convpass_prefix_tokens_see_only_the_centre_tap():
    adapter = ConvpassAdapter(24, 6, scale=1.0, dropout=0.0, num_prefix_tokens=2, grid_size=(4, 4))
    randomise(adapter, std=0.3)
    x = torch.randn(2, 2 + 16, 24)
    with torch.no_grad():
        before = adapter(x)
        centre = adapter.adapter_conv.weight[:, :, 1, 1].clone()
        adapter.adapter_conv.weight.add_(torch.randn_like(adapter.adapter_conv.weight))
        adapter.adapter_conv.weight[:, :, 1, 1] = centre
        after = adapter(x)
    assert torch.equal(before[:, :2], after[:, :2])  # CLS and register token: centre tap only
    assert (before[:, 2:] - after[:, 2:]).abs().min() > 0  # every patch token has neighbours on 4x4
    # Each prefix token alone, as Convpass' 1x1 map through the padded conv, gives the same.
    with torch.no_grad():
        down = adapter.act(adapter.adapter_down(x[:, :2]))
        conv = adapter.adapter_conv(down.reshape(4, 6, 1, 1)).reshape(2, 2, 6)
        expected = adapter.scale * adapter.adapter_up(adapter.act(conv))
    assert torch.allclose(after[:, :2], expected, atol=1e-6)


def test_convpass_init_and_block_layout(backbone):
    base, _ = backbone
    model = adapted(base, "convpass")
    block = model.blocks[0]
    assert isinstance(block, ConvpassBlock) and type(block.attn) is type(base.blocks[0].attn)
    conv = block.adapter_attn.adapter_conv
    expected = torch.zeros_like(conv.weight)
    expected[:, :, 1, 1] = torch.eye(8)
    assert torch.equal(conv.weight, expected) and not conv.bias.any()
    assert not block.adapter_mlp.adapter_up.weight.any() and not block.adapter_mlp.adapter_up.bias.any()
    assert block.adapter_attn.scale == 0.1 and block.adapter_attn.num_prefix_tokens == 1
    assert type(block.ls1) is type(base.blocks[0].ls1)  # layer scale (or its absence) kept
    xavier = adapted(base, "convpass", init="xavier").blocks[0].adapter_attn.adapter_conv.weight
    assert xavier[:, :, 0, 0].abs().sum() > 0


# --- merging ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", MERGEABLE)
def test_merge_equals_unmerged(backbone, method):
    base, x = backbone
    model = randomise(adapted(base, method))
    unmerged = features(model, x)
    assert (unmerged - features(base, x)).abs().max() > 1e-3
    merged_model = merge_petl(model)
    assert merged_model is model
    assert (features(model, x) - unmerged).abs().max() <= 1e-5
    assert list(model.state_dict()) == list(base.state_dict())
    assert not any(is_petl_param(n) for n, _ in model.named_parameters())
    assert not any(isinstance(m, (RepAdapter, LoraLinear)) for m in model.modules())
    assert (features(merge_petl(model), x) - unmerged).abs().max() <= 1e-5  # merging again: no-op


def test_repadapter_merge_into_bias_free_qkv():
    base = make_backbone("tiny", depth=1, qkv_bias=False)
    model = randomise(adapted(base, "repadapter"))
    x = torch.randn(2, 3, 32, 32)
    unmerged = features(model, x)
    merge_petl(model)
    assert (features(model, x) - unmerged).abs().max() <= 1e-5
    assert set(model.state_dict()) - set(base.state_dict()) == {"blocks.0.attn.qkv.bias"}


@pytest.mark.parametrize("method", ("convpass", "adaptformer", "linear"))
def test_merge_is_a_no_op_for_the_others(backbone, method):
    base, x = backbone
    model = randomise(adapted(base, method))
    keys, before = list(model.state_dict()), features(model, x)
    merge_petl(model)
    assert list(model.state_dict()) == keys and torch.equal(features(model, x), before)


def test_repadapter_affine_form():
    adapter = randomise(RepAdapter(12, 4, scale=0.5, dropout=0.1, groups=2)).eval()
    m, c = adapter.affine()
    x = torch.randn(2, 5, 12)
    with torch.no_grad():
        assert torch.allclose(adapter(x), x @ m.T + c, atol=1e-6)


def test_lora_layer_keeps_the_base_tensors():
    base = nn.Linear(6, 9)
    layer = LoraLinear(base, rank=2, scaling=2.0, dropout=0.0)
    assert layer.weight is base.weight and layer.bias is base.bias and layer.scaling == 2.0
    assert list(dict(layer.named_parameters())) == ["weight", "bias", "lora_A", "lora_B"]
    assert not layer.lora_B.any() and layer.lora_A.abs().sum() > 0
    x = torch.randn(3, 6)
    with torch.no_grad():
        assert torch.equal(layer(x), base(x))
        layer.lora_B.normal_()
        expected = base(x) + 2.0 * x @ layer.lora_A.T @ layer.lora_B.T
        assert torch.allclose(layer(x), expected, atol=1e-5)


@pytest.mark.parametrize("parts", [(0,), (0, 2), (0, 1, 2), (1,)])
def test_lora_on_slices_of_a_fused_layer_equals_separate_layers(parts):
    """LoRA on query and value of a transformers ViT is LoRA on thirds of timm's fused qkv: the same
    numbers as three Linear layers, each with its own LoRA, and merged the same."""
    base = nn.Linear(6, 12)
    layer = LoraLinear(base, rank=2, scaling=1.5, dropout=0.0, parts=parts)
    assert layer.lora_A.shape == (2 * len(parts), 6) and layer.lora_B.shape == (4 * len(parts), 2)
    with torch.no_grad():
        layer.lora_B.normal_()
        x = torch.randn(3, 5, 6)
        expected = base(x).clone()
        for j, p in enumerate(parts):
            a, b = layer.lora_A[2 * j:2 * j + 2], layer.lora_B[4 * j:4 * j + 4]
            expected[..., 4 * p:4 * p + 4] += 1.5 * x @ a.T @ b.T
        assert torch.allclose(layer(x), expected, atol=1e-5)
        merged = copy.deepcopy(layer).merged()
        assert torch.allclose(merged(x), expected, atol=1e-5)


def test_lora_targets_layers_and_biases_choose_what_the_task_owns(backbone):
    base, x = backbone
    config = PetlConfig("lora", bottleneck=2, targets=("q", "v", "proj", "fc1", "fc2"), layers=(1,), bias="lora_only")
    model = randomise(adapted(base, config.method, **{k: v for k, v in config.to_dict().items() if k != "method"}))
    assert not isinstance(model.blocks[0].attn.qkv, LoraLinear)
    assert all(isinstance(m, LoraLinear) for m in (model.blocks[1].attn.qkv, model.blocks[1].attn.proj,
                                                    model.blocks[1].mlp.fc1, model.blocks[1].mlp.fc2))
    assert model.blocks[1].attn.qkv.parts == (0, 2)
    owned = trainable_names(model)
    assert {n for n in owned if n.endswith(".bias")} == {f"blocks.1.{m}.bias" for m in ("attn.qkv", "attn.proj",
                                                                                       "mlp.fc1", "mlp.fc2")}
    assert set(petl_state_dict(model)) == set(owned)
    with torch.no_grad():
        expected = features(model, x)
        merged = merge_petl(copy.deepcopy(model))
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    assert (features(merged, x) - expected).abs().max() <= 1e-5
    everything = adapted(base, "lora", bias="all")
    assert {n for n in trainable_names(everything) if "lora_" not in n} == {n for n, _ in base.named_parameters()
                                                                            if "bias" in n}
    with pytest.raises(SlsvizError, match="do not fit"):
        adapted(base, "lora", layers=(len(base.blocks),))


def test_a_full_fine_tune_owns_every_weight(backbone):
    base, x = backbone
    model = adapted(base, "full")
    assert trainable_names(model) == [n for n, _ in model.named_parameters()]
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(features(model, x), features(base, x))


# --- training aids --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [m for m in METHODS if m != "full"])  # full: see test_a_full_fine_tune_owns_every_weight
def test_only_petl_params_trainable(backbone, method):
    base, x = backbone
    model = adapted(base, method)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [n for n, _ in model.named_parameters() if is_petl_param(n)] == trainable_names(model)
    assert all(p.requires_grad for p in base.parameters())  # the original was not touched
    model.reset_classifier(3)
    assert trainable_names(model)[-2:] == ["head.weight", "head.bias"]
    sd = petl_state_dict(model)
    assert list(sd) == trainable_names(model)
    assert all(t.device.type == "cpu" and not t.requires_grad for t in sd.values())


@pytest.mark.parametrize("method", ADAPTERS)
def test_gradients_reach_petl_params_only(backbone, method):
    base, x = backbone
    model = adapted(base, method).train()
    model.set_grad_checkpointing(True)
    model.forward_features(x).square().mean().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == is_petl_param(name), name
    zero_init = {"convpass": "adapter_up", "repadapter": "conv_B", "lora": "lora_B", "adaptformer": "up_proj"}
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if zero_init[method] in n)


def test_petl_state_dict_restores_a_trained_model(backbone):
    base, x = backbone
    for method in ADAPTERS:
        trained = randomise(adapted(base, method))
        fresh = adapted(base, method)
        result = fresh.load_state_dict(petl_state_dict(trained), strict=False)
        assert not result.unexpected_keys and all(not is_petl_param(k) for k in result.missing_keys)
        assert torch.equal(features(fresh, x), features(trained, x))


def test_set_drop_path_schedule_and_randomness(backbone):
    base, x = backbone
    model = randomise(adapted(base, "convpass", dropout=0.0)).train()
    x = x.repeat(4, 1, 1, 1)
    assert torch.equal(features(model, x), features(model, x))  # no dropout, no drop path yet
    assert set_drop_path(model, 0.5) is model
    first, last = model.blocks[0], model.blocks[-1]
    assert isinstance(first.drop_path1, nn.Identity) and isinstance(first.drop_path2, nn.Identity)
    assert isinstance(last.drop_path2, DropPath) and last.drop_path2.drop_prob == pytest.approx(0.5)
    torch.manual_seed(0)
    assert not torch.equal(features(model, x), features(model, x))
    model.eval()
    assert torch.equal(features(model, x), features(model, x))
    set_drop_path(model, 0.0)
    assert all(isinstance(b.drop_path1, nn.Identity) for b in model.blocks)
    with pytest.raises(SlsvizError):
        set_drop_path(model, 1.0)


@pytest.mark.parametrize("method", METHODS)
def test_deepcopy_is_identical_and_independent(backbone, method):
    base, x = backbone
    model = randomise(adapted(base, method))
    twin = copy.deepcopy(model)
    assert torch.equal(features(twin, x), features(model, x))
    assert config_of(twin) == config_of(model)
    if method in ADAPTERS:
        randomise(twin, seed=1)
        assert not torch.equal(features(twin, x), features(model, x))


# --- attaching and the config ---------------------------------------------------------------------------------


def test_config_of_and_attach_errors(backbone):
    base, _ = backbone
    assert config_of(base) is None
    model = adapted(base, "lora", bottleneck=4)
    assert config_of(model) == PetlConfig("lora", bottleneck=4)
    with pytest.raises(SlsvizError, match="already adapted"):
        attach_petl(model, "convpass")
    with pytest.raises(SlsvizError, match="VisionTransformer"):
        attach_petl(nn.Linear(2, 2), "convpass")
    copy_ = copy.deepcopy(base)
    with pytest.raises(SlsvizError, match="divide"):
        attach_petl(copy_, PetlConfig("repadapter", bottleneck=10, groups=5))  # 5 divides neither 192 nor 384
    assert config_of(copy_) is None and list(copy_.state_dict()) == list(base.state_dict())  # left unchanged


def test_attach_accepts_a_method_name_and_defaults():
    model = attach_petl(make_backbone("tiny", depth=1), "adaptformer")
    assert config_of(model) == PetlConfig("adaptformer", scale=0.1)
    assert model.blocks[0].adapter_mlp.down_proj.out_features == 8


def test_config_defaults_and_round_trip():
    assert PetlConfig().method == "convpass" and PetlConfig().scale == 0.1
    assert PetlConfig("repadapter").scale == 1.0 and PetlConfig("adaptformer").scale == 0.1
    assert PetlConfig("lora", bottleneck=4, alpha=8).scale == 2.0
    assert PetlConfig("linear").scale is None
    for method in METHODS:
        config = PetlConfig(method, bottleneck=4, dropout=0.0)
        d = json.loads(json.dumps(config.to_dict()))
        assert set(d) == {"method", "bottleneck", "scale", "alpha", "dropout", "groups", "init", "targets", "layers",
                          "rslora", "bias"}
        assert PetlConfig.from_dict(d) == config
    assert PetlConfig.from_dict({"method": "convpass", "scale": 10}).scale == 10.0
    assert PetlConfig.from_dict({}) == PetlConfig()
    lora = PetlConfig("lora", bottleneck=4, targets=("fc2", "v", "q"), layers=(1, 0), rslora=True, bias="lora_only")
    assert lora.targets == ("q", "v", "fc2") and lora.layers == (0, 1) and lora.scale == 8.0 / 2.0
    assert PetlConfig.from_dict(json.loads(json.dumps(lora.to_dict()))) == lora


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "vpt"}, "convpass, repadapter, lora, adaptformer, linear, full"),
        ({"bottleneck": 0}, "bottleneck"),
        ({"bottleneck": 2.5}, "bottleneck"),
        ({"scale": 0.0}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"dropout": 1.0}, "dropout"),
        ({"alpha": -1.0}, "alpha"),
        ({"groups": 0}, "groups"),
        ({"method": "repadapter", "bottleneck": 9, "groups": 2}, "divisible"),
        ({"method": "lora", "scale": 3.0}, "alpha"),
        ({"method": "linear", "scale": 1.0}, "scale"),
        ({"method": "lora", "init": "xavier"}, "init"),
        ({"method": "full", "scale": 1.0}, "scale"),
        ({"method": "lora", "targets": ("qkv", "q")}, "parts"),
        ({"method": "lora", "targets": ("query",)}, "qkv, q, k, v, proj, fc1, fc2"),
        ({"method": "lora", "targets": ()}, "once"),
        ({"method": "lora", "layers": (1, 1)}, "once"),
        ({"method": "lora", "layers": (-1,)}, "at least 0"),
        ({"method": "lora", "bias": "some"}, "none, lora_only, all"),
        ({"method": "convpass", "bias": "all"}, "LoRA's settings"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(SlsvizError, match=match):
        PetlConfig(**kwargs)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(SlsvizError, match="rank"):
        PetlConfig.from_dict({"method": "lora", "rank": 4})
