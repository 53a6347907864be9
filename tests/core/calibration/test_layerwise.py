"""Block-by-block calibration: the blocks found, the statistics (Hessians through im2col, per-channel
|x|, column norms), the chained pass with extra arguments, the true-sequential order (input groups,
each group's statistics over the compressed earlier groups), and the planned peak memory of LLaMA-7B."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from b2s_bench.calibration import (
    BlockStep,
    LayerStats,
    calibrate_blocks,
    capture_inputs,
    find_blocks,
    im2col_rows,
    input_groups,
    plan_peak_memory,
)
from b2s_bench.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


# -- a small LLaMA-style model (RMSNorm, rotary attention with position ids, SwiGLU MLP) ------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


def rotate(x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    freq = 1.0 / (10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
    angle = position_ids[:, None, :, None].float() * freq  # (b, 1, s, half)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(dim, dim, bias=False) for _ in range(4))

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        b, s, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        q, k = rotate(q, position_ids), rotate(k, position_ids)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        if attention_mask is not None:
            scores = scores.masked_fill(~attention_mask[:, None, None, :], float("-inf"))
        out = scores.softmax(-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, s, d))


class Layer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(dim), RMSNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.gate_proj, self.up_proj = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(
        self, x: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor]:
        x = x + self.self_attn(self.input_layernorm(x), position_ids, attention_mask)
        h = self.post_attention_layernorm(x)
        return (x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h)),)  # a tuple, like HF layers


class Llama(nn.Module):
    def __init__(self, vocab: int, dim: int, layers: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Layer(dim, heads, hidden) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed_tokens(ids)
        position_ids = torch.arange(ids.shape[1], device=ids.device)[None].expand(ids.shape[0], -1)
        for layer in self.layers:
            x = layer(x, position_ids=position_ids, attention_mask=attention_mask)[0]
        return self.lm_head(self.norm(x))


def small_llama(seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    return Llama(vocab=50, dim=16, layers=3, heads=2, hidden=24).eval()


def token_batches(n: int = 3, seq: int = 7) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        mask = torch.ones(2, seq, dtype=torch.bool)
        mask[1, -2:] = False  # padding in the second sequence: an extra argument that matters
        out.append({"ids": torch.randint(0, 50, (2, seq), generator=gen), "attention_mask": mask})
    return out


# -- the blocks ------------------------------------------------------------------------------------------


def test_blocks_of_a_transformer_are_its_layers_chained_and_the_rest_one_layer_each() -> None:
    blocks = find_blocks(small_llama())
    assert [(b.name, b.chained) for b in blocks] == [
        ("layers.0", True),
        ("layers.1", True),
        ("layers.2", True),
        ("lm_head", False),
    ]


def test_blocks_of_a_cnn_are_its_layers_and_the_rule_is_overridable() -> None:
    model = tiny_model(0)
    assert [b.name for b in find_blocks(model)] == ["features.0", "features.4", "classifier.1", "classifier.3"]
    assert not any(b.chained for b in find_blocks(model))
    named = find_blocks(model, ["classifier"])
    assert [b.name for b in named] == ["features.0", "features.4", "classifier"]
    assert [b.name for b in find_blocks(small_llama(), "layers")][:2] == [
        "layers.0.self_attn.q_proj",
        "layers.0.self_attn.k_proj",
    ]
    with pytest.raises(ValueError, match="blocks must be"):
        find_blocks(model, "stages")
    with pytest.raises(ValueError, match="no_such"):
        find_blocks(model, ["no_such"])


# -- the statistics --------------------------------------------------------------------------------------


def test_conv_rows_are_im2col_in_the_weight_order() -> None:
    conv = nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    x = torch.randn(2, 3, 9, 8)
    rows = im2col_rows(conv, x)
    y = conv(x)
    via_rows = rows @ conv.weight.reshape(5, -1).t() + conv.bias
    assert torch.allclose(via_rows, y.permute(0, 2, 3, 1).reshape(-1, 5), atol=1e-5)


def test_statistics_are_the_hessian_the_column_norms_and_per_channel_abs() -> None:
    model = tiny_model(0)
    batches = [torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    got: dict[str, LayerStats] = {}
    report = calibrate_blocks(
        model,
        batches,
        lambda step: got.update(step.stats),
        statistics=("hessian", "col_norm", "mean_abs", "max_abs"),
    )
    assert report.layers == ["features.0", "features.4", "classifier.1", "classifier.3"] and not report.skipped
    for name in report.layers:
        layer = model.get_submodule(name)
        x = torch.cat([args[0] for args, _ in capture_inputs(model, layer, batches)])
        rows = im2col_rows(layer, x).double()
        s = got[name]
        assert s.rows == rows.shape[0]
        assert s.hessian is not None and torch.allclose(
            s.hessian.double(), 2 * rows.t() @ rows / rows.shape[0], rtol=1e-4, atol=1e-5
        )
        assert s.col_norm is not None and torch.allclose(s.col_norm.double(), rows.norm(dim=0), rtol=1e-4, atol=1e-5)
        channels = x.reshape(-1, x.shape[-1]) if isinstance(layer, nn.Linear) else x.movedim(1, -1).reshape(-1, x.shape[1])
        assert s.mean_abs is not None and torch.allclose(s.mean_abs, channels.abs().mean(0), atol=1e-5)
        assert s.max_abs is not None and torch.equal(s.max_abs, channels.abs().amax(0))


def test_a_grouped_conv_gets_per_channel_statistics_only_and_a_reason() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1))
    got: dict[str, LayerStats] = {}
    report = calibrate_blocks(model, [torch.randn(2, 4, 6, 6)], lambda s: got.update(s.stats), statistics=("hessian", "max_abs"))
    assert "grouped convolution" in report.skipped["0"]
    assert got["0"].hessian is None and got["0"].max_abs is not None and got["1"].hessian is not None
    skipped = calibrate_blocks(model, [torch.randn(2, 4, 6, 6)], lambda s: None).skipped
    assert set(skipped) == {"0"}
    with pytest.raises(ValueError, match="statistics must be among"):
        calibrate_blocks(model, [torch.randn(2, 4, 6, 6)], lambda s: None, statistics=("fisher",))


# -- the pass --------------------------------------------------------------------------------------------


def test_chained_blocks_see_what_the_whole_model_feeds_them_with_their_extra_arguments() -> None:
    model = small_llama()
    batches = token_batches()
    seen: dict[str, list[tuple[tuple[object, ...], dict[str, object]]]] = {}

    def record(step: BlockStep) -> None:
        seen[step.block.name] = step.inputs
        assert set(step.stats) == set(step.layers)  # only this block's statistics are live
        assert all(name.startswith(step.block.name) for name in step.stats)

    report = calibrate_blocks(model, batches, record)
    assert report.unchained is None and report.chained == 3 and report.blocks == ["layers.0", "layers.1", "layers.2", "lm_head"]
    for name in ("layers.1", "layers.2"):
        direct = capture_inputs(model, model.get_submodule(name), batches)
        for (a, k), (a2, k2) in zip(seen[name], direct):
            assert torch.allclose(a[0], a2[0], atol=1e-6)  # type: ignore[arg-type]
            assert torch.equal(k["attention_mask"], k2["attention_mask"]) and torch.equal(k["position_ids"], k2["position_ids"])  # type: ignore[arg-type]


def test_later_blocks_see_the_outputs_of_the_compressed_earlier_ones() -> None:
    model = small_llama()
    batches = token_batches()
    hessians: dict[str, torch.Tensor] = {}

    def compress(step: BlockStep) -> None:
        for name, layer in step.layers.items():
            stats = step.stats[name]
            assert stats.hessian is not None
            hessians[name] = stats.hessian
            with torch.no_grad():
                layer.weight.copy_(torch.round(layer.weight * 4) / 4)  # a coarse grid, in place

    calibrate_blocks(model, batches, compress)
    # the model is now compressed: a later block's Hessian is over the inputs the compressed blocks before it
    # give (all layers of one block get theirs from one pass over its inputs: q_proj's are its block's inputs)
    layer = model.get_submodule("layers.2.self_attn.q_proj")
    rows = torch.cat([im2col_rows(layer, a[0]) for a, _ in capture_inputs(model, layer, batches)]).double()
    assert torch.allclose(
        hessians["layers.2.self_attn.q_proj"].double(), 2 * rows.t() @ rows / rows.shape[0], rtol=1e-4, atol=1e-6
    )
    head = torch.cat([im2col_rows(model.lm_head, a[0]) for a, _ in capture_inputs(model, model.lm_head, batches)]).double()
    assert torch.allclose(hessians["lm_head"].double(), 2 * head.t() @ head / head.shape[0], rtol=1e-4, atol=1e-6)


# -- the true-sequential order ----------------------------------------------------------------------------


def test_input_groups_of_a_llama_block_are_qkv_o_gate_up_down_from_hooks() -> None:
    model = small_llama()
    block = model.layers[1]
    layers = {f"layers.1.{n}": m for n, m in block.named_modules() if isinstance(m, nn.Linear)}
    (args, kwargs), *_ = capture_inputs(model, block, token_batches(1))
    groups = input_groups(layers, lambda: block(*args, **kwargs))
    p = "layers.1."
    assert groups == [
        [f"{p}self_attn.q_proj", f"{p}self_attn.k_proj", f"{p}self_attn.v_proj"],
        [f"{p}self_attn.o_proj"],
        [f"{p}gate_proj", f"{p}up_proj"],
        [f"{p}down_proj"],
    ]
    # the rule is the tensor object, not names or values: copies of one input are apart; an unreached layer comes last
    a, b, c, unused = (nn.Linear(4, 4) for _ in range(4))
    x = torch.randn(2, 4)
    assert input_groups({"a": a, "b": b, "c": c, "unused": unused}, lambda: (b(x.clone()), a(x.clone()), c(x))) == [
        ["b"],
        ["a"],
        ["c"],
        ["unused"],
    ]


def coarse(step: BlockStep, hessians: dict[str, torch.Tensor], order: list[tuple[str, int, int]]) -> None:
    """A callback: record each layer's Hessian and (block, group, groups), then round its weight coarsely in place."""
    order.append((step.block.name, step.group, step.groups))
    for name, layer in step.layers.items():
        stats = step.stats[name]
        assert stats.hessian is not None
        hessians[name] = stats.hessian
        with torch.no_grad():
            layer.weight.copy_(torch.round(layer.weight * 4) / 4)


