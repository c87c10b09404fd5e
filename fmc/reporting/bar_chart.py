"""The report's bar chart of test N_SSIM: model vs best Gaussian per run (identity = 0).

Drawn with Pillow, as the montage (:mod:`fmc.evaluation.montage`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmc.core.errors import FmcInputError
from fmc.evaluation.montage import WHITE, label_font
from fmc.io.png import write_png

_BAR_COLOURS = {"model": (31, 119, 180), "gaussian": (160, 160, 160)}


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
    canvas = Image.new("RGB", (max(width, 360), height), WHITE)
    draw = ImageDraw.Draw(canvas)
    font, small = label_font(13), label_font(11)
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
