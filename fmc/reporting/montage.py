"""Figures of a training report: a montage of max projections and a bar chart of test N_SSIM.

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
import math
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
_WHITE = (255, 255, 255)
_GAP = 6
_LABEL_HEIGHT = 18
_BAR_COLOURS = {"model": (31, 119, 180), "gaussian": (160, 160, 160)}


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
        stats = [volume_stats(v, percentiles=(PERCENTILE_LOW, PERCENTILE_HIGH), name=str(v.path))
                 for v in opened]
        projections = max_projections(opened, stats, difference=(1, 2), slab=slab)
        shape = opened[0].shape
    finally:
        for volume in opened:
            volume.close()
    xy_shape, xz_shape = panel_shapes(shape, spacing or (1.0, 1.0, 1.0), panel_px)
    colour = [_grey, _grey, _grey, _hot]
    xy_row = [paint(_resize(p.xy, xy_shape)) for p, paint in zip(projections, colour, strict=True)]
    xz_row = [paint(_resize(p.xz, xz_shape)) for p, paint in zip(projections, colour, strict=True)]
    return xy_row, xz_row, spacing


def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font only
        return ImageFont.load_default()


def _label_strip(text: str, width: int, height: int = _LABEL_HEIGHT) -> np.ndarray:
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, height), _WHITE)
    ImageDraw.Draw(strip).text((3, 2), text, fill=(0, 0, 0), font=_font())
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
    width = 4 * panel_px + 3 * _GAP
    header = _row([_label_strip(title, panel_px) for title in COLUMNS])
    blocks = [header, np.full((_GAP, width, 3), 255, dtype=np.uint8)]
    for image in images:
        xy_row, xz_row, spacing = image_panels(image, panel_px, slab)
        where = "voxel size unknown: drawn as cubes" if spacing is None else \
            "voxel " + " x ".join(f"{s:g}" for s in spacing) + " um (ZYX)"
        blocks += [_label_strip(f"{image.label}  -  XY max projection, {where}", width),
                   _row(xy_row), _label_strip("XZ max projection", width), _row(xz_row),
                   np.full((_GAP * 2, width, 3), 255, dtype=np.uint8)]
    return np.concatenate(blocks, axis=0)


def write_montage(images: Sequence[MontageImage], path: str | Path, panel_px: int = 192,
                  slab: int = PROJECTION_SLAB) -> Path:
    """Draw :func:`montage_array` of ``images`` into the PNG ``path`` (atomically)."""
    return write_png(path, montage_array(images, panel_px, slab))


@dataclass(frozen=True)
class Bar:
    """One group of the N_SSIM bar chart: a run's model and best Gaussian scores (NaN: none)."""

    label: str
    model: float
    gaussian: float


def bar_chart_array(bars: Sequence[Bar], title: str = "Test N_SSIM (whole volumes); identity = 0",
                    group_px: int = 90, height: int = 320,
                    legend: tuple[str, str] = ("model", "best Gaussian")) -> np.ndarray:
    """A grouped bar chart, model vs best Gaussian per run, as an RGB uint8 array.

    ``legend`` names the two bars of a group (:class:`Bar`'s ``model`` and ``gaussian``).

    The y axis spans 0 (the identity baseline, drawn as a line) and every value, so negative
    scores hang below the line. Each bar carries its value.

    Raises
    ------
    FmcInputError
        If no bar has a finite value.
    """
    from PIL import Image, ImageDraw

    values = [v for bar in bars for v in (bar.model, bar.gaussian) if math.isfinite(v)]
    if not values:
        raise FmcInputError("bar chart: no finite N_SSIM to draw")
    low, high = min(0.0, *values), max(0.0, *values)
    span = high - low or 1.0
    low, high = low - 0.08 * span * (low < 0), high + 0.12 * span
    left, right, top, bottom = 60, 20, 40, 60
    width = left + right + group_px * len(bars)
    canvas = Image.new("RGB", (max(width, 360), height), _WHITE)
    draw = ImageDraw.Draw(canvas)
    font, small = _font(13), _font(11)
    plot_h = height - top - bottom

    def y_of(value: float) -> float:
        return top + (high - value) / (high - low) * plot_h

    for tick in _ticks(low, high):
        y = y_of(tick)
        draw.line([(left - 4, y), (width - right, y)], fill=(225, 225, 225))
        draw.text((4, y - 7), f"{tick:+.2f}", fill=(0, 0, 0), font=small)
    draw.line([(left, top), (left, top + plot_h)], fill=(0, 0, 0))
    draw.line([(left, y_of(0.0)), (width - right, y_of(0.0))], fill=(0, 0, 0), width=2)
    bar_w = group_px * 0.32
    for index, bar in enumerate(bars):
        x0 = left + index * group_px + group_px * 0.16
        for offset, (kind, value) in enumerate((("model", bar.model), ("gaussian", bar.gaussian))):
            if not math.isfinite(value):
                continue
            xa = x0 + offset * bar_w
            ya, yb = sorted((y_of(0.0), y_of(value)))
            draw.rectangle([(xa, ya), (xa + bar_w - 2, yb)], fill=_BAR_COLOURS[kind])
            text_y = yb + 2 if value < 0 else ya - 13
            draw.text((xa, text_y), f"{value:+.3f}", fill=(0, 0, 0), font=small)
        for line, text in enumerate(bar.label.split("\n")[:2]):
            draw.text((left + index * group_px + 4, top + plot_h + 6 + 14 * line), text[:14],
                      fill=(0, 0, 0), font=small)
    draw.text((left, 8), title, fill=(0, 0, 0), font=font)
    legend_x = left
    for kind, name in zip(("model", "gaussian"), legend, strict=True):
        y = height - 18
        draw.rectangle([(legend_x, y), (legend_x + 12, y + 10)], fill=_BAR_COLOURS[kind])
        draw.text((legend_x + 16, y - 2), name, fill=(0, 0, 0), font=small)
        legend_x += 120
    return np.asarray(canvas)


def _ticks(low: float, high: float) -> list[float]:
    # About five round steps (1, 2 or 5 times a power of ten) across the axis.
    raw = (high - low) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.ceil(low / step) * step
    return [start + i * step for i in range(int((high - start) / step) + 1)]


def write_bar_chart(bars: Sequence[Bar], path: str | Path, **options) -> Path:
    """Draw :func:`bar_chart_array` of ``bars`` (``options``: its keywords) into the PNG
    ``path`` (atomically)."""
    return write_png(path, bar_chart_array(bars, **options))
