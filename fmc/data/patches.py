"""Pure patch functions: patch placement, padding, flips and rotations.

No HDF5 and no torch here, so every rule of :mod:`fmc.data.datamodule` can be tested on small arrays. Axes
are ZYX (0, 1, 2) everywhere; a patch origin is the ZYX index of its first voxel. How each input channel
is scaled is its spec's (:func:`fmc.preprocessing.channel_specs.scale_channel`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmc.core.errors import FmcConfigError
from fmc.core.studies import AXIS_NAMES, get_profile

log = logging.getLogger(__name__)


def centred_origin(centre: Sequence[int], patch: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Origin of a patch centred on ``centre`` and clamped inside the volume.

    Along an axis where the volume is smaller than the patch the origin is 0 (the patch is padded
    at the end, see :func:`pad_to_patch`).
    """
    centre, patch, shape = (np.asarray(v, dtype=np.int64) for v in (centre, patch, shape))
    return np.clip(centre - patch // 2, 0, np.maximum(shape - patch, 0))


def uniform_origin(rng: np.random.Generator, patch: Sequence[int], shape: Sequence[int]
                   ) -> np.ndarray:
    """A uniform origin in ``[0, dim - patch]`` per axis, the last start included.

    (RWTH-GE drew from ``[0, dim - patch)`` and never reached the far border.)
    """
    high = np.maximum(np.asarray(shape, np.int64) - np.asarray(patch, np.int64), 0)
    return rng.integers(0, high + 1)


def draw_origin(rng: np.random.Generator, patch: Sequence[int], shape: Sequence[int],
                foreground: np.ndarray | None, foreground_share: float) -> np.ndarray:
    """Origin of one patch: centred on a random foreground voxel with probability
    ``foreground_share`` (if the volume has any), else uniform."""
    use_foreground = rng.random() < foreground_share
    if use_foreground and foreground is not None and len(foreground):
        centre = foreground[rng.integers(len(foreground))]
        return centred_origin(centre, patch, shape)
    return uniform_origin(rng, patch, shape)


def patch_window(origin: Sequence[int], patch: Sequence[int], shape: Sequence[int]
                 ) -> tuple[slice, ...]:
    """The slices to read: the patch, cut at the volume's end where it is too small."""
    return tuple(slice(int(o), int(min(o + p, s))) for o, p, s in zip(origin, patch, shape, strict=True))


def pad_to_patch(array: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """Pad the last three axes of ``array`` at their end up to ``patch`` by reflection.

    A one-voxel axis cannot be reflected; numpy then repeats the edge, and any other case reflect
    refuses falls back to ``edge`` explicitly.
    """
    missing = [max(0, int(p) - s) for p, s in zip(patch, array.shape[-3:], strict=True)]
    if not any(missing):
        return array
    widths = [(0, 0)] * (array.ndim - 3) + [(0, m) for m in missing]
    try:
        return np.pad(array, widths, mode="reflect")
    except ValueError:
        return np.pad(array, widths, mode="edge")


def axis_indices(axes: Sequence[int | str] | str | None) -> tuple[int, ...]:
    """Axes given as names (``"ZY"``, ``["Y", "X"]``) or indices → sorted unique indices."""
    if axes is None:
        return ()
    indices = set()
    for axis in axes:
        if isinstance(axis, str):
            if axis.upper() not in AXIS_NAMES:
                raise FmcConfigError(f"unknown axis {axis!r}: use Z, Y, X or 0, 1, 2")
            indices.add(AXIS_NAMES.index(axis.upper()))
        elif int(axis) in (0, 1, 2):
            indices.add(int(axis))
        else:
            raise FmcConfigError(f"unknown axis {axis!r}: use Z, Y, X or 0, 1, 2")
    return tuple(sorted(indices))


def plane_indices(planes: Sequence[Sequence[int | str] | str] | None) -> tuple[tuple[int, int], ...]:
    """Planes given as ``"YX"`` or ``(1, 2)`` → sorted index pairs."""
    result = set()
    for plane in planes or ():
        pair = axis_indices(plane)
        if len(pair) != 2:
            raise FmcConfigError(f"rot90 plane {plane!r} must name two different axes, e.g. 'YX'")
        result.add(pair)
    return tuple(sorted(result))


def default_augment_axes(study: int | str | None) -> tuple[int, ...]:
    """Axes (0=Z, 1=Y, 2=X) along which flipping is safe for ``study``.

    The study's degradation axes are left out: a view gets worse with depth along them, and a flip
    would teach the network that light comes from either side. An unknown study (``None``) gets no
    flips at all.
    """
    if study is None:
        return ()
    degraded = get_profile(study).degradation_axis_indices
    return tuple(axis for axis in range(3) if axis not in degraded)


def lateral_augment_axes(studies: Sequence[int | str | None]) -> tuple[int, ...]:
    """Flip axes (0=Z, 1=Y, 2=X) of ``flip_axes="lateral"``: light from every lateral side.

    Y and X are flipped (and, with equal sides, turned) whatever the studies' own light
    directions, so that the network sees light arrive from every lateral side and has to judge
    from the image itself how degraded a region is -- for a model meant for microscopes whose
    light may come from another side than its training studies'. Z as well when no study's light
    travels along Z (its planes are coarser: never turned); an unknown study counts as one whose
    light may.
    """
    along_z = any(study is None or 0 in get_profile(study).degradation_axis_indices
                  for study in studies)
    return (1, 2) if along_z or not studies else (0, 1, 2)


def resolve_flip_axes(flip_axes: Sequence[int | str] | str, studies: Sequence[int | None],
                      degradation_axes: Sequence[int] | None = None) -> tuple[int, ...]:
    """The flip axes of a ``flip_axes`` setting for training files of ``studies``.

    ``"auto"``: the axes that are not in ``degradation_axes`` (a single study's config) or,
    without them, that are no training study's light axis (none for an unknown study);
    ``"lateral"``: :func:`lateral_augment_axes`; otherwise the axes given, with a warning for each
    study whose light they would flip.
    """
    if flip_axes == "auto" and degradation_axes is not None:
        return tuple(a for a in range(3) if a not in degradation_axes)
    if flip_axes == "auto":
        allowed = set(range(3))
        for study in studies:
            allowed &= set(default_augment_axes(study))
        return tuple(sorted(allowed))
    if flip_axes == "lateral":
        if degradation_axes is not None:
            return (1, 2) if 0 in degradation_axes else (0, 1, 2)
        return lateral_augment_axes(studies)
    if isinstance(flip_axes, str) and not set(flip_axes.upper()) <= set(AXIS_NAMES):
        raise FmcConfigError(f"data.flip_axes={flip_axes!r}: use auto, lateral or axes such as "
                             "[Y, X]")
    flips = axis_indices(flip_axes)
    for study in studies:
        if study is not None:
            directional = set(flips) - set(default_augment_axes(study))
            if directional:
                log.warning("flipping along %s, a degradation axis of study %s: the network will "
                            "see light from both sides",
                            "".join(AXIS_NAMES[a] for a in sorted(directional)), study)
    return flips


def default_rot90_planes(allowed_axes: Sequence[int], patch: Sequence[int]
                         ) -> tuple[tuple[int, int], ...]:
    """Planes of two allowed axes whose patch sides are equal (a rotation keeps the shape)."""
    allowed = sorted(set(allowed_axes))
    return tuple((a, b) for i, a in enumerate(allowed) for b in allowed[i + 1:]
                 if int(patch[a]) == int(patch[b]))


def check_rot90_planes(planes: Sequence[tuple[int, int]], patch: Sequence[int]) -> None:
    """Raise if a rot90 plane has unequal patch sides (the patch would change shape)."""
    for a, b in planes:
        if int(patch[a]) != int(patch[b]):
            raise FmcConfigError(
                f"rot90 in the {AXIS_NAMES[a]}{AXIS_NAMES[b]} plane needs equal patch sides, got "
                f"patch_size {list(patch)}: drop the plane from data.rot90_planes or make the sides equal")


@dataclass(frozen=True)
class Augmentation:
    """One draw of geometric augmentation: axes to flip, then quarter turns per plane."""

    flips: tuple[int, ...] = ()
    rotations: tuple[tuple[tuple[int, int], int], ...] = ()


def draw_augmentation(rng: np.random.Generator, flip_axes: Sequence[int],
                      rot90_planes: Sequence[tuple[int, int]]) -> Augmentation:
    """Flip each allowed axis with probability 1/2; turn each plane by k·90°, k uniform in 0..3."""
    flips = tuple(axis for axis in flip_axes if rng.random() < 0.5)
    rotations = tuple((tuple(plane), int(rng.integers(4))) for plane in rot90_planes)
    return Augmentation(flips, tuple((p, k) for p, k in rotations if k))


def apply_augmentation(array: np.ndarray, augmentation: Augmentation) -> np.ndarray:
    """Apply ``augmentation`` to the last three (ZYX) axes of ``array``; contiguous result."""
    offset = array.ndim - 3
    for axis in augmentation.flips:
        array = np.flip(array, axis=offset + axis)
    for (a, b), k in augmentation.rotations:
        array = np.rot90(array, k=k, axes=(offset + a, offset + b))
    return np.ascontiguousarray(array)
