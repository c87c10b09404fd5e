"""Image panels of validation patches: input | prediction | target, middle slices and projections.

Logged to Weights & Biases each validation epoch (``val/panel``), and saved as a PNG next to the
CSV logs, so a run can be looked at with W&B off.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fmc.io.png import percentile_window, to_uint8, write_png

# The shared intensity window: these percentiles of the target.
PANEL_PERCENTILES = (1, 99.5)


def panel_image(volumes: dict[str, torch.Tensor]) -> np.ndarray:
    """A uint8 grid: rows = middle XY slice, XY max projection; columns = input, prediction, target.

    All three share the target's intensity window (1st-99.5th percentile), so brightness
    differences between them are real.
    """
    arrays = [volumes[key][0, 0].float().numpy() for key in ("input", "prediction", "target")]
    low, high = percentile_window(arrays[2], PANEL_PERCENTILES)
    rows = []
    for view in (lambda a: a[a.shape[0] // 2], lambda a: a.max(axis=0)):
        tiles = [np.pad(to_uint8(view(a), low, high), 2, constant_values=255) for a in arrays]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def log_image_panel(loggers: Sequence, volumes: dict[str, torch.Tensor], step: int, epoch: int
                    ) -> None:
    """Send the panel to every logger that can show images (W&B; CSV: a PNG file)."""
    image = panel_image(volumes)
    for logger in loggers:
        name = type(logger).__name__
        if name == "WandbLogger":
            logger.log_image(key="val/panel", images=[image],
                             caption=["input | prediction | target (middle slice; max projection)"],
                             step=step)
        elif getattr(logger, "log_dir", None):
            write_png(Path(logger.log_dir) / "panels" / f"epoch_{epoch:04d}.png", image)
