"""Segmentation data (issue 18): the procedural ``carvana-synth`` (seeded, pinned bytes, thin
structures, views grouped by car) and ``carvana`` from disk (the competition's layout on a tiny fake
folder: the held-out split by car, resizing, masks from GIFs, prerequisites and exit 3)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from b2s_bench_plugins.data import carvana
from b2s_bench_plugins.data.carvana_synth import render_split
from helpers import run_cli

from b2s_bench import UserError, build_config
from b2s_bench.plugins import load_plugins
from b2s_bench.sources import LoadedModel

REPO = Path(__file__).resolve().parents[3]
PINNED = "fe4b5e7812a91dbf"  # SHA-256 (16 digits) of the first two test cars' images and masks (seed 0, 64x96)


def _model(h: int = 64, w: int = 96) -> LoadedModel:
    return LoadedModel(torch.nn.Conv2d(3, 1, 1), (3, h, w), 1, "test")


def _build(name: str, model: LoadedModel, **options: object):  # type: ignore[no-untyped-def]
    spec = load_plugins().datasets.get(name)
    return spec.build(build_config(spec.config, options), model)


# -- carvana-synth ---------------------------------------------------------------------------------------
def test_synthetic_cars_follow_the_segmentation_contract_and_group_views_by_car() -> None:
    data = _build("carvana-synth", _model(), cars=3, views=4)
    batches = list(data.eval_batches(5))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])  # type: ignore[misc]
    assert x.shape == (12, 3, 64, 96) and x.dtype == torch.float32
    assert y.shape == (12, 64, 96) and y.dtype == torch.int64
    assert set(y.unique().tolist()) == {0, 1}  # binary, nothing ignored
    assert 0.05 < float(y.float().mean()) < 0.5  # a car, not the whole picture
    assert data.num_examples == 12 and data.labeled
    assert data.clusters is not None and data.clusters.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.task == "segmentation"
    cal = data.calibration(6)  # type: ignore[misc]
    assert cal.shape == (6, 3, 64, 96)
    xb, yb = next(iter(data.training()))  # type: ignore[misc]
    assert xb.shape[1:] == (3, 64, 96) and yb.shape[1:] == (64, 96) and yb.dtype == torch.int64


def test_synthetic_cars_are_seeded_and_the_splits_are_disjoint() -> None:
    a = render_split(0, "test", 2, 3, 32, 48)
    b = render_split(0, "test", 2, 3, 32, 48)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    train = render_split(0, "train", 2, 3, 32, 48)
    other = render_split(1, "test", 2, 3, 32, 48)
    assert not np.array_equal(a[0], train[0]) and not np.array_equal(a[0], other[0])
    first = _build("carvana-synth", _model(), cars=2, views=2).fingerprint
    assert first == _build("carvana-synth", _model(), cars=2, views=2).fingerprint
    assert first != _build("carvana-synth", _model(), cars=2, views=2, seed=1).fingerprint


def test_the_procedural_bytes_are_pinned() -> None:
    """The zoo UNet's shipped weights were trained on these cars: a change to the generator must show
    here (then retrain and re-ship the UNet: scripts/ship_zoo_weights.py --model cars-unet --seeds 0)."""
    images, masks, ids = carvana.synthetic_split(0, "test", 2, 16, 64, 96)
    digest = hashlib.sha256(images.tobytes() + masks.tobytes()).hexdigest()[:16]
    assert digest == PINNED, digest
    assert ids.tolist() == [0] * 16 + [1] * 16


def test_masks_hold_thin_structures() -> None:
    """Antennas and mirror stalks: foreground pixels whose left and right neighbours are background."""
    _, masks, _ = carvana.synthetic_split(0, "test", 4, 16, 64, 96)
    m = masks.astype(bool)
    per_image = carvana.thin_pixels(masks)
    assert per_image[0] == (m[0, :, 1:-1] & ~m[0, :, :-2] & ~m[0, :, 2:]).sum()
    assert (per_image >= 5).mean() > 0.5, per_image  # most views show an antenna or a stalk
    data = _build("carvana-synth", _model(), cars=4)
    assert data.preview == int(per_image.argmax()) and per_image[data.preview] >= 10  # the picture shows an antenna


def test_a_model_of_another_size_is_refused_with_the_fix() -> None:
    with pytest.raises(UserError, match="height: and width:"):
        _build("carvana-synth", _model(32, 32))


# -- carvana from disk ----------------------------------------------------------------------------------
def fake_carvana(root: Path, cars: int = 10, views: int = 2, size: tuple[int, int] = (40, 60)) -> Path:
    """The competition's layout: train/<car>_<NN>.jpg and train_masks/<car>_<NN>_mask.gif."""
    from PIL import Image

    (root / "train").mkdir(parents=True)
    (root / "train_masks").mkdir()
    rng = np.random.default_rng(0)
    h, w = size
    for c in range(cars):
        car = hashlib.sha256(str(c).encode()).hexdigest()[:12]
        for v in range(1, views + 1):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "train" / f"{car}_{v:02d}.jpg")
            mask = np.zeros((h, w), np.uint8)
            mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
            gif = Image.fromarray(mask, mode="P")
            gif.putpalette([0, 0, 0, 255, 255, 255])  # as the competition's masks: index 1 is white
            gif.save(root / "train_masks" / f"{car}_{v:02d}_mask.gif")
    return root


