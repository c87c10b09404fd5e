"""Apply a trained checkpoint to whole volumes (used by ``python -m fmc.predict`` and ``fmc.challenge``).

Everything comes from the checkpoint, never from defaults (RWTH-GE took its inference settings
from argparse defaults): input channels and their scaling, normalisation, tile size, and the
study whose illuminated axes the light map needs. Volumes stream through in z-slabs
(:mod:`fmc.inference.network_input` → :mod:`fmc.inference.tiling` →
:func:`fmc.io.tiff.write_volume_slabs`), so memory
grows with the tile, not with the volume.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from fmc.core.cli import CONFIG_DIR
from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.naming import volume_stem
from fmc.inference.network_input import NetworkInput, open_volume
from fmc.inference.precision import AMP_CHOICES
from fmc.inference.tiling import WEIGHTINGS, flip_combinations, iter_predicted_slabs
from fmc.io.lazy_array import check_unchanged, file_stamp
from fmc.models.fallback import FALLBACK_CHOICES, PlaneBuffer, make_fallback, resolve_fallback

log = logging.getLogger(__name__)

OUTPUT_DTYPES = ("float32", "uint16")
OUTPUT_FORMATS = ("tiff", "ome-zarr")
# The challenge template's TIFF tiles (its reader and tifffile read them; ImageJ's reader does not).
CHALLENGE_TILE = (128, 128)
# The defaults of PredictSettings (and of the commands' sliding-window keys).
INFERENCE_DEFAULTS = Path(CONFIG_DIR) / "inference" / "default.yaml"


def load_model(path: str | Path, device: str = "cpu"):
    """The FusionModule of a checkpoint, loaded as data (``weights_only=True``), in eval mode.

    Raises
    ------
    FmcInputError
        If the file is missing, holds pickled code, is not an fmc checkpoint, or its weights or
        stored channels do not match its network (see :mod:`fmc.models.checkpoint`).
    """
    from fmc.models.checkpoint import describe_load_error, read_checkpoint
    from fmc.models.module import FusionModule

    path = Path(path)
    if path.is_dir():
        raise FmcInputError(f"ckpt={path}: a folder; give a checkpoint file, or ckpt=auto "
                            f"registry={path} for the models of a run, sweep or models.yaml")
    if not path.is_file():
        raise FmcInputError(f"ckpt={path}: no such checkpoint")
    read_checkpoint(path)  # the clear refusals first: code, bare state_dicts, other files
    try:
        # Trained with model.compile=true or not, prediction compiles only when asked.
        model = FusionModule.load_from_checkpoint(path, map_location=device, weights_only=True,
                                                  compile=False)
    except FmcConfigError as error:  # e.g. a network from a package not installed here
        raise FmcInputError(f"{path}: its network or loss is not available here: {error}; "
                            "install the package that provides it") from None
    except Exception as error:  # noqa: BLE001 - any failure means "not a usable checkpoint"
        raise FmcInputError(f"{path}: {describe_load_error(error)}") from None
    first = next(iter(model.net.parameters()))
    if first.ndim == 5 and first.shape[1] != len(model.hparams.channels):
        raise FmcInputError(f"{path}: the network takes {first.shape[1]} input channels but the "
                            f"checkpoint lists {len(model.hparams.channels)} "
                            f"({', '.join(model.hparams.channels)})")
    return model.eval()


def _ints(value) -> tuple[int, ...]:
    return tuple(int(v) for v in value)


def _ints_or_none(value) -> tuple[int, ...] | None:
    return None if value is None else _ints(value)


def _strict(value, kind: type):
    """``value`` if it already is a ``kind`` (YAML's true/false, a whole number): Python's
    ``bool("maybe")`` is True and ``int(1.5)`` is 1, which would take a typo for a setting."""
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise ValueError(value)


def _axes(value) -> tuple[str, ...]:
    return tuple(str(a) for a in (value or ()))


def _key(parse, expected: str):
    """A settings field without a default (conf/inference/default.yaml holds it): how to read
    the config's value, and what to ask for when that fails."""
    return field(metadata={"parse": parse, "expected": expected})


@dataclass(frozen=True)
class PredictSettings:
    """How to predict: the keys of ``conf/inference/default.yaml``, the one home of their defaults.

    Build it with :func:`settings_from` (a composed fmc.predict or fmc.challenge config) or
    :func:`default_settings` (that file's values, some changed); fields have no defaults here so
    that no default is stated twice.

    Attributes
    ----------
    patch : tuple of 3 ints or None
        Tile (ZYX); None takes the checkpoint's training patch.
    overlap : float
        Fraction of a tile shared with its neighbours.
    batch_size : int
        Tiles per forward pass (halved, down to 1, when a GPU runs out of memory).
    weighting : str
        ``gaussian``, ``constant`` or ``roof`` (RWTH-GE's window, with ``roof_crop``).
    roof_crop : tuple of 3 ints
        With ``weighting='roof'``: voxels zeroed at each tile face.
    tta : tuple of str
        Axes ('z', 'y', 'x') whose flip combinations are averaged (test-time augmentation).
    fallback : str
        ``auto`` (the checkpoint's own), ``none``, ``difference`` or ``calibrated`` (blend toward
        the input, :mod:`fmc.models.fallback`).
    output_dtype : str
        ``float32`` (normalised intensities) or ``uint16`` (mapped back to the input's range).
    amp : str
        ``none``, ``bf16`` or ``fp16``: the network's precision on each tile (blending stays
        float32). ``none`` on the CPU; the GPU default awaits a GPU measurement.
    compile : bool
        Run the network through ``torch.compile`` (once per model; pays off over many tiles).
    output_format : str
        ``tiff`` (the input's name) or ``ome-zarr`` (``<name>.ome.zarr``: chunks written slab by
        slab, the voxel size in the NGFF metadata; the ``zarr`` extra).
    tiff_tiles : bool
        Write 128×128 TIFF tiles (the challenge template) instead of strips: ImageJ's own reader
        opens only untiled files, so predictions are untiled unless the challenge wants tiles.
    buffer_threshold_gb : float
        Above this size the fallback's second pass reads the prediction from a temporary file.
    progress : bool
        Progress bar over tiles.
    """

    patch: tuple[int, int, int] | None = _key(_ints_or_none, "[Z, Y, X] or null")
    overlap: float = _key(float, "a fraction")
    batch_size: int = _key(lambda v: _strict(v, int), "a whole number")
    weighting: str = _key(str, "a name")
    roof_crop: tuple[int, int, int] = _key(_ints, "[Z, Y, X] voxel counts")
    tta: tuple[str, ...] = _key(_axes, "a list of axes, e.g. [y, x]")
    fallback: str = _key(str, "a name")
    output_dtype: str = _key(str, "a name")
    tiff_tiles: bool = _key(lambda v: _strict(v, bool), "true or false")
    output_format: str = _key(str, "a name")
    amp: str = _key(str, "a name")
    compile: bool = _key(lambda v: _strict(v, bool), "true or false")
    buffer_threshold_gb: float = _key(float, "a number")
    progress: bool = _key(lambda v: _strict(v, bool), "true or false")

    def check(self) -> PredictSettings:
        """Raise :class:`FmcConfigError` naming the first invalid key (and its valid values)."""
        if self.patch is not None and (len(self.patch) != 3 or min(self.patch) < 1):
            raise FmcConfigError(f"patch={list(self.patch)}: give [Z, Y, X] positive sizes or null")
        if not 0 <= self.overlap < 1:
            raise FmcConfigError(f"overlap={self.overlap}: give a fraction in [0, 1)")
        if not self.buffer_threshold_gb >= 0:
            raise FmcConfigError(f"buffer_threshold_gb={self.buffer_threshold_gb}: give a size "
                                 "in GB >= 0")
        if self.batch_size < 1:
            raise FmcConfigError(f"batch_size={self.batch_size}: give at least 1")
        for key, value, choices in (("weighting", self.weighting, WEIGHTINGS),
                                    ("fallback", self.fallback, FALLBACK_CHOICES),
                                    ("output_dtype", self.output_dtype, OUTPUT_DTYPES),
                                    ("output_format", self.output_format, OUTPUT_FORMATS),
                                    ("amp", self.amp, AMP_CHOICES)):
            if value not in choices:
                raise FmcConfigError(f"{key}={value!r}: choose one of {', '.join(choices)}")
        try:
            flip_combinations(self.tta)
        except ValueError as error:  # its message names the key: "tta axis 'w': use z, y or x"
            raise FmcConfigError(str(error)) from None
        if len(self.roof_crop) != 3 or min(self.roof_crop) < 0:
            raise FmcConfigError(f"roof_crop={list(self.roof_crop)}: give 3 voxel counts >= 0")
        return self


def _tile_for(model, settings: PredictSettings) -> tuple[int, int, int]:
    from fmc.inference.precision import check_tile_fits

    try:
        patch = tuple(int(p) for p in (settings.patch or model.hparams.patch_size))
    except (TypeError, ValueError):
        patch = ()
    if len(patch) != 3 or min(patch) < 1:
        raise FmcConfigError(f"the checkpoint's patch_size {model.hparams.get('patch_size')!r} is "
                             "not 3 positive sizes: give patch=[Z, Y, X]")
    check_tile_fits(patch, len(model.hparams.channels), int(model.hparams.get("features") or 1),
                    settings.batch_size, next(model.parameters()).device)
    divisor = model.required_divisor  # a FusionModule's, or the largest of an ensemble's
    if any(p % divisor for p in patch):
        raise FmcConfigError(f"patch={list(patch)}: each side must be a multiple of {divisor} "
                             "(the network halves the tile that many times)")
    if settings.weighting == "roof" and any(2 * c >= p for c, p in
                                            zip(settings.roof_crop, patch, strict=True)):
        raise FmcConfigError(f"roof_crop={list(settings.roof_crop)}: each crop must be below half "
                             f"the tile {list(patch)}")
    return patch


def predict_file(model, source: str | Path, output: str | Path, settings: PredictSettings,
                 name: str | None = None) -> Path:
    """Predict one volume (TIFF or prepared H5) and write a TIFF with the input's name and metadata.

    Parameters
    ----------
    model : FusionModule or ModelEnsemble
        From :func:`load_model`, or several averaged (:func:`fmc.inference.ensemble.load_models`).
    source : path
        A TIFF view, or an fmc H5 file (its ``data/raw_image`` and stored channels are used).
    output : path
        Output folder (created).
    settings : PredictSettings
    name : str, optional
        Output file name (default: the input's TIFF name).

    Returns
    -------
    pathlib.Path
        The written file. It appears only when complete (temporary name, then rename).
    """
    source = Path(source)
    stamp = file_stamp(source)
    opened = open_volume(source)
    try:
        network_input = NetworkInput(opened, model.hparams.channels,
                                     model.hparams.get("channel_scales_um"),
                                     fallback_study=model.hparams.get("study"))
        _warn_on_mismatch(model, opened.meta, source)
        patch = _tile_for(model, settings)
        device = next(model.parameters()).device
        if settings.compile and not model.compiled:
            model.compile_network()
        slabs = iter_predicted_slabs(
            network_input, model, patch, overlap=settings.overlap,
            batch_size=settings.batch_size, weighting=settings.weighting,
            progress=settings.progress, device=device, tta_axes=settings.tta,
            roof_crop=settings.roof_crop, amp=settings.amp)
        output = Path(output)
        fallback = resolve_fallback(settings.fallback, model.hparams)
        if fallback != "none":
            slabs = _with_fallback(slabs, network_input, output, settings.buffer_threshold_gb,
                                   make_fallback(fallback, network_input.shape, model.hparams))
        target = output / output_name(safe_name(name or opened.output_name), settings.output_format)
        converted = (_convert(planes, settings.output_dtype, network_input)
                     for planes in _verified(slabs, source, stamp))
        meta = network_input.output_meta(settings.output_dtype)
        if settings.output_format == "ome-zarr":
            from fmc.io.zarr_volume import write_zarr_slabs

            return write_zarr_slabs(target, converted, network_input.shape, settings.output_dtype,
                                    meta)
        from fmc.io.tiff import write_volume_slabs

        return write_volume_slabs(target, converted, network_input.shape, settings.output_dtype,
                                  meta, tile=CHALLENGE_TILE if settings.tiff_tiles else None)
    finally:
        opened.close()


def output_name(name: str, output_format: str) -> str:
    """The prediction's file name: the input's TIFF name, or ``<stem>.ome.zarr``."""
    return f"{volume_stem(name)}.ome.zarr" if output_format == "ome-zarr" else name


def safe_name(name: str) -> str:
    """A bare file name: metadata or list entries must not steer a write outside the folder."""
    base = Path(str(name).replace("\\", "/")).name
    if base in ("", ".", "..") or base.startswith("."):
        raise FmcInputError(f"output name {name!r} is not a plain file name")
    return base


def _warn_on_mismatch(model, meta, source: Path) -> None:
    trained = model.hparams.get("content")
    if meta.content and trained and meta.content != trained:
        log.warning("%s: a %s volume predicted with a model trained on %s", source, meta.content,
                    trained)


def _with_fallback(slabs: Iterator[tuple[int, np.ndarray]], network_input: NetworkInput,
                   folder: Path, threshold_gb: float, weighting) -> Iterator[tuple[int, np.ndarray]]:
    """Two passes: record the change while predicting, then blend toward the input."""
    shape = network_input.shape
    folder.mkdir(parents=True, exist_ok=True)
    with PlaneBuffer(shape, threshold_gb * 1e9, folder) as buffer:
        for z0, planes in slabs:
            buffer.write(z0, planes)
            weighting.add(z0, network_input.raw(z0, z0 + planes.shape[0]), planes)
        weighting.finish()
        step = 16
        for z0 in range(0, shape[0], step):
            z1 = min(z0 + step, shape[0])
            yield z0, weighting.blend(z0, network_input.raw(z0, z1), buffer.read(z0, z1))


def _verified(slabs: Iterator[tuple[int, np.ndarray]], source: Path, stamp) -> Iterator[np.ndarray]:
    """The slabs' planes, refused at the first NaN or infinity (before uint16 would hide it),
    and, after the last, if the input changed while it was read: before the output's rename."""
    for z0, planes in slabs:
        if not np.isfinite(planes).all():
            raise FmcInputError(f"{source}: the prediction holds NaN or infinite values (planes "
                                f"{z0}-{z0 + planes.shape[0] - 1}); nothing written for it")
        yield planes
    check_unchanged(source, stamp)


def _convert(planes: np.ndarray, dtype: str, network_input: NetworkInput) -> np.ndarray:
    """float32 as predicted, or uint16 on the input's intensity scale (rounded, clipped)."""
    if dtype == "float32":
        return planes.astype(np.float32, copy=False)
    stats = network_input.intensity_stats
    if stats is None:
        raise FmcInputError(f"{network_input.opened.output_name}: output_dtype=uint16 needs the "
                            "input's intensity percentiles, which this file does not store")
    result = np.empty(planes.shape, np.uint16)
    for z in range(planes.shape[0]):  # plane by plane: a float64 slab would double the memory
        values = planes[z].astype(np.float64) * stats.scale + stats.offset
        result[z] = np.clip(np.rint(values), 0, 65535)
    return result


def device_for(choice: str) -> str:
    """'auto' → cuda when available, else cpu."""
    if choice not in ("auto", "cpu") and not choice.startswith("cuda"):
        raise FmcConfigError(f"device={choice}: choose auto, cpu or cuda (cuda:N for one GPU)")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise FmcConfigError(f"device={choice}: no CUDA device here; use device=cpu or auto")
    return choice


def settings_from(cfg) -> PredictSettings:
    """:class:`PredictSettings` from a config holding every key of ``conf/inference/default.yaml``
    (fmc.predict's and fmc.challenge's configs include it), checked.

    Raises
    ------
    FmcConfigError
        Naming the first key that is missing, unreadable or invalid.
    """
    values = {}
    for key in fields(PredictSettings):
        if key.name not in cfg:
            raise FmcConfigError(f"{key.name}: missing (its default is in {INFERENCE_DEFAULTS})")
        try:
            values[key.name] = key.metadata["parse"](cfg[key.name])
        except (TypeError, ValueError):
            raise FmcConfigError(f"{key.name}={cfg[key.name]!r}: give {key.metadata['expected']}"
                                 ) from None
    return PredictSettings(**values).check()


def default_settings(**changes) -> PredictSettings:
    """The settings of ``conf/inference/default.yaml`` with ``changes`` (field: value), checked.

    For code that predicts without a composed config (benchmarks, tests).
    """
    from omegaconf import OmegaConf

    return replace(settings_from(OmegaConf.load(INFERENCE_DEFAULTS)), **changes).check()
