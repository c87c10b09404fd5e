"""Apply a trained checkpoint to whole volumes (used by ``python -m fmc.predict``).

Everything comes from the checkpoint, never from defaults (the seed took its inference settings
from argparse defaults): input channels and their scaling, normalisation, tile size, and the
study whose illuminated axes the light map needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmc.channels import light_map, surface_distance
from fmc.conversion import normalize_float32, resolve_spacing
from fmc.errors import FmcInputError
from fmc.io import VolumeMeta, read_volume, write_volume
from fmc.metrics import volume_stats
from fmc.patches import scale_channel
from fmc.studies import STUDIES
from fmc.tiling import sliding_window_predict

log = logging.getLogger(__name__)


def load_model(path: str | Path, device: str = "cpu"):
    """The FusionModule of a checkpoint, loaded as data (``weights_only=True``), in eval mode."""
    from fmc.module import FusionModule

    path = Path(path)
    if not path.is_file():
        raise FmcInputError(f"ckpt={path}: no such checkpoint")
    try:
        model = FusionModule.load_from_checkpoint(path, map_location=device, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means "not an fmc checkpoint"
        raise FmcInputError(f"{path}: not an fmc checkpoint ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200]})") from None
    return model.eval()


def input_channels(volume: np.ndarray, meta: VolumeMeta, hparams: Any, source: Path) -> np.ndarray:
    """The network input ``(C, Z, Y, X)`` for a raw view, built as training built it."""
    spacing, _ = resolve_spacing(meta, source)
    study = meta.study if meta.study in STUDIES else hparams.get("study")
    axes = STUDIES[study].degradation_axis_indices if study in STUDIES else None
    stats = volume_stats(volume, name=str(source))
    scales = hparams.get("channel_scales_um") or {}
    channels = []
    for name in hparams.channels:
        if name == "raw_image":
            channels.append(normalize_float32(volume, stats.low, stats.high))
        elif name == "surface_distance":
            channels.append(scale_channel(name, surface_distance(volume, spacing), scales.get(name)))
        elif name == "light_map":
            channels.append(scale_channel(name, light_map(volume, spacing, axes)[0],
                                          scales.get(name)))
        else:
            raise FmcInputError(f"checkpoint asks for an unknown input channel {name!r}")
    return np.stack(channels).astype(np.float32, copy=False)


@dataclass
class PredictSettings:
    """Tiling settings; ``patch`` None takes the checkpoint's training patch."""

    patch: tuple[int, int, int] | None = None
    overlap: float = 0.5
    batch_size: int = 2
    weighting: str = "gaussian"
    progress: bool = True


def predict_file(model, source: Path, output: Path, settings: PredictSettings) -> Path:
    """Predict one TIFF and write a float32 TIFF with the input's name, shape and metadata."""
    volume, meta = read_volume(source)
    channels = input_channels(volume, meta, model.hparams, source)
    patch = settings.patch or tuple(model.hparams.patch_size)
    divisor = model.net.required_divisor
    if any(int(p) % divisor for p in patch):
        raise FmcInputError(f"patch={list(patch)}: each side must be a multiple of {divisor}")
    device = next(model.parameters()).device
    prediction = sliding_window_predict(channels, model, patch, overlap=settings.overlap,
                                        batch_size=settings.batch_size,
                                        weighting=settings.weighting, progress=settings.progress,
                                        device=device)
    return write_volume(output / source.name, prediction.astype(np.float32), meta)


def input_files(path: str | Path) -> list[Path]:
    """One TIFF, or the TIFFs of a folder except ``*_fused`` ground truths."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FmcInputError(f"input={path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff")
                   and "_fused." not in p.name.lower() and not p.name.startswith("."))
    if not files:
        raise FmcInputError(f"input={path}: no .tif/.tiff file to predict")
    return files


def device_for(choice: str) -> str:
    """'auto' → cuda when available, else cpu."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice
