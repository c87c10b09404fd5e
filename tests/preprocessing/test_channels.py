"""fmc.preprocessing.channels: surface distance and light map on volumes with known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fmc.core.grids import block_mean, resize_linear
from fmc.preprocessing.channels import ChannelWarning, surface_distance
from fmc.preprocessing.hull import fill_hull, specimen_hull
from fmc.preprocessing.light import light_map


def sphere(shape, spacing, radius_um, centre_um=None):
    """A bright ball in a dark volume, sampled at ``spacing`` (µm); returns volume and distances."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)],
                        indexing="ij")
    centre = centre_um or [(n - 1) * s / 2 for n, s in zip(shape, spacing, strict=True)]
    radius = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)))
    volume = np.where(radius <= radius_um, 1000.0, 50.0).astype(np.float32)
    return volume, radius_um - radius  # analytic signed distance: + inside


def test_sign_convention_and_anisotropic_spacing_in_um():
    spacing = (2.0, 0.5, 0.5)  # 4x anisotropic, as light-sheet data
    volume, analytic = sphere((40, 140, 140), spacing, radius_um=25.0)
    distance = surface_distance(volume, spacing)
    assert distance.shape == volume.shape and distance.dtype == np.float32
    centre = tuple(n // 2 for n in volume.shape)
    assert distance[centre] > 20  # deep inside: large positive
    assert distance[0, 0, 0] < -20  # far outside: large negative
    # Within one (coarsest) voxel of the analytic distance wherever the ball is not clipped.
    near = np.abs(analytic) < 10
    assert np.max(np.abs(distance[near] - analytic[near])) <= max(spacing)
    # The zero level is the surface: voxels on the sphere have |d| below a voxel.
    shell = np.abs(analytic) < 0.25
    assert np.max(np.abs(distance[shell])) <= max(spacing)


def test_hull_is_convex_and_filled():
    # A hollow "C" shape: its hull includes the gap and the cavity.
    volume = np.zeros((20, 60, 60), np.float32)
    volume[5:15, 10:50, 10:20] = 1000
    volume[5:15, 10:20, 10:50] = 1000
    volume[5:15, 40:50, 10:50] = 1000
    _, hull = surface_distance(volume, (1.0, 1.0, 1.0), return_hull=True)
    assert hull[10, 30, 30]  # the cavity between the arms is inside the hull
    assert not hull[10, 5, 5] and not hull[1, 30, 30]


def test_fill_hull_matches_half_space_test():
    rng = np.random.default_rng(0)
    mask = np.zeros((12, 20, 24), bool)
    mask[2:10, 3:17, 4:20] = rng.random((8, 14, 16)) > 0.7
    coordinates = [np.arange(n) * s for n, s in zip(mask.shape, (2.0, 0.7, 0.7), strict=True)]
    hull = specimen_hull(mask, coordinates)
    grid = np.stack(np.meshgrid(*coordinates, indexing="ij"), axis=-1)
    signed = np.max(grid @ hull.equations[:, :3].T + hull.equations[:, 3], axis=-1)
    filled = fill_hull(hull, coordinates)
    # Equal everywhere except possibly on the hull's surface itself (rounding decides there).
    clear = np.abs(signed) > 1e-6
    np.testing.assert_array_equal(filled[clear], signed[clear] < 0)
    assert filled[np.abs(signed) <= 1e-6].mean() > 0.9  # surface voxels count as inside


def test_block_mean_and_linear_upsampling_round_trip():
    ramp = np.broadcast_to(np.arange(50, dtype=np.float32)[None, None, :], (7, 9, 50)).copy()
    coarse = block_mean(ramp, (7, 9, 10))
    assert coarse.shape == (7, 9, 10) and coarse[0, 0, 0] == pytest.approx(2.0)
    back = resize_linear(coarse, ramp.shape)
    # A linear ramp survives block averaging and linear interpolation (away from the edges).
    np.testing.assert_allclose(back[..., 3:-3], ramp[..., 3:-3], atol=1e-4)


def test_empty_and_constant_volumes_fall_back_with_a_warning():
    for volume in (np.zeros((10, 20, 20), np.float32), np.full((10, 20, 20), 7, np.uint16)):
        with pytest.warns(ChannelWarning, match="no specimen found"):
            distance = surface_distance(volume, (1.0, 0.5, 0.5))
        assert np.isfinite(distance).all() and distance.min() > 0
        assert distance[5, 10, 10] > distance[0, 0, 0]


@pytest.mark.parametrize("axis,lit_from_start", [(0, True), (0, False), (2, True), (2, False)])
def test_light_map_finds_the_lit_side(axis, lit_from_start):
    rng = np.random.default_rng(1)
    shape = (24, 40, 48)
    volume = rng.random(shape).astype(np.float32) * 100
    depth = np.arange(shape[axis], dtype=np.float32)
    profile = np.exp(-depth / 10.0) if lit_from_start else np.exp(-depth[::-1] / 10.0)
    view = [1, 1, 1]
    view[axis] = shape[axis]
    volume *= profile.reshape(view)  # bright where the light enters, dim far away
    spacing = (2.0, 0.4, 0.4)
    light, info = light_map(volume, spacing, axes=[axis])
    assert info["lit_sides"]["ZYX"[axis]] == ("start" if lit_from_start else "end")
    first = np.take(light, 0, axis=axis)
    last = np.take(light, shape[axis] - 1, axis=axis)
    lit, far = (first, last) if lit_from_start else (last, first)
    assert np.all(lit == 0)
    assert np.allclose(far, (shape[axis] - 1) * spacing[axis])


def test_light_map_without_known_axes_uses_the_strongest_gradient():
    volume = np.ones((20, 30, 40), np.float32) * np.linspace(100, 1, 40, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        light, info = light_map(volume, (1.0, 1.0, 1.0), axes=None)
    assert info["lit_sides"] == {"X": "start"}
    assert light[0, 0, 0] == 0 and light[0, 0, -1] == pytest.approx(39.0)


def test_hull_of_separate_nuclei_spans_all_of_them():
    # Nuclei without any cytoplasmic signal: no component dominates, the hull must still
    # enclose them all (not just the biggest one).
    volume = np.full((30, 80, 80), 20.0, np.float32)
    centres = [(8, 15, 15), (8, 65, 20), (22, 40, 65), (15, 40, 40), (22, 15, 60)]
    grid = np.indices(volume.shape)
    for index, centre in enumerate(centres):
        radius = 4 + (index == 3)  # one slightly larger nucleus
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius ** 2
        volume[inside] = 1000
    _, hull = surface_distance(volume, (1.0, 1.0, 1.0), return_hull=True)
    for centre in centres:
        assert hull[centre]
    assert hull[15, 30, 35]  # between the nuclei


def test_working_grid_is_capped_for_big_recordings():
    from fmc.core.studies import STUDIES
    from fmc.preprocessing.channels import MAX_WORKING_NODES, working_grid

    study1 = working_grid(STUDIES[1].typical_shape, STUDIES[1].spacing_zyx)
    assert study1 == (222, 143, 168)  # ~1 µm: below the cap, unchanged
    for profile in STUDIES.values():
        grid = working_grid(profile.typical_shape, profile.spacing_zyx)
        assert np.prod(grid) <= MAX_WORKING_NODES * 1.02
