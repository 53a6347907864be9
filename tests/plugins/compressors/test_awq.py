"""awq: the contract; AWQ's defining property (on a layer whose inputs have a few salient channels, its
output error is below round-to-nearest's at the same bits and group, for every seed, and α = 0 is
round-to-nearest exactly); the folds it finds in a LLaMA-style block (RMSNorm → q, k, v; RMSNorm → gate,
up; v → o; up → down), run block by block, and in timm's ViT (LayerNorm → qkv, LayerNorm → fc1), checked to leave the model
unchanged; a stored scale undone at decode and counted; bad settings and missing data named."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from b2s_bench_plugins.compressors.awq import SPEC, AWQCode, AWQConfig, find_folds
from b2s_bench_plugins.compressors.quantize import QuantizeConfig, quantize_tensor
from torch import nn
from torch.nn import functional as F

import b2s_bench as b2s
from b2s_bench.compression.contract import check_storage
from b2s_bench.metrics import REPARAMETRIZED
from b2s_bench.testing import check_compressor

pytestmark = pytest.mark.usefixtures("one_thread")


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(width).uniform_(0.5, 1.5))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LlamaBlock(nn.Module):
    """RMSNorm → causal attention (q, k, v, o) → residual; RMSNorm → SwiGLU (gate, up, down) → residual."""

    def __init__(self, width: int = 64, heads: int = 4, hidden: int = 128):
        super().__init__()
        self.heads = heads
        self.input_layernorm = RMSNorm(width)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(width, width, bias=False) for _ in range(4))
        self.post_attention_layernorm = RMSNorm(width)
        self.gate_proj = nn.Linear(width, hidden, bias=False)
        self.up_proj = nn.Linear(width, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.input_layernorm(x)
        q, k, v = (p(h).reshape(b, t, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.o_proj(attn)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class TinyLlama(nn.Module):
    def __init__(self, width: int = 64, depth: int = 2, classes: int = 10):
        super().__init__()
        self.layers = nn.ModuleList(LlamaBlock(width) for _ in range(depth))
        self.norm = RMSNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean(1))


def salient(n: int, shape: tuple[int, ...], gen: torch.Generator, channels: int = 64) -> torch.Tensor:
    """Inputs whose first four channels are 100× the others in magnitude."""
    x = torch.randn(n, *shape, generator=gen)
    boost = torch.ones(channels)
    boost[:4] = 100.0
    return x * boost


def context(inputs: torch.Tensor) -> b2s.Context:
    return b2s.Context(seed=0, track="calibration", input_shape=tuple(inputs.shape[1:]), calibration=lambda n: inputs[:n])


def awq(model: nn.Module, inputs: torch.Tensor, **settings: Any) -> b2s.Compressed:
    config = b2s.build_config(AWQConfig, {"calibration_samples": 64, **settings}, owner="awq")
    return SPEC.compress(model, config, context(inputs))


@pytest.mark.parametrize("settings", [{}, {"fold": False, "symmetric": True}, {"auto_clip": False, "scale_bits": 32}])
def test_contract(settings: dict[str, Any]) -> None:
    assert check_compressor(SPEC, settings).bits > 0


def test_awq_beats_round_to_nearest_on_salient_channels_for_every_seed() -> None:
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        layer = nn.Sequential(nn.Linear(64, 96))
        calibration, test = salient(64, (8, 64), gen), salient(64, (8, 64), gen)
        with torch.no_grad():
            dense = layer(test)
            ours = awq(layer, calibration, group_size=32, auto_clip=False).module()(test)
            rtn = quantize_tensor(layer[0].weight, QuantizeConfig(bits=4, granularity="group", group_size=32, symmetric=False))
            theirs = F.linear(test, rtn.decode(), layer[0].bias)
        assert float((ours - dense).pow(2).mean()) < float((theirs - dense).pow(2).mean()), seed


def test_alpha_zero_is_round_to_nearest_exactly() -> None:
    gen = torch.Generator().manual_seed(3)
    model = TinyLlama()
    comp = awq(model, salient(16, (8, 64), gen), alpha=0.0, auto_clip=False)
    grid = QuantizeConfig(bits=4, granularity="group", group_size=128, symmetric=False, scale_bits=16)
    state = model.state_dict()
    assert len(comp.codes) == 15
    for key, code in comp.codes.items():
        rtn = quantize_tensor(state[key], grid)
        assert type(code).__name__ == "UniformCode" and torch.equal(code.decode(), rtn.decode()), key
    for key, tensor in comp.raw.items():
        assert torch.equal(tensor, state[key]), key  # no norm was touched
    assert REPARAMETRIZED not in comp.info  # nothing folded: the weights compare one by one


def llama_folds() -> dict[tuple[str, ...], str | None]:
    model = TinyLlama().eval()
    names = [k.rpartition(".")[0] for k in b2s.weight_layers(model)]
    folds, why = find_folds(model, names, torch.randn(2, 8, 64), torch.Generator().manual_seed(0))
    assert "changes the model's output" in why["head"]  # its candidate, down_proj, feeds the residual stream
    return {f.members: f.prev for f in folds}


def test_folds_in_a_llama_block() -> None:
    found = llama_folds()
    for i in range(2):
        p = f"layers.{i}."
        assert found[(p + "q_proj", p + "k_proj", p + "v_proj")] == p + "input_layernorm"
        assert found[(p + "gate_proj", p + "up_proj")] == p + "post_attention_layernorm"
        assert found[(p + "o_proj",)] == p + "v_proj"
        assert found[(p + "down_proj",)] == p + "up_proj"
    assert found[("head",)] is None


def test_folds_in_timms_vit() -> None:
    vit = pytest.importorskip("timm.models.vision_transformer")
    model = vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10).eval()
    names = [k.rpartition(".")[0] for k in b2s.weight_layers(model)]
    folds, why = find_folds(model, names, torch.randn(2, 3, 32, 32), torch.Generator().manual_seed(0))
    found = {f.members: f.prev for f in folds}
    for i in range(2):
        p = f"blocks.{i}."
        assert found[(p + "attn.qkv",)] == p + "norm1"
        assert found[(p + "mlp.fc1",)] == p + "norm2"
        assert found[(p + "mlp.fc2",)] is None and "changes the model's output" in why[p + "mlp.fc2"]  # GELU
        assert found[(p + "attn.proj",)] is None
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(32, 3, 32, 32, generator=gen)
    comp = awq(model, images, group_size=32)
    assert comp.info["folded_layers"] >= 1
    assert "folded" in comp.info[REPARAMETRIZED]  # the weight metrics and limits say not applicable
    with torch.no_grad():
        assert torch.isfinite(comp.module()(images[:4])).all()


def test_folded_model_keeps_the_dense_function_and_beats_round_to_nearest() -> None:
    gen = torch.Generator().manual_seed(5)
    model = TinyLlama().eval()
    calibration, test = salient(64, (8, 64), gen), salient(16, (8, 64), gen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wide = awq(model, calibration, bits=8, auto_clip=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the caller's model is restored
    assert wide.info["layerwise"]["chained_blocks"] == 2  # the two LLaMA blocks, one after the other
    kinds = {type(c).__name__ for c in wide.codes.values()}
    assert kinds <= {"UniformCode", "AWQCode"}
    folded = {g["folded_into"] for g in wide.info["groups"] if g["folded_into"]}
    assert "layers.0.input_layernorm" in folded or wide.info["groups"][0]["alpha"] == 0
    with torch.no_grad():
        dense = model(test)
        assert float((wide.module()(test) - dense).abs().max()) < 0.05 * float(dense.abs().max())
        ours = awq(model, calibration, bits=3, group_size=32).module()(test)
        rtn = b2s.Compressed.from_codes(
            TinyLlama().eval(),
            {
                k: quantize_tensor(v, QuantizeConfig(bits=3, granularity="group", group_size=32, symmetric=False))
                for k, v in model.state_dict().items()
                if k.endswith("proj.weight") or k == "head.weight"
            },
        )
        rtn.raw.update({k: v for k, v in model.state_dict().items() if k in rtn.raw})
        assert float((ours - dense).pow(2).mean()) < float((rtn.module()(test) - dense).pow(2).mean())


def test_a_stored_scale_is_undone_at_decode_and_counted() -> None:
    gen = torch.Generator().manual_seed(2)
    layer = nn.Sequential(nn.Linear(64, 32))
    comp = awq(layer, salient(32, (4, 64), gen), group_size=32, auto_clip=False, alpha=0.5)
    code = comp.codes["0.weight"]
    assert isinstance(code, AWQCode)
    s = code.channel_scale
    assert s.shape == (64,) and bool((s[:4] > s[4:].max()).all())  # the salient channels are scaled up
    scaled = code.scale[:, None] * (code.q - code.zero[:, None])
    assert torch.allclose(code.decode(), scaled.reshape(32, 64) / s, rtol=0, atol=0)
    grid = QuantizeConfig(bits=4, granularity="group", group_size=32, symmetric=False, scale_bits=16)
    plain = quantize_tensor(layer[0].weight.detach() * s, grid)
    assert torch.equal(plain.q, code.q) and torch.equal(plain.scale, code.scale)  # Q(W·diag(s)), stored
    assert code.bits().scales == plain.bits().scales + 64 * 16
    check_storage({"w": code})
    assert torch.equal(AWQCode.restore(code.meta(), code.tensors()).decode(), code.decode())


def test_bad_settings_and_missing_data_are_named() -> None:
    for key, value in {"bits": 1, "alpha": 1.5, "clip_max_shrink": 1.0, "alpha_grid": 0, "scale_bits": 8}.items():
        with pytest.raises(b2s.ConfigError, match=key):
            b2s.build_config(AWQConfig, {key: value}, owner="awq")
    with pytest.raises(ValueError, match="calibration"):
        SPEC.compress(nn.Sequential(nn.Linear(8, 8)), AWQConfig(), b2s.Context())


def test_a_chained_block_stores_a_scale_whose_fold_lies_in_an_earlier_block() -> None:
    # each Linear → ReLU block could take the next block's 1/s (ReLU is positively homogeneous), but a chained
    # block's inputs are fixed when it runs: the scale is stored in the code instead, and the model stays right
    torch.manual_seed(0)
    model = nn.Sequential(nn.ModuleList(nn.Sequential(nn.Linear(64, 64), nn.ReLU()) for _ in range(3))).eval()

    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = model[0]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = block(x)
            return x

    chain = Chain().eval()
    gen = torch.Generator().manual_seed(0)
    calibration, test = salient(64, (8, 64), gen), salient(8, (8, 64), gen)
    names = [k.rpartition(".")[0] for k in b2s.weight_layers(chain)]
    folds, _ = find_folds(chain, names, calibration[:2], torch.Generator().manual_seed(0))
    assert {f.members: f.prev for f in folds}[("blocks.1.0",)] == "blocks.0.0"  # the fold itself is valid
    comp = awq(chain, calibration, bits=8, auto_clip=False, alpha=0.5)
    assert comp.info["layerwise"]["chained_blocks"] == 3
    assert all(g["folded_into"] is None for g in comp.info["groups"])
    assert comp.info["stored_scales"] == names and all(isinstance(c, AWQCode) for c in comp.codes.values())
    with torch.no_grad():
        dense = chain(test)
        assert float((comp.module()(test) - dense).abs().max()) < 0.02 * float(dense.abs().max())
