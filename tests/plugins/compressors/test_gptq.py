"""gptq: its defining properties (H = I gives round-to-nearest bit for bit; on correlated inputs the
output error is below round-to-nearest's for every seed; the first column is rounded as RTN rounds it,
the later ones compensate), the paper's Algorithm 1 written as loops gives the same codes, convs
through im2col, act_order, exact bits, and the model comes back unchanged. A slow GPU test
cross-checks torchao's GPTQ (CUDA only)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from b2s_bench_plugins.compressors.gptq import SPEC, GPTQConfig, gptq_matrix, quantize_weight
from b2s_bench_plugins.compressors.quantize.codes import UniformCode
from b2s_bench_plugins.compressors.quantize.config import QuantizeConfig
from b2s_bench_plugins.compressors.quantize.rounding import quantize_tensor
from torch import nn

import b2s_bench as b2s
from b2s_bench.compression.contract import symbol_problems
from b2s_bench.execution.cell import apply_stage
from b2s_bench.plugins import load_plugins
from b2s_bench.testing import tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def correlated(n: int, d: int, seed: int) -> torch.Tensor:
    """n inputs of d strongly correlated features (a random mixing of a few factors plus noise)."""
    gen = torch.Generator().manual_seed(seed)
    factors = torch.randn(n, max(d // 4, 1), generator=gen)
    return factors @ torch.randn(max(d // 4, 1), d, generator=gen) + 0.1 * torch.randn(n, d, generator=gen)


def hessian(x: torch.Tensor) -> torch.Tensor:
    return 2 * x.t() @ x / x.shape[0]


def rtn(w: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    code = quantize_tensor(
        w,
        QuantizeConfig(bits=bits, granularity="channel" if group == -1 else "group", group_size=max(group, 1), symmetric=False),
    )
    return code.decode()


def output_error(w: torch.Tensor, wq: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x @ (w - wq).t()) ** 2).sum())


@pytest.mark.parametrize(("bits", "group", "cols"), [(4, -1, 64), (3, 16, 64), (4, 16, 40), (2, 128, 48)])
def test_with_identity_hessian_gptq_is_round_to_nearest_bit_for_bit(bits: int, group: int, cols: int) -> None:
    w = torch.randn(24, cols, generator=torch.Generator().manual_seed(3))
    r = gptq_matrix(w, torch.eye(cols), bits, group, block_size=16)
    assert torch.equal(r.weights, rtn(w, bits, group if group < cols else -1))
    ordered = gptq_matrix(w, torch.eye(cols), bits, group, block_size=16, act_order=True)
    assert torch.equal(ordered.weights, r.weights)  # a diagonal Hessian: no column compensates another


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("act_order", [False, True])
def test_on_correlated_inputs_gptq_beats_round_to_nearest_every_seed(seed: int, act_order: bool) -> None:
    x = correlated(512, 64, seed)
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(100 + seed))
    r = gptq_matrix(w, hessian(x), 4, 16, block_size=16, act_order=act_order)
    ours, baseline = output_error(w, r.weights, x), output_error(w, rtn(w, 4, 16), x)
    assert ours < 0.7 * baseline, (ours, baseline)


def test_the_first_column_is_rounded_as_rtn_and_the_update_compensates_its_error() -> None:
    x = correlated(512, 32, 0)
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(1))
    r = gptq_matrix(w, hessian(x), 3, -1, block_size=8)
    baseline = rtn(w, 3, -1)
    assert torch.equal(r.weights[:, 0], baseline[:, 0])  # nothing updated column 0 before it was rounded
    assert not torch.equal(r.weights[:, 1:], baseline[:, 1:])  # later columns moved to compensate
    # after column 0 alone is rounded, the OBS update of the others lowers the output error below
    # keeping them at W (the error of column 0 alone), and the final error stays below RTN's
    only_first = w.clone()
    only_first[:, 0] = baseline[:, 0]
    h = hessian(x) + 0.01 * torch.diag(hessian(x)).mean() * torch.eye(32)
    hinv = torch.linalg.inv(h)
    e = (w[:, 0] - baseline[:, 0]) / hinv[0, 0]
    compensated = only_first.clone()
    compensated[:, 1:] -= e[:, None] * hinv[0, 1:][None, :]
    assert output_error(w, compensated, x) < output_error(w, only_first, x)
    assert output_error(w, r.weights, x) < output_error(w, baseline, x)


def algorithm_1(w: torch.Tensor, h: torch.Tensor, bits: int, block: int, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's Algorithm 1, written as loops (per-row asymmetric min/max grid fixed beforehand).

    Returns (integer codes, quantized weights)."""
    w = w.clone().float()
    rows, cols = w.shape
    maxq = 2**bits - 1
    lo = torch.clamp(w.min(dim=1).values, max=0)
    hi = torch.clamp(w.max(dim=1).values, min=0)
    scale = (hi - lo) / maxq
    zero = torch.round(-lo / scale)
    h = h.clone() + percdamp * torch.diag(h).mean() * torch.eye(cols)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)  # Cholesky(H⁻¹)ᵀ
    codes = torch.zeros(rows, cols)
    q = torch.zeros(rows, cols)
    for i in range(0, cols, block):
        end = min(i + block, cols)
        err = torch.zeros(rows, end - i)
        for j in range(i, end):
            for r in range(rows):
                codes[r, j] = torch.clamp(torch.round(w[r, j] * (1.0 / scale[r])) + zero[r], 0, maxq)
                q[r, j] = scale[r] * (codes[r, j] - zero[r])
                err[r, j - i] = (w[r, j] - q[r, j]) / u[j, j]
            for k in range(j, end):
                for r in range(rows):
                    w[r, k] = w[r, k] - err[r, j - i] * u[j, k]
        w[:, end:] -= err @ u[i:end, end:]
    return codes, q