def test_carvana_reads_the_held_out_cars_resized_to_the_model(tmp_path: Path) -> None:
    root = fake_carvana(tmp_path / "carvana")
    data = _build("carvana", _model(32, 48), root=str(root), test_fraction=0.3, workers=0)
    x, y = next(iter(data.eval_batches(100)))
    assert x.shape[1:] == (3, 32, 48) and y is not None and y.shape[1:] == (32, 48) and y.dtype == torch.int64
    assert set(y.unique().tolist()) == {0, 1}
    assert float(y[0, 16, 24]) == 1 and float(y[0, 0, 0]) == 0  # the mask's box, resized with it
    cars = carvana.scan(root)
    test = carvana.split_cars(cars, "test", 0.3)
    train = carvana.split_cars(cars, "train", 0.3)
    assert test and train and not set(test) & set(train) and len(test) + len(train) == 10
    assert test == sorted(c for c in cars if carvana.held_out(c, 0.3))  # the documented rule, by car id
    assert data.num_examples == 2 * len(test) == x.shape[0]
    assert data.clusters is not None and data.clusters.tolist() == [k for k in range(len(test)) for _ in range(2)]
    assert data.calibration(3).shape == (3, 3, 32, 48)  # type: ignore[misc]
    sized = _build("carvana", _model(32, 48), root=str(root), test_fraction=0.3, workers=0, size=[16, 24])
    assert next(iter(sized.eval_batches(4)))[0].shape[1:] == (3, 16, 24)


def test_an_image_without_its_mask_is_an_error_that_says_so(tmp_path: Path) -> None:
    root = fake_carvana(tmp_path / "carvana", cars=2, views=1)
    next((root / "train_masks").iterdir()).unlink()
    with pytest.raises(UserError, match="have no mask"):
        _build("carvana", _model(), root=str(root), workers=0)


def test_missing_carvana_says_what_to_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(carvana.ENV, raising=False)
    monkeypatch.delenv(carvana.OVERRIDE_ENV, raising=False)
    spec = load_plugins().datasets.get("carvana")
    (problem,) = spec.problems(build_config(spec.config, {}))  # type: ignore[misc]
    assert "carvana-image-masking-challenge" in problem and "train_masks.zip" in problem and "--data ROOT" in problem
    root = fake_carvana(tmp_path / "c", cars=2, views=1)
    monkeypatch.setenv(carvana.OVERRIDE_ENV, str(root))  # what --data sets
    assert spec.problems(build_config(spec.config, {})) == []  # type: ignore[misc]
    assert spec.origin(build_config(spec.config, {})) == str(root.resolve())  # type: ignore[misc]


def test_data_that_is_imagenet_leaves_carvana_to_its_own_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--data is shared with ImageNet: a folder without Carvana's layout does not replace root:."""
    root = fake_carvana(tmp_path / "c", cars=2, views=1)
    (tmp_path / "inet" / "val").mkdir(parents=True)
    monkeypatch.setenv(carvana.OVERRIDE_ENV, str(tmp_path / "inet"))
    config = build_config(carvana.CarvanaConfig, {"root": str(root)})
    assert carvana.resolve_root(config) == root and carvana.origin(config) is None


def test_the_carvana_suite_lists_its_cells_and_exits_3_without_data(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("segmentation_models_pytorch")
    monkeypatch.delenv(carvana.ENV, raising=False)
    suite = str(REPO / "suites" / "carvana.yaml")
    assert run_cli("validate", suite) == 3
    out = capsys.readouterr()
    for label in ("unet", "unet++", "r2unet", "big2small", "+ SVD + 60 % pruning + 6-bit"):
        assert label in out.out, label
    assert "Carvana not found" in out.err
    assert run_cli("run", suite, "--out", str(tmp_path / "run"), "--quiet") == 3
    assert "Carvana not found" in capsys.readouterr().err


def test_the_carvana_models_train_into_the_suites_weights_paths_and_then_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """scripts/train_carvana.py on a fake Carvana folder and a tiny suite: it writes the checkpoint the
    suite names, which then loads (validate: nothing missing) and scores the held-out cars."""
    import importlib.util

    root = fake_carvana(tmp_path / "carvana", cars=6, views=2, size=(32, 48))
    suite = tmp_path / "tiny-carvana.yaml"
    suite.write_text(
        "suite: tiny-carvana\n"
        "models:\n"
        "  - {name: 'seg:r2unet', options: {width: 2, depth: 2, input_size: [16, 24]}, weights: w/r2unet.pth, label: r2unet}\n"
        "dataset: {name: carvana, test_fraction: 0.4, workers: 0}\n"
        "compressors:\n"
        "  - {name: quantize, bits: 8}\n"
        "metrics: [dice, bits]\n"
    )
    assert run_cli("validate", str(suite), "--data", str(root)) == 3  # the checkpoint is not there yet
    assert "r2unet.pth" in capsys.readouterr().err
    spec = importlib.util.spec_from_file_location("train_carvana", REPO / "scripts" / "train_carvana.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ((label, path, dice),) = script.train_models(suite, str(root), None, 2, 1e-2, "cpu", False)
    assert label == "r2unet" and path.resolve() == (tmp_path / "w" / "r2unet.pth").resolve() and path.is_file()
    assert 0.0 <= dice <= 100.0
    assert run_cli("validate", str(suite), "--data", str(root)) == 0
