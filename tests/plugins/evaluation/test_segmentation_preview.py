"""The preview encodings a segmentation record keeps for the mask picture: exact masks, small sizes."""

from __future__ import annotations

import numpy as np
import pytest
from b2s_bench_plugins.evaluation import segmentation_preview as pv


def test_preview_size_keeps_the_aspect_and_never_enlarges() -> None:
    assert pv.preview_size(96, 128) == (96, 128)
    assert pv.preview_size(1280, 1918) == (85, 128)
    assert pv.preview_size(512, 256) == (128, 64)
    with pytest.raises(ValueError, match="nothing to preview"):
        pv.preview_size(0, 5)


def test_downsample_takes_the_label_at_each_centre() -> None:
    labels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    # 4 -> 2: output pixel i covers input rows 2i, 2i+1; its centre falls in row 2i+1
    assert pv.downsample_labels(labels, (2, 2)).tolist() == [[5, 7], [13, 15]]
    assert pv.downsample_labels(labels, (4, 4)).tolist() == labels.tolist()


def test_mask_round_trip_is_exact_and_small() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((96, 128), np.uint8)
    mask[20:70, 30:100] = 1  # a car-like blob
    mask[5:20, 60] = 1  # an antenna
    mask[rng.integers(0, 96, 10), rng.integers(0, 128, 10)] = 255  # a few ignored pixels
    entry = pv.encode_mask(mask)
    assert np.array_equal(pv.decode_mask(entry), mask)
    assert len(entry["data"]) < 600  # 12,288 pixels in a few hundred characters
    with pytest.raises(ValueError, match="cannot hold"):
        pv.decode_mask({**entry, "shape": [97, 128]})
    with pytest.raises(ValueError, match="unknown codec"):
        pv.decode_mask({**entry, "codec": "rle"})


def test_image_round_trip_is_close_and_a_few_kilobytes() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128]
    image = np.stack([np.sin(xx / 9.0), np.cos(yy / 7.0), rng.normal(size=(96, 128)) * 0.3])  # normalized input
    rgb = pv.stretch(image)
    assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255  # each channel over its own range
    entry = pv.encode_image(rgb)
    back = pv.decode_image(entry)
    assert back.shape == rgb.shape
    assert np.abs(back.astype(int) - rgb.astype(int)).mean() < 12  # JPEG: close, not exact
    assert len(entry["data"]) < 8000
    assert pv.stretch(np.zeros((1, 2, 2))).tolist() == [[[128] * 3] * 2] * 2  # constant: mid-grey, grey to RGB
    with pytest.raises(ValueError, match="not a JPEG"):
        pv.decode_image({**entry, "data": "aGVsbG8="})
