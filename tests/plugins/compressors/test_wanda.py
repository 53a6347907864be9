"""wanda: the mask keeps exactly the top |W_ij|·||X_j||₂ of each row, 2:4 patterns are exact, uniform
input norms give magnitude pruning per row, the model's norms are its inputs' column norms (a conv's
through im2col), and bad settings name their key."""

from __future__ import annotations

import pytest
import torch
from b2s_bench_plugins.compressors.sparsegpt import NMCode
from b2s_bench_plugins.compressors.wanda import SPEC, WandaConfig, wanda_keep
from torch import nn

import b2s_bench as b2s
from b2s_bench.calibration import capture_inputs, im2col_rows
from b2s_bench.testing import check_compressor, tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_mask_keeps_exactly_the_top_scores_of_each_row() -> None:
    gen = torch.Generator().manual_seed(0)
    w, norms = torch.randn(7, 30, generator=gen), torch.rand(30, generator=gen) * 5
    keep = wanda_keep(w, norms, 0.6)
    score = w.abs() * norms
    for r in range(7):
        kept = set(torch.nonzero(keep[r]).flatten().tolist())
        assert kept == set(torch.argsort(score[r], descending=True)[:12].tolist())  # 30 − round(0.6·30)
    layer = wanda_keep(w, norms, 0.6, comparison="layer")
    assert int(layer.sum()) == 210 - 126 and float(score[layer].min()) >= float(score[~layer].max())


def test_two_of_four_keeps_the_two_top_scores_of_every_group() -> None:
    gen = torch.Generator().manual_seed(1)
    w, norms = torch.randn(5, 32, generator=gen), torch.rand(32, generator=gen)
    keep = wanda_keep(w, norms, pattern=(2, 4))
    groups = (w.abs() * norms).reshape(5, 8, 4)
    top = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, groups.topk(2, dim=2).indices, True)
    assert torch.equal(keep.reshape(5, 8, 4), top) and bool((keep.reshape(5, 8, 4).sum(-1) == 2).all())


def test_uniform_input_norms_give_magnitude_pruning_per_row() -> None:
    w = torch.randn(9, 40, generator=torch.Generator().manual_seed(2))
    magnitude = torch.ones_like(w, dtype=torch.bool)
    magnitude.scatter_(1, torch.topk(w.abs(), 20, dim=1, largest=False).indices, False)
    assert torch.equal(wanda_keep(w, torch.full((40,), 3.7), 0.5), magnitude)
    assert torch.equal(wanda_keep(w, None, 0.5), magnitude)


def test_compress_scores_with_the_inputs_column_norms_and_does_not_update_weights() -> None:
    model = tiny_model(0)
    ctx = tiny_context(0)
    comp = SPEC.compress(model, WandaConfig(calibration_samples=32, batch_size=16), ctx)
    conv = model.get_submodule("features.4")  # its inputs come from the pruned first conv
    pruned_first = comp.module()
    x = ctx.calibration(32)  # type: ignore[misc]
    rows = torch.cat(
        [
            im2col_rows(conv, a[0])
            for a, _ in capture_inputs(pruned_first, pruned_first.get_submodule("features.4"), list(x.split(16)))
        ]
    )
    w = conv.weight.detach().reshape(conv.weight.shape[0], -1)
    expect = wanda_keep(w, rows.norm(dim=0), 0.5)
    decoded = comp.codes["features.4.weight"].decode().reshape(w.shape)
    assert torch.equal(decoded != 0, expect) and torch.equal(decoded[expect], w[expect])
    assert abs(SPEC.target(WandaConfig(), comp, model).achieved - 0.5) < 0.01  # type: ignore[misc, union-attr]


def test_two_of_four_through_the_contract_and_the_n_m_code() -> None:
    assert check_compressor(SPEC, {"structure": "2:4"}).bits > 0
    comp = SPEC.compress(tiny_model(0), WandaConfig(structure="2:4", calibration_samples=16), tiny_context(0))
    assert isinstance(comp.codes["classifier.1.weight"], NMCode)


def test_a_grouped_conv_is_pruned_by_magnitude_and_named() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1))
    x = torch.randn(8, 4, 8, 8)
    comp = SPEC.compress(model, WandaConfig(calibration_samples=8), b2s.Context(calibration=lambda n: x[:n]))
    assert "grouped" in comp.info["magnitude_only"]["0"]


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"structure": "3"}, "structure"),
        ({"structure": "2:4", "sparsity": 0.6}, "sparsity"),
        ({"comparison": "column"}, "comparison"),
        ({"structure": "2:4", "comparison": "layer"}, "comparison"),
        ({"calibration_samples": 0}, "calibration_samples"),
    ],
)
def test_bad_settings_name_their_key(settings: dict[str, object], key: str) -> None:
    with pytest.raises(b2s.ConfigError, match=key):
        b2s.build_config(WandaConfig, settings, owner="wanda")
