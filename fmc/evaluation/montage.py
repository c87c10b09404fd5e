"""A montage of max projections: input | prediction | target | difference, XY above XZ.

Drawn for the training report (``report_montage.png``, ``report.html``), for whole-volume
validation during training (``<run>/validation_images/``) and for the benchmarks' figures.

No plotting library: matplotlib is not one of fmc's dependencies, so panels are composed with
numpy, labelled with Pillow (installed with scikit-image) and scaled, projected and written with
:mod:`fmc.io.png`.

Montage (:func:`write_montage`): one block per image, columns input, prediction, target and
``|prediction - target|``, an XY maximum projection row above an XZ one. Each volume is
percentile-normalised on its own (2, 99.8, as the challenge metric does) and shown on [0, 1];
the difference is taken between the normalised prediction and target and shown on the same
[0, 1] scale (a colour map tells it apart), so its brightness compares with the signal's.
XZ panels are stretched by the Z/X voxel size ratio so that the specimen keeps its proportions.
Volumes are read in z-slabs: memory grows with a slab and the projections, not the volume.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmc.core.errors import FmcInputError
from fmc.core.normalization import PERCENTILE_HIGH, PERCENTILE_LOW, VolumeStats, volume_stats
from fmc.io.png import PROJECTION_SLAB, ProjectionAccumulator, Projections, to_uint8, write_png
from fmc.io.tiff import TiffVolume

log = logging.getLogger(__name__)

COLUMNS = ("input", "prediction", "target", "|prediction - target|")
WHITE = (255, 255, 255)
_GAP = 6
_LABEL_HEIGHT = 18


@dataclass(frozen=True)
class MontageImage:
    """One image of a montage: its three volumes and the label shown above its rows.

    Attributes
    ----------
    label : str
        Shown above the image's XY row, e.g. ``run 0: image_3_nucleus_angle.tif``.
    input, prediction, target : Path
        TIFF volumes of the same ZYX shape.
    """

    label: str
    input: Path
    prediction: Path
    target: Path


def max_projections(volumes: Sequence, stats: Sequence[VolumeStats], difference: tuple[int, int] | None
                    = None, slab: int = PROJECTION_SLAB) -> list[Projections]:
    """Maximum projections of percentile-normalised volumes, read slab by slab (each once).

    Parameters
    ----------
    volumes : sequence of array-like
        ZYX volumes of one shape (arrays or :class:`fmc.io.tiff.TiffVolume`), sliced along z.
    stats : sequence of VolumeStats
        Each volume's percentiles; voxels become ``(v - p_low) / (p_high - p_low)``.
    difference : (int, int), optional
        Indices of two volumes whose absolute normalised difference is projected too (appended
        last to the result).
    slab : int
        z-planes read at a time.

    Returns
    -------
    list of fmc.io.png.Projections
        One per volume, then the difference's when asked for.
    """
    depth = volumes[0].shape[0]
    accumulators = [ProjectionAccumulator() for _ in range(len(volumes) + (difference is not None))]
    for z0 in range(0, depth, slab):
        z1 = min(z0 + slab, depth)
        blocks = [volume_stats_.normalize(np.asarray(volume[z0:z1])).astype(np.float32)
                  for volume, volume_stats_ in zip(volumes, stats, strict=True)]
        if difference is not None:
            blocks.append(np.abs(blocks[difference[0]] - blocks[difference[1]]))
        for accumulator, block in zip(accumulators, blocks, strict=True):
            accumulator.add(block)
    return [accumulator.result() for accumulator in accumulators]


def panel_shapes(shape_zyx: Sequence[int], spacing_zyx: Sequence[float], panel_px: int
                 ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Pixel shapes (height, width) of the XY and XZ panels of a volume drawn ``panel_px`` wide.

    One X voxel becomes ``panel_px / X`` pixels; Y and Z voxels become as many pixels as their
    size in micrometres asks for relative to X, so a Z step of 3 µm beside 0.5 µm pixels makes
    the XZ panel 6 times taller than the number of z-planes alone would.
    """
    depth, height, width = (int(n) for n in shape_zyx)
    z_um, y_um, x_um = (float(s) for s in spacing_zyx)
    pixels_per_x = panel_px / width
    xy = (max(1, round(height * pixels_per_x * y_um / x_um)), panel_px)
    xz = (max(1, round(depth * pixels_per_x * z_um / x_um)), panel_px)
    return xy, xz


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    # Bilinear in Pillow widens its kernel when shrinking, so downscaled projections are
    # antialiased; float mode keeps the values before the colour mapping.
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F").resize(
        (shape[1], shape[0]), resample=Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def _grey(values: np.ndarray) -> np.ndarray:
    # Normalised intensities: the window is [0, 1].
    return np.repeat(to_uint8(values, 0.0, 1.0)[..., None], 3, axis=2)


def _hot(values: np.ndarray) -> np.ndarray:
    # Black -> red -> yellow -> white: tells the difference column apart from the intensities.
    v = np.clip(values, 0.0, 1.0)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)],
                   axis=-1)
    return (rgb * 255).astype(np.uint8)


