"""Segmentation models (issue 18): R2U-Net as its paper describes it, the ``seg:`` source (settings,
weights files, refusals), and ``smp:`` architectures by name offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from b2s_bench_plugins.sources import r2unet, seg

from b2s_bench import ConfigError, SuiteMistake, UserError, build_config
from b2s_bench.plugins import load_plugins
from b2s_bench.sources import ModelRequest


def test_a_recurrent_layer_unfolds_the_papers_equation() -> None:
    """h(0) = ReLU(BN0(w_f*x)), h(k) = ReLU(BNk(w_f*x + w_r*h(k-1))), k = 1..t (t = 2)."""
    torch.manual_seed(0)
    layer = r2unet.RecurrentConv(4, t=2).eval()
    x = torch.randn(2, 4, 8, 8)
    f = layer.feed(x)
    h = torch.relu(layer.norms[0](f))
    for k in (1, 2):
        assert layer.rec is not None
        h = torch.relu(layer.norms[k](f + layer.rec(h)))
    assert torch.allclose(layer(x), h)
    shared = r2unet.RecurrentConv(4, t=2, recurrent="shared")
    assert shared.rec is None and sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in layer.parameters())


def test_rrcu_adds_its_input_around_two_recurrent_layers() -> None:
    torch.manual_seed(0)
    unit = r2unet.RRCU(3, 8).eval()
    x = torch.randn(1, 3, 8, 8)
    inner = unit.enter(x)
    assert torch.allclose(unit(x), inner + unit.body[1](unit.body[0](inner)))


def test_r2unet_gives_one_logit_map_per_class_at_the_input_size() -> None:
    net = r2unet.R2UNet(width=4, depth=2, classes=2).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 16, 24)).shape == (2, 2, 16, 24)
    paper = r2unet.R2UNet()  # widths 16..256, t = 2: 4.20 M here (the paper reports 1.037 M; see the module docstring)
    assert sum(p.numel() for p in paper.parameters()) == 4_197_009


def test_seg_source_builds_from_options_and_refuses_bad_ones(tmp_path: Path) -> None:
    source = load_plugins().models.get("seg")
    request = ModelRequest("seg:r2unet", options={"width": 4, "depth": 2, "input_size": [32, 48]})
    model = source.build(request)
    assert model.input_shape == (3, 32, 48) and model.num_classes == 1 and model.checkpoint == "random-init"
    again = source.build(request)  # a seeded init: the same cell ids mean the same weights
    assert all(torch.equal(a, b) for a, b in zip(model.module.state_dict().values(), again.module.state_dict().values()))
    path = tmp_path / "r2.pth"
    torch.save(model.module.state_dict(), path)
    loaded = source.build(ModelRequest("seg:r2unet", weights=str(path), options=dict(request.options)))
    assert loaded.checkpoint.startswith("file:r2.pth:sha256:")
    assert source.fingerprint(ModelRequest("seg:r2unet", weights=str(path), options=dict(request.options))).endswith(  # type: ignore[misc]
        loaded.checkpoint
    )
    with pytest.raises(UserError, match="input_size must be"):
        source.build(ModelRequest("seg:unet", options={"depth": 3, "input_size": [36, 48]}))
    (mistake,) = source.problems(ModelRequest("seg:r2unet", pretrained=True))  # type: ignore[misc]
    assert isinstance(mistake, SuiteMistake) and "no pretrained weights" in mistake
    (unknown,) = source.problems(ModelRequest("seg:r2unett"))  # type: ignore[misc]
    assert "did you mean 'r2unet'" in unknown


def test_fixed_length_list_settings_are_coerced_item_by_item() -> None:
    """build_config once paired a [height, width] setting's values with the wrong types."""
    assert build_config(seg.SegNetConfig, {"input_size": [32, 48], "depth": 2}).input_size == (32, 48)
    with pytest.raises(ConfigError, match=r"input_size\[1\] must be an integer"):
        build_config(seg.SegNetConfig, {"input_size": [32, "wide"]})


def test_smp_architectures_by_name_build_offline() -> None:
    pytest.importorskip("segmentation_models_pytorch")
    source = load_plugins().models.get("smp")
    assert {"Unet", "UnetPlusPlus", "FPN"} <= set(source.list_models(None))
    options = {"encoder": "resnet18", "encoder_depth": 3, "input_size": [32, 64]}
    for name in ("smp:Unet", "smp:UnetPlusPlus", "smp:unetplusplus"):
        model = source.build(ModelRequest(name, options=options))
        with torch.no_grad():
            assert model.module(torch.randn(1, 3, 32, 64)).shape == (1, 1, 32, 64), name
    (unknown,) = source.problems(ModelRequest("smp:Unett"))  # type: ignore[misc]
    assert "did you mean 'Unet'" in unknown


def test_smp_pretrained_encoders_need_download_and_are_never_fetched_by_validate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("segmentation_models_pytorch")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    source = load_plugins().models.get("smp")
    (problem,) = source.problems(ModelRequest("smp:Unet", pretrained=True))  # type: ignore[misc]
    assert "smp-hub/resnet34.imagenet" in problem and "--download" in problem
    assert source.fingerprint(ModelRequest("smp:Unet", pretrained=True)).endswith("encoder-imagenet:not cached")  # type: ignore[misc]
    (bad,) = source.problems(ModelRequest("smp:Unet", options={"input_size": [30, 64]}))  # type: ignore[misc]
    assert isinstance(bad, SuiteMistake) and "multiple of 32" in bad
