"""What an evaluation scores: raw (view, ground truth) pairs, their predictions, and the methods.

A raw folder holds Fuse My Cells pairs ``image_<i>_<content>_angle.tif`` (the single view) and
``image_<i>_<content>_fused.tif`` (the ground truth). A prediction keeps the angle file's name. A
:class:`Method` is a prediction folder or a baseline (identity, Gaussian) scored against the ground
truth by :mod:`fmc.evaluation.scoring`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import natural_key
from fmc.core.naming import (
    ANGLE,
    FUSED,
    TIFF_SUFFIXES,
    ZARR_SUFFIXES,
    is_tiff,
    is_zarr,
    pair_parts,
    split_list_rows,
    volume_stem,
)
from fmc.io.zarr_volume import open_lazy

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class RawPair:
    """One single view and its fused ground truth."""

    angle: Path
    fused: Path

    @property
    def name(self) -> str:
        """The angle file's name, which a prediction keeps."""
        return self.angle.name


@dataclass(frozen=True)
class Method:
    """What is scored against the ground truth: prediction files or a baseline.

    Attributes
    ----------
    kind : {'prediction', 'identity', 'gaussian'}
    label : str
        Name in tables, e.g. ``gaussian(sigma=0.5)``.
    sigma_zyx : tuple of 3 floats, optional
        Gaussian σ in voxels (gaussian only).
    folder : Path, optional
        Prediction folder (prediction only).
    """

    kind: str
    label: str
    sigma_zyx: tuple[float, float, float] | None = None
    folder: Path | None = None


def find_pairs(raw_dir: str | Path) -> list[RawPair]:
    """Match ``*_angle.tif`` with ``*_fused.tif`` files in ``raw_dir``, sorted by image index.

    Angle files without a fused partner are logged and skipped (they cannot be scored).

    Raises
    ------
    FmcInputError
        If the folder does not exist or holds no complete pair.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FmcInputError(f"{raw_dir}: raw folder does not exist")
    by_stem: dict[str, dict[str, Path]] = {}
    for path in raw_dir.iterdir():
        parts = pair_parts(path.name)
        if parts is not None and ((is_tiff(path.name) and path.is_file())
                                  or (is_zarr(path.name) and path.is_dir())):
            by_stem.setdefault(parts[0], {})[parts[1]] = path
    pairs, lonely = [], []
    for files in by_stem.values():
        if ANGLE in files and FUSED in files:
            pairs.append(RawPair(files[ANGLE], files[FUSED]))
        else:
            lonely.append(next(iter(files.values())).name)
    if lonely:
        log.warning("%d file(s) without a partner are not scored: %s", len(lonely),
                    ", ".join(sorted(lonely)[:5]) + (" ..." if len(lonely) > 5 else ""))
    if not pairs:
        raise FmcInputError(f"{raw_dir}: no image_<i>_<content>_angle.tif / _fused.tif pair found")
    return sorted(pairs, key=lambda p: natural_key(p.name))


def restrict_to_list(pairs: Sequence[RawPair], list_path: str | Path) -> list[RawPair]:
    """The pairs whose image is listed in a split list (``angle.h5;fused.h5`` rows).

    Raises
    ------
    FmcInputError
        If the list is missing, or names an image that has no raw pair.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FmcInputError(f"split_list={list_path}: no such file")
    wanted = [Path(fields[0]).name.rsplit(".", 1)[0] for _, fields in split_list_rows(list_path)]
    by_stem = {pair.name.rsplit(".", 1)[0]: pair for pair in pairs}
    unknown = [stem for stem in wanted if stem not in by_stem]
    if unknown:
        raise FmcInputError(f"{list_path}: {len(unknown)} listed image(s) have no raw pair, e.g. "
                            f"{unknown[0]}")
    return [by_stem[stem] for stem in wanted if stem in by_stem]


def prediction_path(folder: Path, pair: RawPair) -> Path | None:
    """The prediction for ``pair`` in ``folder`` (same name as the angle file, .tif or .tiff)."""
    stem = volume_stem(pair.angle.name)
    for suffix in (pair.angle.suffix, *TIFF_SUFFIXES):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    for suffix in ZARR_SUFFIXES:  # fmc.predict output_format=ome-zarr
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_dir():
            return candidate
    return None


def parse_sigma(value: object) -> tuple[float, float, float]:
    """σ in voxels from a scalar or a ``[z, y, x]`` list.

    Raises
    ------
    FmcConfigError
        If ``value`` is not one positive number or three of them.
    """
    try:
        numbers = [float(v) for v in (value if isinstance(value, (list, tuple)) else
                                      list(value) if hasattr(value, "__iter__")
                                      and not isinstance(value, str) else [value])]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) == 1:
        numbers = numbers * 3
    if len(numbers) != 3 or not all(np.isfinite(numbers)) or min(numbers) < 0:
        raise FmcConfigError(f"sigma={value!r}: give one non-negative number of voxels, "
                             "[z,y,x], or sigma=sweep")
    return (numbers[0], numbers[1], numbers[2])


def gaussian_label(sigma_zyx: Sequence[float]) -> str:
    """Table label of a Gaussian baseline."""
    if len(set(sigma_zyx)) == 1:
        return f"gaussian(sigma={sigma_zyx[0]:g})"
    return "gaussian(sigma=[" + ",".join(f"{s:g}" for s in sigma_zyx) + "])"


def check_predictions(pairs: Sequence[RawPair], methods: Sequence[Method]) -> None:
    """Fail before any scoring if a prediction's shape differs from its ground truth's."""
    for method in methods:
        if method.folder is None:
            continue
        for pair in pairs:
            path = prediction_path(method.folder, pair)
            if path is None:
                continue
            with open_lazy(pair.fused) as fused, open_lazy(path) as prediction:
                if prediction.shape != fused.shape:
                    raise FmcInputError(
                        f"{path}: prediction shape {prediction.shape} differs from the ground "
                        f"truth's {fused.shape} ({pair.fused}); predictions must keep the input's "
                        "shape")