def test_codes_equal_the_papers_algorithm_1_written_as_loops() -> None:
    x = correlated(256, 24, 7)
    w = torch.randn(6, 24, generator=torch.Generator().manual_seed(8))
    codes, q = algorithm_1(w, hessian(x), 4, 8, 0.01)
    r = gptq_matrix(w, hessian(x), 4, -1, block_size=8)
    assert torch.equal(r.q, codes) and torch.equal(r.weights, q)


def test_lazy_batches_change_the_order_of_updates_not_the_result() -> None:
    x = correlated(512, 96, 2)
    w = torch.randn(20, 96, generator=torch.Generator().manual_seed(2))
    one = gptq_matrix(w, hessian(x), 4, 32, block_size=96)
    lazy = gptq_matrix(w, hessian(x), 4, 32, block_size=8)  # groups straddle nothing; blocks split groups
    agree = float((one.q == lazy.q).float().mean())
    assert agree > 0.995 and math.isclose(output_error(w, one.weights, x), output_error(w, lazy.weights, x), rel_tol=0.02)


def test_a_conv_goes_through_im2col_and_beats_round_to_nearest_on_its_outputs() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, padding=1, bias=False)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(64, 8, 12, 12), 3, 1, 1)  # neighbouring pixels correlate
    model = nn.Sequential(conv)
    config = GPTQConfig(bits=3, group_size=-1, scale_bits=32, calibration_samples=64, skip_last=False)  # its only layer
    ctx = b2s.Context(calibration=lambda n: smooth[:n])
    comp = SPEC.compress(model, config, ctx)
    code = comp.codes["0.weight"]
    assert isinstance(code, UniformCode) and code.decode().shape == conv.weight.shape
    w = conv.weight.detach()
    baseline = rtn(w, 3, -1)
    ours = float((torch.nn.functional.conv2d(smooth, w - code.decode(), padding=1) ** 2).sum())
    theirs = float((torch.nn.functional.conv2d(smooth, w - baseline, padding=1) ** 2).sum())
    assert ours < 0.8 * theirs


def test_compress_leaves_the_model_alone_counts_exact_bits_and_needs_calibration() -> None:
    model = tiny_model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    comp = SPEC.compress(model, GPTQConfig(calibration_samples=32, skip_last=False), tiny_context(0))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert comp.info["layerwise"]["layers"] == 4 and comp.info["round_to_nearest"] == {}
    default = SPEC.compress(model, GPTQConfig(calibration_samples=32), tiny_context(0))  # the authors': no head
    assert default.info["layerwise"]["layers"] == 3 and sorted(comp.codes.keys() - default.codes.keys()) == [
        "classifier.3.weight"
    ]
    code = comp.codes["classifier.1.weight"]  # Linear(512, 64): 4 groups of 128 per row
    assert isinstance(code, UniformCode)
    assert code.bits().payload == 64 * 512 * 4 and code.bits().scales == 64 * 4 * (16 + 4)
    assert symbol_problems("classifier.1.weight", code) == []
    first = comp.codes["features.0.weight"]  # Conv2d(1, 16, 3): rows of 9 columns, one group each, no padding
    assert first.bits().payload == 16 * 9 * 4
    with pytest.raises(ValueError, match="calibration inputs"):
        SPEC.compress(model, GPTQConfig(), tiny_context(0, with_data=False))


