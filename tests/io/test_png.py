"""fmc.io.png: the one home of volume-to-PNG scaling, projections and writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fmc.io.png import max_projections, percentile_window, to_uint8, write_png


def test_to_uint8_maps_the_window_onto_0_255_and_clips():
    values = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan, np.inf], dtype=np.float32)
    assert to_uint8(values, 0.0, 1.0).tolist() == [0, 0, 127, 255, 255, 255, 255]
    assert to_uint8(values, 0.0, 1.0, non_finite=0).tolist()[-2:] == [0, 0]
    assert to_uint8(np.array([10, 20, 30], np.uint16), 10, 30).tolist() == [0, 127, 255]
    # A flat window (sparse image: equal percentiles) keeps what rises above it visible.
    assert to_uint8(np.array([0.0, 0.0, 5.0]), 0.0, 0.0).tolist() == [0, 0, 255]


def test_percentile_window_ignores_gaps():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 50)).astype(np.float32)
    gapped = values.copy()
    gapped[:, 45:] = np.nan
    low, high = percentile_window(gapped, (1, 99.8))
    np.testing.assert_allclose((low, high), np.percentile(values[:, :45], (1, 99.8)))
    assert percentile_window(np.full(4, np.nan), (1, 99)) == (0.0, 0.0)


def test_each_caller_keeps_its_window():
    """The scalings the three modules had before sharing fmc.io.png, pixel for pixel."""
    from fmc.evaluation.montage import _grey
    from fmc.io.preview import _to_uint8 as preview_uint8
    from fmc.models.panels import panel_image

    rng = np.random.default_rng(1)
    panel = rng.gamma(2.0, 100.0, (30, 40)).astype(np.float32)
    panel[:, 36:] = np.nan  # the gap between preview panels
    finite = panel[np.isfinite(panel)]
    lo, hi = np.percentile(finite, [1, 99.8])
    old = np.clip((panel - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    old[~np.isfinite(panel)] = 255
    np.testing.assert_array_equal(preview_uint8(panel), old.astype(np.uint8))

    volumes = {key: torch.from_numpy(rng.gamma(2.0, 1.0, (1, 1, 8, 12, 14)).astype(np.float32))
               for key in ("input", "prediction", "target")}
    arrays = [volumes[key][0, 0].numpy() for key in ("input", "prediction", "target")]
    low, high = np.percentile(arrays[2], (1, 99.5))  # the target's window, for all three
    image = panel_image(volumes)
    old_tile = (np.clip((arrays[0].max(axis=0) - low) / (high - low), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(image[12 + 4 + 2:12 + 4 + 2 + 12, 2:2 + 14], old_tile)

    normalised = rng.uniform(-0.2, 1.2, (6, 7)).astype(np.float32)
    rgb = _grey(normalised)
    assert rgb.shape == (6, 7, 3)
    np.testing.assert_array_equal(rgb[..., 1], (np.clip(normalised, 0.0, 1.0) * 255).astype(np.uint8))


@pytest.mark.parametrize("slab", [1, 3, 16])
def test_max_projections_read_in_slabs_equal_numpy(slab):
    volume = np.random.default_rng(2).integers(0, 60000, (11, 9, 13), dtype=np.uint16)
    projected = max_projections(volume, slab=slab)
    np.testing.assert_array_equal(projected.xy, volume.max(axis=0))
    np.testing.assert_array_equal(projected.xz, volume.max(axis=1))
    np.testing.assert_array_equal(projected.yz, volume.max(axis=2))


def test_write_png_round_trips_grey_and_rgb_atomically(tmp_path: Path):
    from PIL import Image

    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    for name, image in (("grey.png", grey), ("rgb.png", rgb)):
        path = write_png(tmp_path / "sub" / name, image)
        with Image.open(path) as written:
            np.testing.assert_array_equal(np.asarray(written), image)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["grey.png", "rgb.png"]
