"""A checkpoint's network as a file other tools run: TorchScript or ONNX (``python -m fmc.export``).

The exported function is what ``fmc.predict`` applies to one tile: input ``(N, C, Z, Y, X)``
float32 with the checkpoint's channels in order (``raw_image`` percentile-normalised as
``fmc.prepare`` stores it, then each distance channel as ``tanh(d / scale)`` with ``d`` in µm,
the checkpoint's ``channel_scales_um``), output ``(N, 1, Z, Y, X)`` on the normalised intensity
scale (the confidence head's blend included). Z, Y and X are free, each a multiple of
``2 ** depth``. What stays in fmc: the sliding window, the surface-distance computation, flip
test-time augmentation (``model.tta``: a user of the export flips the tile and averages), and the
whole-volume input fallback (``fallback``), which needs the whole volume. Every export is checked
on a tile against the checkpoint: the largest absolute difference must stay below ``TOLERANCE``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import atomic_path
from fmc.core.protected import refuse_overwriting
from fmc.inference.export_settings import FORMATS, ExportSettings
from fmc.inference.model_card import export_card, zoo_card
from fmc.inference.model_zoo import export_bioimageio
from fmc.inference.tile_function import TileFunction

TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """What was written and how far the exported network is from the checkpoint on a tile."""

    path: Path
    card: Path
    max_abs_difference: float


def example_tile(model, tile: tuple[int, int, int] | None = None, seed: int = 0) -> torch.Tensor:
    """A reproducible input tile: the training patch (or ``tile``), plausible value ranges."""
    shape = tuple(int(n) for n in (tile or model.hparams.patch_size))
    divisor = model.net.required_divisor
    if any(n % divisor for n in shape):
        raise FmcConfigError(f"patch={list(shape)}: each side must be a multiple of {divisor}")
    generator = torch.Generator().manual_seed(seed)
    tile_values = torch.rand((1, len(model.hparams.channels), *shape), generator=generator)
    tile_values[:, 1:] = tile_values[:, 1:] * 2 - 1  # distance channels lie in (-1, 1)
    return tile_values


def export_torchscript(model, example: torch.Tensor, path: Path) -> np.ndarray:
    """Trace the tile function to TorchScript at ``path``; its output on ``example``."""
    traced = torch.jit.trace(TileFunction.of_module(model).eval(), example)
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return loaded(example).numpy()


def export_onnx(model, example: torch.Tensor, path: Path) -> np.ndarray:
    """Export the tile function to ONNX at ``path`` (free N, Z, Y, X); its onnxruntime output."""
    try:
        import onnxruntime
    except ImportError:
        raise FmcConfigError("format=onnx needs the export extra: pip install -e '.[export]'") \
            from None
    axes = {0: "batch", 2: "z", 3: "y", 4: "x"}
    torch.onnx.export(TileFunction.of_module(model).eval(), (example,), str(path),
                      input_names=["input"], output_names=["output"], opset_version=17,
                      dynamic_axes={"input": axes, "output": axes}, dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": example.numpy()})[0]


def default_sample(model) -> Path:
    """A prepared volume of the embedded dataset for ``model``'s test tensors: the first of its
    study and content, else of its content."""
    from fmc.io.h5 import read_attrs
    from fmc.preprocessing.embedded import prepare_default_dataset

    root = prepare_default_dataset()
    content = model.hparams.get("content")
    candidates = sorted(root.glob(f"*_{content}_angle.h5")) or sorted(root.glob("*_angle.h5"))
    same_study = [p for p in candidates
                  if str(read_attrs(p).get("study")) == str(model.hparams.get("study"))]
    return (same_study or candidates)[0]


def export_checkpoint(checkpoint: str | Path, fmt: str, out: str | Path,
                      tile: tuple[int, int, int] | None = None, sample: str | Path | None = None,
                      zoo: Mapping[str, Any] | None = None) -> ExportResult:
    """Export ``checkpoint`` as ``fmt`` to ``out``, check it on a tile and write its card.

    ``sample`` (an ``fmc.prepare`` angle H5 file; default: the embedded dataset's) and ``zoo``
    (``name``, ``authors``, ``license``, as ``conf/export.yaml``'s ``zoo``; None: those of
    :func:`~fmc.inference.model_zoo.export_bioimageio`) serve ``fmt="bioimageio"``
    (:mod:`fmc.inference.model_zoo`).

    Raises
    ------
    FmcConfigError
        For an unknown format or a tile the network cannot take.
    FmcInputError
        If the export differs from the checkpoint by more than :data:`TOLERANCE` (nothing is
        left behind).
    """
    from fmc.models.checkpoint import load_fusion_module

    if fmt not in FORMATS:
        raise FmcConfigError(f"format={fmt}: choose one of {', '.join(FORMATS)}")
    checkpoint, out = Path(checkpoint), Path(out)
    check_export_targets(checkpoint, out, fmt, sample)
    model = load_fusion_module(checkpoint).float().eval()
    example = example_tile(model, tile)
    if fmt == "bioimageio":
        return _export_bioimageio(model, checkpoint, out, tuple(example.shape[2:]), sample,
                                  zoo)
    with torch.no_grad():
        expected = model(example).numpy()
    export = export_torchscript if fmt == "torchscript" else export_onnx
    # Written and checked under a temporary name: a failed check leaves what was at ``out``.
    with atomic_path(out) as temporary:
        difference = float(np.max(np.abs(export(model, example, temporary) - expected)))
        if not difference <= TOLERANCE:
            raise FmcInputError(f"{out}: the {fmt} export differs from the checkpoint by "
                                f"{difference:.2e} on a tile (limit {TOLERANCE:g}); nothing "
                                "written")
    card, meta = export_sidecars(out)
    with atomic_path(card) as temporary:
        temporary.write_text(export_card(model, checkpoint, fmt, out, difference, TOLERANCE))
    with atomic_path(meta) as temporary:
        temporary.write_text(json.dumps({
            "format": fmt, "checkpoint": checkpoint.name, "channels": list(model.hparams.channels),
            "channel_scales_um": dict(model.hparams.get("channel_scales_um") or {}),
            "divisor": model.net.required_divisor, "patch_size": list(model.hparams.patch_size),
            "spacing_zyx": model.hparams.get("spacing_zyx"), "max_abs_difference": difference},
            indent=2) + "\n")
    return ExportResult(out, card, difference)


def run(settings: ExportSettings) -> ExportResult:
    """Export the checkpoint of ``settings`` (see ``conf/export.yaml``) and say what was written.

    Parameters
    ----------
    settings : ExportSettings
        What to export, and where (:meth:`ExportSettings.from_config`).

    Returns
    -------
    ExportResult
        The file, its card and the checked difference to the checkpoint.
    """
    result = export_checkpoint(settings.ckpt, settings.format, settings.output, settings.patch,
                               sample=settings.sample, zoo=settings.zoo)
    print(f"wrote {result.path} (largest difference to the checkpoint on a tile: "
          f"{result.max_abs_difference:.2e}) and its card {result.card}")
    return result


def export_sidecars(out: Path) -> tuple[Path, Path]:
    """The card (``<out>.md``) and the description (``<out>.json``) written beside an export."""
    return out.with_suffix(out.suffix + ".md"), out.with_suffix(out.suffix + ".json")


def check_export_targets(checkpoint: Path, out: Path, fmt: str, sample) -> None:
    """Refuse an ``output=`` that would replace the checkpoint, the sample or a file fmc.export did
    not write (an earlier export of fmc, with its card beside it, may be replaced)."""
    if out.is_dir():
        raise FmcInputError(f"output={out}: a folder; give a file name for the {fmt} export")
    inputs = [checkpoint] + ([Path(str(sample))] if sample is not None else [])
    card, description = export_sidecars(out)
    written = (out, card) if fmt == "bioimageio" else (out, card, description)
    ours = all(path.is_file() for path in written[1:])
    for target in written:
        refuse_overwriting(target, inputs, "output", made_by_fmc=lambda _: ours)


def _export_bioimageio(model, checkpoint: Path, out: Path, tile: tuple[int, ...],
                       sample: str | Path | None, zoo: Mapping[str, Any] | None) -> ExportResult:
    sample = Path(str(sample)) if sample is not None else default_sample(model)
    if not sample.is_file():
        raise FmcInputError(f"sample={sample}: no such file (give an angle H5 file written by "
                            "python -m fmc.prepare)")
    metadata = {} if zoo is None else {"name": zoo["name"], "authors": list(zoo["authors"]),
                                       "license_id": str(zoo["license"])}
    difference = export_bioimageio(model, checkpoint, out, sample, tile, **metadata)
    card = export_sidecars(out)[0]
    with atomic_path(card) as temporary:
        temporary.write_text(zoo_card(model, checkpoint))
    return ExportResult(out, card, difference)
