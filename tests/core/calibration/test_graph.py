"""The BN graph analysis: which BatchNorm feeds a layer, through which activation, and whether alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from b2s_bench.calibration import bn_input_models, bn_successors


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.conv3 = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return self.conv3(self.conv2(y) + y)  # bn1's output (after the ReLU) is read twice


def test_a_layer_learns_its_batchnorm_and_whether_it_reads_it_alone() -> None:
    model = Residual().eval()
    found, skipped = bn_input_models(model, ["conv1", "conv2", "conv3"])
    assert found["conv2"].bn == "bn1" and found["conv2"].exclusive is False  # the add reads it too
    assert "conv3" in skipped and bn_successors(model, ["conv1"]) == {"conv1": "bn1.running_mean"}
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    found, _ = bn_input_models(plain, ["3"])
    assert found["3"].bn == "1" and found["3"].exclusive is True


def test_timm_layers_trace_and_a_batchnorm_with_its_activation_inside_counts_it() -> None:
    layers = pytest.importorskip("timm.layers")
    model = nn.Sequential(
        layers.Conv2dSame(3, 4, 3, stride=2),  # pads by the input's size: untraceable unless a leaf
        layers.BatchNormAct2d(4, act_layer=nn.ReLU),
        nn.Conv2d(4, 2, 1),
    ).eval()
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([0.5, -0.3, 0.0, 1.0]))
    found, skipped = bn_input_models(model, ["2"])
    assert skipped == {} and isinstance(found["2"].act, nn.ReLU) and found["2"].exclusive
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([torch.relu(b + z).mean() for b in (0.5, -0.3, 0.0, 1.0)])
    assert torch.allclose(found["2"].mean(), expected, atol=5e-3)  # E[relu(N(β, 1))], not β