def test_a_layer_without_a_hessian_is_rounded_to_nearest_and_named() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1))
    x = torch.randn(16, 4, 8, 8)
    comp = SPEC.compress(model, GPTQConfig(calibration_samples=16), b2s.Context(calibration=lambda n: x[:n]))
    assert set(comp.info["round_to_nearest"]) == {"0"} and "grouped" in comp.info["round_to_nearest"]["0"]
    assert torch.equal(comp.codes["0.weight"].decode(), quantize_weight(model[0].weight, None, GPTQConfig()).decode())


@pytest.mark.parametrize(
    ("key", "value"),
    [("bits", 9), ("group_size", 0), ("percdamp", 0.0), ("scale_bits", 8), ("blocks", "stages"), ("block_size", 0)],
)
def test_bad_settings_name_their_key(key: str, value: object) -> None:
    with pytest.raises(b2s.ConfigError, match=key):
        b2s.build_config(GPTQConfig, {key: value}, owner="gptq")


@pytest.mark.slow
@pytest.mark.gpu
def test_cross_check_torchao_gptq_int8_per_row_on_cuda() -> None:
    """torchao 0.18's GPTQ (``torchao.prototype.gptq.gptq_quantize``) runs on CUDA only; its int8
    per-row grid is quantize's symmetric full-range grid, so ours with bits 8, symmetric, per row and
    its block size must give the same codes."""
    pytest.importorskip("torchao")
    if not torch.cuda.is_available():
        pytest.skip("torchao's gptq_quantize asserts a CUDA device")
    from torchao.prototype.gptq import GPTQConfig as AOConfig
    from torchao.prototype.gptq import gptq_quantize
    from torchao.quantization import Int8WeightOnlyConfig
    from torchao.quantization.granularity import PerRow

    x = correlated(1024, 256, 0).cuda()
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)).cuda()
    h = hessian(x)
    theirs = gptq_quantize(h.clone(), w.clone(), AOConfig(base_config=Int8WeightOnlyConfig(granularity=PerRow())))
    ours = gptq_matrix(w, h, 8, -1, symmetric=True, block_size=256)
    agree = float((ours.q.cpu() == theirs.qdata.float().cpu()).float().mean())
    ratio = output_error(w.cpu(), ours.weights.cpu(), x.cpu()) / output_error(w.cpu(), theirs.dequantize().float().cpu(), x.cpu())
    print(f"torchao GPTQ int8 per-row: codes equal {agree:.4%}, output error ratio ours/torchao {ratio:.6f}")
    assert agree > 0.999 and abs(ratio - 1) < 0.01


class Block(nn.Module):
    """A pre-norm transformer block (single-head attention, GELU MLP) returning a tuple, as HF layers do."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor]:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(mask, float("-inf"))
        x = x + self.proj(scores.softmax(-1) @ v)
        return (x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x)))),)


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 64, dim: int = 32, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        mask = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).triu(1)
        for block in self.blocks:
            x = block(x, mask=mask)[0]
        return self.head(x)


def test_on_a_small_language_model_gptq_beats_round_to_nearest_block_by_block() -> None:
    torch.manual_seed(0)
    model = TinyLM().eval()
    ids = torch.randint(0, 64, (48, 16), generator=torch.Generator().manual_seed(1))
    config = GPTQConfig(bits=3, group_size=32, calibration_samples=32)
    comp = SPEC.compress(model, config, b2s.Context(calibration=lambda n: ids[:n]))
    assert comp.info["layerwise"]["chained_blocks"] == 3 and comp.info["round_to_nearest"] == {}
    rtn_comp = b2s.Compressed.from_codes(
        model, {k: quantize_weight(model.get_submodule(k[:-7]).weight, None, config) for k in comp.codes}
    )
    held_out = ids[32:]
    with torch.no_grad():
        dense = model(held_out)
        ours = float((comp.module()(held_out) - dense).pow(2).mean())
        theirs = float((rtn_comp.module()(held_out) - dense).pow(2).mean())
    assert ours < theirs, (ours, theirs)


def test_gptq_codes_compose_with_the_entropy_stage(tmp_path: Path) -> None:
    plugins = load_plugins()
    entropy = plugins.compressors.get("entropy")
    comp = SPEC.compress(tiny_model(0), GPTQConfig(calibration_samples=16), tiny_context(0))
    coded = apply_stage(comp, entropy, b2s.build_config(entropy.config, {}), tiny_context(0))
    before, after = comp.state_dict(), coded.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert coded.size().total_bits < comp.size().total_bits  # 4-bit codes of a trained-like tensor: not uniform
    coded.save(str(tmp_path / "art"))
    types = {t.kind: t for s in plugins.compressors for t in s.codes}
    loaded = b2s.Compressed.load(str(tmp_path / "art"), b2s.skeleton_of(tiny_model(0)), types)
    assert all(torch.equal(loaded.state_dict()[k], after[k]) for k in after)
