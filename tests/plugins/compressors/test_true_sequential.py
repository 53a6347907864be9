"""``true_sequential`` of gptq, sparsegpt and wanda on the zoo's LLaMA-style model (random init): the
input groups found are [q, k, v], [o], [gate, up], [down]; o_proj is compressed from the statistics of
its block with the *compressed* q/k/v (a hand-run gives the same code, bit for bit), the default from
the dense block's; at 2 bits GPTQ's block output error is not worse for any of five seeds; the setting
stays out of cell ids at its default."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from b2s_bench_plugins.compressors import gptq, sparsegpt, wanda
from b2s_bench_plugins.sources.zoo_lm_net import TinyLlama

import b2s_bench as b2s
from b2s_bench.calibration import LayerStats, capture_inputs, input_groups
from b2s_bench.config import config_identity

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLES = 32


def tiny_llama(seed: int) -> TinyLlama:
    torch.manual_seed(seed)
    return TinyLlama(vocab=64, dim=32, layers=2, heads=4, hidden=64, context=16).eval()


def tokens(seed: int, n: int = SAMPLES) -> torch.Tensor:
    return torch.randint(0, 64, (n, 16), generator=torch.Generator().manual_seed(100 + seed))


def context(ids: torch.Tensor) -> b2s.Context:
    return b2s.Context(calibration=lambda n: ids[:n])


def test_the_groups_of_a_llama_block_are_qkv_o_gate_up_down_and_the_report_counts_them() -> None:
    model, ids = tiny_llama(0), tokens(0)
    block = model.blocks[0]
    layers = {f"blocks.0.{n}": m for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    (args, kwargs), *_ = capture_inputs(model, block, [ids[:4]])
    p = "blocks.0."
    assert input_groups(layers, lambda: block(*args, **kwargs)) == [
        [f"{p}attn.q_proj", f"{p}attn.k_proj", f"{p}attn.v_proj"],
        [f"{p}attn.o_proj"],
        [f"{p}mlp.gate_proj", f"{p}mlp.up_proj"],
        [f"{p}mlp.down_proj"],
    ]
    config = gptq.GPTQConfig(calibration_samples=SAMPLES, true_sequential=True)
    comp = gptq.SPEC.compress(model, config, context(ids))
    assert comp.info["layerwise"]["sequential_groups"] == {"blocks.0": 4, "blocks.1": 4}  # lm_head stays dense
    plain = gptq.SPEC.compress(model, gptq.GPTQConfig(calibration_samples=SAMPLES), context(ids))
    assert "sequential_groups" not in plain.info["layerwise"]  # the default pass and its info as before


# (spec, config class, extra settings, statistic, the method's code of one weight from that statistic)
Method = tuple[b2s.CompressorSpec, Any, dict[str, Any], str, Callable[[torch.Tensor, torch.Tensor, Any], b2s.Code]]
METHODS: dict[str, Method] = {
    "gptq": (gptq.SPEC, gptq.GPTQConfig, {"bits": 3, "group_size": 16}, "hessian", gptq.quantize_weight),
    "sparsegpt": (sparsegpt.SPEC, sparsegpt.SparseGPTConfig, {}, "hessian", sparsegpt.prune_weight),
    "wanda": (wanda.SPEC, wanda.WandaConfig, {}, "col_norm", wanda.prune_weight),
}


def hand_code(model: torch.nn.Module, ids: torch.Tensor, method: Method, config: Any) -> b2s.Code:
    """By hand: o_proj of block 0's statistic over the batches as the pass cuts them, then the method's code."""
    _, _, _, statistic, code_of = method
    layer = model.get_submodule("blocks.0.attn.o_proj")
    stats = LayerStats("blocks.0.attn.o_proj")
    for args, _ in capture_inputs(model, layer, list(ids[: config.calibration_samples].split(config.batch_size))):
        stats.add(layer, args[0], (statistic,), True)
    value = getattr(stats.finish(), statistic)
    assert value is not None
    return code_of(layer.weight, value, config)


@pytest.mark.parametrize("name", list(METHODS))
def test_o_proj_is_compressed_from_its_block_with_the_compressed_qkv(name: str) -> None:
    method = METHODS[name]
    spec, config_class, extra, _, _ = method
    model, ids = tiny_llama(0), tokens(0)
    sequential = config_class(calibration_samples=SAMPLES, true_sequential=True, **extra)
    comp = spec.compress(model, sequential, context(ids))
    hand = copy.deepcopy(model)
    for p in "qkv":  # the hand-run: q, k, v replaced by their codes, then o_proj's statistic over the block
        weight = hand.get_submodule(f"blocks.0.attn.{p}_proj").weight
        with torch.no_grad():
            weight.copy_(comp.codes[f"blocks.0.attn.{p}_proj.weight"].decode().reshape(weight.shape))
    o_seq = comp.codes["blocks.0.attn.o_proj.weight"].decode()
    assert torch.equal(o_seq, hand_code(hand, ids, method, sequential).decode())

    one_pass = config_class(calibration_samples=SAMPLES, **extra)  # the default: o_proj from the dense block
    o_one = spec.compress(model, one_pass, context(ids)).codes["blocks.0.attn.o_proj.weight"].decode()
    assert torch.equal(o_one, hand_code(model, ids, method, one_pass).decode())
    assert not torch.equal(o_one, o_seq)


# Measured (CPU, groups of 16, 64 calibration sequences), block 0's output MSE, one pass -> true sequential:
# 2 bits, seeds 0-4: 0.006502 -> 0.005915, 0.006354 -> 0.005926, 0.006455 -> 0.006204, 0.006706 -> 0.006337,
# 0.006464 -> 0.005911 (-4 % to -9 %). At 3 bits the gain is within the noise of a random model: seeds 0-4
# -0.8 %, -1.2 %, -1.3 %, -4.5 %, +0.03 % (9 of seeds 0-11 better), so the test runs at 2 bits, where the
# error q/k/v hand to o_proj is large enough to matter.
@pytest.mark.parametrize("seed", range(5))
def test_gptq_block_output_error_with_true_sequential_is_not_worse(seed: int) -> None:
    model, ids = tiny_llama(seed), tokens(seed, 64)
    (args, kwargs), *_ = capture_inputs(model, model.blocks[0], [ids])
    with torch.no_grad():
        dense = model.blocks[0](*args, **kwargs)
    errors = []
    for true_sequential in (False, True):
        config = gptq.GPTQConfig(bits=2, group_size=16, calibration_samples=64, true_sequential=true_sequential)
        compressed = gptq.SPEC.compress(model, config, context(ids)).module()
        with torch.no_grad():
            errors.append(float((compressed.blocks[0](*args, **kwargs) - dense).pow(2).mean()))
    assert errors[1] <= errors[0], errors


@pytest.mark.parametrize("name", list(METHODS))
def test_true_sequential_stays_out_of_cell_ids_at_its_default_and_bad_values_name_the_key(name: str) -> None:
    spec, config_class, _, _, _ = METHODS[name]
    assert "true_sequential" not in config_identity(config_class())
    assert config_identity(config_class(true_sequential=True))["true_sequential"] is True
    with pytest.raises(b2s.ConfigError, match="true_sequential"):
        b2s.build_config(config_class, {"true_sequential": "yes"}, owner=spec.name)
