"""How to predict: the sliding-window settings of ``fmc.predict`` and ``fmc.challenge``
(:class:`PredictSettings`), read once from the composed config, and the device to run on.

Their defaults live in ``conf/inference/default.yaml`` only; :func:`default_settings` reads that
file for code that predicts without a composed config (training's whole-volume validation,
calibration, benchmarks, tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from fmc.core.cli import CONFIG_DIR
from fmc.core.errors import FmcConfigError
from fmc.inference.output_formats import OUTPUT_FORMATS
from fmc.inference.precision import AMP_CHOICES
from fmc.inference.tile_weights import WEIGHTINGS
from fmc.inference.tiling import flip_combinations
from fmc.models.fallback import fallback_choices

OUTPUT_DTYPES = ("float32", "uint16")
# The defaults of PredictSettings (and of the commands' sliding-window keys).
INFERENCE_DEFAULTS = Path(CONFIG_DIR) / "inference" / "default.yaml"


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


def _axes_or_auto(value) -> tuple[str, ...] | None:
    return None if value == "auto" else _axes(value)


def resolve_tta(choice: tuple[str, ...] | None, hparams) -> tuple[str, ...]:
    """The flip axes to average: ``choice``, or with ``tta: auto`` (None) the checkpoint's own
    ``model.tta`` (none for a checkpoint from before that key)."""
    if choice is not None:
        return tuple(choice)
    return _axes(hparams.get("tta"))


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
    tta : tuple of str or None
        Axes ('z', 'y', 'x') whose flip combinations are averaged (test-time augmentation);
        None (``tta: auto``) takes the checkpoint's ``model.tta`` (:func:`resolve_tta`).
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
    tta: tuple[str, ...] | None = _key(_axes_or_auto, "auto or a list of axes, e.g. [y, x]")
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
                                    ("fallback", self.fallback, fallback_choices()),
                                    ("output_dtype", self.output_dtype, OUTPUT_DTYPES),
                                    ("output_format", self.output_format, OUTPUT_FORMATS),
                                    ("amp", self.amp, AMP_CHOICES)):
            if value not in choices:
                raise FmcConfigError(f"{key}={value!r}: choose one of {', '.join(choices)}")
        try:
            flip_combinations(self.tta or ())
        except ValueError as error:  # its message names the key: "tta axis 'w': use z, y or x"
            raise FmcConfigError(str(error)) from None
        if len(self.roof_crop) != 3 or min(self.roof_crop) < 0:
            raise FmcConfigError(f"roof_crop={list(self.roof_crop)}: give 3 voxel counts >= 0")
        return self


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


def device_for(choice: str) -> str:
    """'auto' → cuda when available, else cpu."""
    if choice not in ("auto", "cpu") and not choice.startswith("cuda"):
        raise FmcConfigError(f"device={choice}: choose auto, cpu or cuda (cuda:N for one GPU)")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise FmcConfigError(f"device={choice}: no CUDA device here; use device=cpu or auto")
    return choice