def image_panels(image: MontageImage, panel_px: int = 192, slab: int = PROJECTION_SLAB
                 ) -> tuple[list[np.ndarray], list[np.ndarray], tuple[float, float, float] | None]:
    """The RGB panels of one image: the XY row and the XZ row (4 columns each).

    Returns
    -------
    xy_row, xz_row : list of 4 uint8 arrays (H, panel_px, 3)
    spacing_zyx : tuple of 3 floats or None
        The voxel size used (the target's, else the input's); None when neither file has one,
        in which case voxels are drawn as cubes.

    Raises
    ------
    FmcInputError
        If a file is unreadable or the three volumes differ in shape.
    """
    paths = (image.input, image.prediction, image.target)
    opened: list[TiffVolume] = []
    try:
        for path in paths:
            opened.append(TiffVolume(path))
        shapes = {tuple(v.shape) for v in opened}
        if len(shapes) != 1:
            shown = ", ".join(f"{p.name} {list(v.shape)}" for p, v in zip(paths, opened, strict=True))
            raise FmcInputError(f"{image.label}: input, prediction and target differ in shape "
                                f"({shown})")
        spacing = opened[2].meta.spacing_zyx or opened[0].meta.spacing_zyx
        xy_row, xz_row = projection_rows(opened, spacing, panel_px, slab,
                                         [str(v.path) for v in opened])
    finally:
        for volume in opened:
            volume.close()
    return xy_row, xz_row, spacing


def projection_rows(volumes: Sequence, spacing_zyx: Sequence[float] | None, panel_px: int = 192,
                    slab: int = PROJECTION_SLAB, names: Sequence[str] = ("input", "prediction",
                                                                         "target")
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The XY and XZ rows (input, prediction, target, difference) of three ZYX volumes.

    ``volumes`` are array-like (numpy arrays, h5py datasets, TIFF volumes) of one shape, read
    in z-slabs; ``spacing_zyx`` None draws voxels as cubes.
    """
    stats = [volume_stats(v, percentiles=(PERCENTILE_LOW, PERCENTILE_HIGH), name=name)
             for v, name in zip(volumes, names, strict=True)]
    projections = max_projections(volumes, stats, difference=(1, 2), slab=slab)
    xy_shape, xz_shape = panel_shapes(volumes[0].shape, spacing_zyx or (1.0, 1.0, 1.0), panel_px)
    colour = [_grey, _grey, _grey, _hot]
    xy_row = [paint(_resize(p.xy, xy_shape)) for p, paint in zip(projections, colour, strict=True)]
    xz_row = [paint(_resize(p.xz, xz_shape)) for p, paint in zip(projections, colour, strict=True)]
    return xy_row, xz_row


def label_font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font only
        return ImageFont.load_default()


def _label_strip(text: str, width: int, height: int = _LABEL_HEIGHT) -> np.ndarray:
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, height), WHITE)
    ImageDraw.Draw(strip).text((3, 2), text, fill=(0, 0, 0), font=label_font())
    return np.asarray(strip)


def _row(panels: Sequence[np.ndarray]) -> np.ndarray:
    height = max(p.shape[0] for p in panels)
    parts = []
    for index, panel in enumerate(panels):
        if index:
            parts.append(np.full((height, _GAP, 3), 255, dtype=np.uint8))
        padded = np.full((height, panel.shape[1], 3), 255, dtype=np.uint8)
        padded[:panel.shape[0]] = panel
        parts.append(padded)
    return np.concatenate(parts, axis=1)


def montage_array(images: Sequence[MontageImage], panel_px: int = 192,
                  slab: int = PROJECTION_SLAB) -> np.ndarray:
    """The montage of ``images`` as one RGB uint8 array (see the module text).

    Raises
    ------
    FmcInputError
        If ``images`` is empty or an image cannot be drawn.
    """
    if not images:
        raise FmcInputError("montage: no image to show")
    blocks = [_header(panel_px)]
    for image in images:
        xy_row, xz_row, spacing = image_panels(image, panel_px, slab)
        blocks += _image_block(image.label, xy_row, xz_row, spacing, panel_px)
    return np.concatenate(blocks, axis=0)


def _header(panel_px: int) -> np.ndarray:
    width = 4 * panel_px + 3 * _GAP
    return np.concatenate([_row([_label_strip(title, panel_px) for title in COLUMNS]),
                           np.full((_GAP, width, 3), 255, dtype=np.uint8)], axis=0)


def _image_block(label: str, xy_row, xz_row, spacing, panel_px: int) -> list[np.ndarray]:
    width = 4 * panel_px + 3 * _GAP
    where = "voxel size unknown: drawn as cubes" if spacing is None else \
        "voxel " + " x ".join(f"{s:g}" for s in spacing) + " um (ZYX)"
    return [_label_strip(f"{label}  -  XY max projection, {where}", width), _row(xy_row),
            _label_strip("XZ max projection", width), _row(xz_row),
            np.full((_GAP * 2, width, 3), 255, dtype=np.uint8)]


def volumes_figure(label: str, volumes: Sequence, spacing_zyx: Sequence[float] | None = None,
                   panel_px: int = 192, slab: int = PROJECTION_SLAB) -> np.ndarray:
    """One image's montage block from in-memory or lazily read volumes (input, prediction,
    target): the column titles, ``label`` (e.g. the step and score), the XY and XZ rows."""
    xy_row, xz_row = projection_rows(volumes, spacing_zyx, panel_px, slab)
    spacing = None if spacing_zyx is None else tuple(float(s) for s in spacing_zyx)
    return np.concatenate([_header(panel_px),
                           *_image_block(label, xy_row, xz_row, spacing, panel_px)], axis=0)


def write_montage(images: Sequence[MontageImage], path: str | Path, panel_px: int = 192,
                  slab: int = PROJECTION_SLAB) -> Path:
    """Draw :func:`montage_array` of ``images`` into the PNG ``path`` (atomically)."""
    return write_png(path, montage_array(images, panel_px, slab))