def hand_hessian(model: nn.Module, name: str, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """A layer's Hessian from the whole model's forward, accumulated batch by batch as the pass does."""
    layer = model.get_submodule(name)
    stats = LayerStats(name)
    for args, _ in capture_inputs(model, layer, batches):
        stats.add(layer, args[0], ("hessian",), True)
    assert stats.finish().hessian is not None
    return stats.hessian


def test_sequential_statistics_of_a_group_are_over_the_compressed_earlier_groups() -> None:
    batches = token_batches()
    model = small_llama()
    hessians: dict[str, torch.Tensor] = {}
    order: list[tuple[str, int, int]] = []
    report = calibrate_blocks(model, batches, lambda s: coarse(s, hessians, order), sequential=True)
    assert order == [(f"layers.{i}", g, 4) for i in range(3) for g in range(4)] + [("lm_head", 0, 1)]
    assert report.info()["sequential_groups"] == {"layers.0": 4, "layers.1": 4, "layers.2": 4, "lm_head": 1}

    def rounded(names: list[str]) -> nn.Module:  # by hand: the dense model with exactly these layers rounded
        hand = small_llama()
        for n in names:
            w = hand.get_submodule(n).weight
            with torch.no_grad():
                w.copy_(torch.round(w * 4) / 4)
        return hand

    qkv = [f"layers.1.self_attn.{p}_proj" for p in "qkv"]
    earlier = [n for n, m in small_llama().named_modules() if isinstance(m, nn.Linear) and n.startswith("layers.0.")]
    # o_proj's Hessian: over the attention output of the rounded q, k, v (and of the rounded block before)
    assert torch.equal(
        hessians["layers.1.self_attn.o_proj"], hand_hessian(rounded([*earlier, *qkv]), "layers.1.self_attn.o_proj", batches)
    )
    attn = [*qkv, "layers.1.self_attn.o_proj", "layers.1.gate_proj", "layers.1.up_proj"]
    assert torch.equal(hessians["layers.1.down_proj"], hand_hessian(rounded([*earlier, *attn]), "layers.1.down_proj", batches))
    assert torch.equal(
        hessians["layers.1.self_attn.q_proj"], hand_hessian(rounded(earlier), "layers.1.self_attn.q_proj", batches)
    )

    # the one-pass order (the default): o_proj's Hessian is the dense block's, unlike the sequential one
    one_pass: dict[str, torch.Tensor] = {}
    calibrate_blocks(small_llama(), batches, lambda s: coarse(s, one_pass, []))
    assert torch.equal(
        one_pass["layers.1.self_attn.o_proj"], hand_hessian(rounded(earlier), "layers.1.self_attn.o_proj", batches)
    )
    assert not torch.allclose(one_pass["layers.1.self_attn.o_proj"], hessians["layers.1.self_attn.o_proj"], rtol=1e-3)


def test_the_sequential_pass_holds_one_groups_statistics_within_the_plan() -> None:
    batches = token_batches()
    model = small_llama()
    live: list[int] = []

    def measure(step: BlockStep) -> None:
        live.append(sum(4 * s.hessian.numel() for s in step.stats.values() if s.hessian is not None))

    calibrate_blocks(model, batches, measure, sequential=True)
    plan = plan_peak_memory(model, batches[0], len(batches), sequential=True)
    one_pass = plan_peak_memory(model, batches[0], len(batches))
    dim, hidden = 16, 24
    assert max(live) == plan.statistics == 4 * 3 * dim * dim  # q, k, v: the largest group here
    assert one_pass.statistics == 4 * (6 * dim * dim + hidden * hidden) > plan.statistics
    assert plan.peak < one_pass.peak and plan.transient == one_pass.transient and plan.block_io == one_pass.block_io


class Down(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class UNetLike(nn.Module):
    """Repeated blocks with a pooling between them: their inputs are not each other's outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 1)
        self.down = nn.ModuleList(Down() for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.down:
            x = F.max_pool2d(block(x), 2)
        return x


def test_blocks_with_something_between_them_are_not_chained_and_the_report_says_why() -> None:
    model = UNetLike().eval()
    batches = [torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    assert [b.chained for b in find_blocks(model)] == [False, True, True, True]
    got: dict[str, LayerStats] = {}
    report = calibrate_blocks(model, batches, lambda step: got.update(step.stats))
    assert report.chained == 0 and report.unchained is not None and "down.1 is not the output of down.0" in report.unchained
    layer = model.get_submodule("down.2.conv")
    rows = torch.cat([im2col_rows(layer, a[0]) for a, _ in capture_inputs(model, layer, batches)]).double()
    assert torch.allclose(got["down.2.conv"].hessian.double(), 2 * rows.t() @ rows / rows.shape[0], rtol=1e-4, atol=1e-6)  # type: ignore[union-attr]


# -- planned peak memory ---------------------------------------------------------------------------------


def test_llama_7b_block_by_block_fits_80_gb_as_planned_on_the_meta_device() -> None:
    vocab, dim, n_layers, heads, hidden, seq, samples = 32000, 4096, 32, 32, 11008, 2048, 128
    with torch.device("meta"):
        model = Llama(vocab, dim, n_layers, heads, hidden).to(torch.float16)
    example = torch.zeros(1, seq, dtype=torch.long, device="meta")
    plan = plan_peak_memory(model, example, samples, statistics=("hessian",))

    params = vocab * dim + n_layers * (4 * dim * dim + 3 * dim * hidden + 2 * dim) + dim + dim * vocab
    assert params == 6_738_415_616  # LLaMA-7B
    assert plan.weights == 2 * params  # fp16
    hidden_state = seq * dim * 2
    position_ids = seq * 8
    assert plan.block == "layers.0"
    assert plan.block_io == samples * (hidden_state + position_ids + hidden_state)  # inputs + outputs, all samples
    assert plan.statistics == 4 * (6 * dim * dim + hidden * hidden)  # q, k, v, o, gate, up, down: fp32 XᵀX together
    scores = heads * seq * seq * 2  # one sample's attention scores, fp16
    # the scores and their softmax live together (2 x 256 MiB); besides, a few 16 MiB hidden states (q, k, v, ...)
    assert 2 * scores <= plan.transient <= 2 * scores + 2**28
    assert plan.capture == hidden_state + position_ids  # capturing block 0's inputs: the embedding and the positions
    assert plan.peak == plan.weights + plan.block_io + plan.statistics + plan.transient < 80 * 10**9
    assert "planned peak" in plan.describe()
    # true sequential: one input group's statistics live at a time, the largest down_proj's XᵀX alone
    sequential = plan_peak_memory(model, example, samples, statistics=("hessian",), sequential=True)
    assert sequential.statistics == 4 * hidden * hidden < plan.statistics
    assert sequential.peak == plan.peak - plan.statistics + sequential.statistics < 80 * 10**9
