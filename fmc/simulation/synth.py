"""Synthetic (single view, fused) pairs in the challenge's layout: ``python -m fmc.synth``.

Writes ``image_<i>_<content>_angle.tif`` (one simulated light-sheet view) and
``image_<i>_<content>_fused.tif`` (a multi-view fusion containing that view) with the challenge's
metadata keys, through :mod:`fmc.io.tiff`. The physics live in
:mod:`fmc.simulation.lightsheet`, the specimen in
:mod:`fmc.simulation.specimen`, the per-study facts in :mod:`fmc.core.studies`; see docs/synthetic.md.

The command's settings and its loop over pairs are in :mod:`fmc.simulation.synth_command`.

Examples
--------
``python -m fmc.synth output=data/mine study=3 content=membrane n=4 shape=[64,160,160] seed=1``
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from fmc.core.errors import FmcConfigError
from fmc.core.locations import embedded_tiff_dir
from fmc.core.logs import paced, plural
from fmc.core.naming import pair_file_names
from fmc.core.studies import CONTENTS, EMBEDDED_STUDIES, check_content, get_profile
from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import write_volume
from fmc.simulation.lightsheet import FusionParams, OpticsParams, blend_coordinate, simulate_pair, view_weight
from fmc.simulation.specimen import SpecimenParams, render_specimen

log = logging.getLogger("fmc.synth")

# 4 pairs per study/content: enough for a train/val/test split per study (2/1/1).
DEFAULT_IMAGES_PER_COMBO = 4
TARGETS = ("fusion", "clean")
# Bumped when the generator's output changes: an embedded dataset of another version is rebuilt.
# 2: studies differ in specimen and optics (StudyProfile.synthetic_*).
GENERATOR_VERSION = 2
VERSION_FILE = "GENERATOR_VERSION"
FIELDS_OF_VIEW = ("inside", "fill")


@dataclasses.dataclass(frozen=True)
class SynthSettings:
    """Everything that defines a synthetic pair besides its study, content and index."""

    # None: the study's own specimen and microscope (StudyProfile.synthetic_specimen/_optics);
    # a full parameter set replaces them.
    specimen: SpecimenParams | None = None
    optics: OpticsParams | None = None
    fusion: FusionParams = FusionParams()
    target: str = "fusion"
    # "inside": a volume smaller than the study's specimen (StudyProfile.specimen_extent_um) is
    # the middle of one (simulated whole, then cropped); "fill": the specimen fills the volume
    # whatever its size. Filled tiny volumes held a cell or two, whose brightest voxels alone
    # set the percentile normalisation: a blur then gained up to +0.23 N_SSIM on one pair,
    # where on real recordings it gains about nothing (docs/synthetic.md).
    field_of_view: str = "inside"


def study_params(study: int, specimen_overrides: dict | None = None,
                 optics_overrides: dict | None = None) -> tuple[SpecimenParams, OpticsParams]:
    """The study's synthetic specimen and optics, with ``*_overrides`` applied on top."""
    profile = get_profile(study)
    # Merged as mappings first: a key both in the study's values and the overrides is one value.
    specimen = dataclasses.replace(SpecimenParams(), **{**profile.synthetic_specimen,
                                                        **(specimen_overrides or {})})
    optics = dataclasses.replace(OpticsParams(), **{**profile.synthetic_optics,
                                                    **(optics_overrides or {})})
    return specimen, optics


def resolved_params(study: int, settings: SynthSettings) -> tuple[SpecimenParams, OpticsParams]:
    """Specimen and optics of ``settings``, the study's own where they are None."""
    specimen, optics = study_params(study)
    return settings.specimen or specimen, settings.optics or optics


def pair_rng(seed: int, study: int, content: str, index: int) -> np.random.Generator:
    """The one generator of an image, derived from (seed, study, content, index).

    Pairs are independent of each other and of the order in which they are made, so a file can
    be regenerated alone and still be byte-identical.
    """
    return np.random.default_rng(np.random.SeedSequence(
        [int(seed), int(study), CONTENTS.index(content), int(index)]))


def resolve_geometry(study: int, shape=None, scale=None) -> tuple[tuple, tuple]:
    """ZYX shape and spacing (µm) of a synthetic volume of ``study``.

    ``shape`` None gives the study's demo shape and, unless ``scale`` is given, its demo scale;
    an explicit shape is at the native spacing times ``scale`` (default 1).
    """
    profile = get_profile(study)
    if shape is None:
        shape = profile.demo_shape
        scale = profile.demo_scale if scale is None else scale
    else:
        scale = 1.0 if scale is None else scale
    try:
        shape = tuple(int(s) for s in shape)
        scale = float(scale)
    except (TypeError, ValueError):
        raise FmcConfigError(f"shape must be [Z,Y,X] integers and scale a number, got "
                             f"shape={shape!r} scale={scale!r}") from None
    if len(shape) != 3 or min(shape) < 1 or scale <= 0:
        raise FmcConfigError(f"shape must be three positive integers [Z,Y,X] and scale > 0, "
                             f"got shape={list(shape)} scale={scale}")
    spacing = tuple(round(s * scale, 6) for s in profile.spacing_zyx)
    return shape, spacing


def check_target(target: str) -> str:
    """``target`` if it is one of :data:`TARGETS`, else a one-line :class:`FmcConfigError`."""
    if target not in TARGETS:
        raise FmcConfigError(f"unknown target {target!r}: valid targets are {', '.join(TARGETS)}")
    return target


def check_field_of_view(field_of_view: str) -> str:
    """``field_of_view`` if it is one of :data:`FIELDS_OF_VIEW`, else a one-line error."""
    if field_of_view not in FIELDS_OF_VIEW:
        raise FmcConfigError(f"field_of_view={field_of_view!r}: choose one of "
                             f"{', '.join(FIELDS_OF_VIEW)}")
    return field_of_view


def simulation_box(study: int, shape, spacing, field_of_view: str = "inside"
                   ) -> tuple[tuple[int, int, int], tuple[slice, slice, slice]]:
    """The volume to simulate for a requested one, and where the requested one lies in it.

    With ``field_of_view="inside"`` every axis shorter (in µm) than the study's specimen
    extent is simulated at that extent and the requested volume is its centred crop; with
    ``"fill"`` (or a volume at least that large) the box is the volume itself.

    Returns
    -------
    (shape, crop)
        ZYX voxels to simulate, and the slices of the requested volume in them.
    """
    check_field_of_view(field_of_view)
    shape = tuple(int(n) for n in shape)
    if field_of_view == "fill":
        return shape, tuple(slice(0, n) for n in shape)
    extent = get_profile(study).specimen_extent_um
    box = tuple(max(n, int(np.ceil(e / s - 1e-6))) for n, e, s in zip(shape, extent, spacing,
                                                                        strict=True))
    crop = tuple(slice((b - n) // 2, (b - n) // 2 + n) for b, n in zip(box, shape, strict=True))
    return box, crop


def generate_pair(study: int, content: str, index: int = 0, shape=None, seed: int = 0,
                  scale=None, settings: SynthSettings | None = None):
    """Simulate one pair in memory.

    Returns
    -------
    view, target : numpy.ndarray
        uint16 ZYX volumes.
    meta : fmc.io.metadata.VolumeMeta
        Study, content and spacing to write with both.
    """
    settings = settings or SynthSettings()
    profile = get_profile(study)
    content = check_content(content)
    check_target(settings.target)
    shape, spacing = resolve_geometry(profile.study, shape, scale)
    box, crop = simulation_box(profile.study, shape, spacing, settings.field_of_view)
    rng = pair_rng(seed, profile.study, content, index)
    specimen_params, optics = resolved_params(profile.study, settings)
    specimen = render_specimen(box, spacing, content, rng, specimen_params)
    view, target = simulate_pair(specimen, spacing, profile.degradation_axis_indices, rng,
                                 optics, settings.fusion, settings.target)
    if box != shape:
        view, target = np.ascontiguousarray(view[crop]), np.ascontiguousarray(target[crop])
    meta = VolumeMeta(study=profile.study, content=content, spacing_zyx=spacing,
                      original={"synthetic": "fmc.synth", "seed": int(seed),
                                "target_mode": settings.target})
    return view, target, meta


def input_weight(study: int, content: str, index: int = 0, shape=None, seed: int = 0, scale=None,
                 settings: SynthSettings | None = None) -> np.ndarray:
    """The view's blending weight in the fused target of a pair (1: the target is the view).

    Re-renders the pair's specimen (cheap; no optics) in the same simulation box as
    :func:`generate_pair` and returns the weight over the requested volume, broadcastable to
    its shape.
    """
    settings = settings or SynthSettings()
    profile = get_profile(study)
    shape, spacing = resolve_geometry(profile.study, shape, scale)
    box, crop = simulation_box(profile.study, shape, spacing, settings.field_of_view)
    tissue = render_specimen(box, spacing, content, pair_rng(seed, profile.study, content, index),
                             resolved_params(profile.study, settings)[0]).tissue
    weight = view_weight(blend_coordinate(tissue, profile.degradation_axis_indices),
                         settings.fusion.blend_width)
    return np.broadcast_to(weight, box)[crop]


def pair_paths(out: Path, index: int, content: str) -> tuple[Path, Path]:
    """The challenge's names: ``image_<i>_<content>_angle.tif`` and ``..._fused.tif``."""
    angle, fused = pair_file_names(index, content)
    return Path(out) / angle, Path(out) / fused


def is_synthetic(path: Path) -> bool:
    """True when ``path`` is a volume fmc.synth wrote (``synthetic`` in its metadata)."""
    from fmc.io.tiff import TiffVolume

    try:
        with TiffVolume(path) as volume:
            return volume.meta.original.get("synthetic") == "fmc.synth"
    except Exception:  # noqa: BLE001 - unreadable or foreign: not fmc.synth's to replace
        return False


def write_pair(out: Path, study: int, content: str, index: int, **kwargs: Any):
    """Generate one pair and write it; returns the (angle, fused) paths."""
    view, target, meta = generate_pair(study, content, index, **kwargs)
    angle_path, fused_path = pair_paths(out, index, content)
    write_volume(angle_path, view, meta)
    write_volume(fused_path, target, meta)
    return angle_path, fused_path


def default_dataset_plan(images_per_combo: int = DEFAULT_IMAGES_PER_COMBO):
    """(study, content, index) of the embedded default dataset: every study × content."""
    plan = []
    for study in EMBEDDED_STUDIES:
        for content in CONTENTS:
            for _ in range(images_per_combo):
                plan.append((study, content, len(plan)))
    return plan


def ensure_default_dataset(root: Path | None = None,
                           images_per_combo: int = DEFAULT_IMAGES_PER_COMBO) -> Path:
    """Return the default synthetic dataset's folder, synthesizing it first if incomplete.

    The ten study/content combinations at their demo shapes, ``images_per_combo`` pairs each,
    with distinct indices, in one flat folder (by default
    :func:`fmc.core.locations.embedded_tiff_dir`: ``$FMC_DATA/synthetic``, the same folder
    whatever the current directory). Idempotent: returns at once when every file is there.
    """
    root = Path(root) if root is not None else embedded_tiff_dir()
    plan = default_dataset_plan(images_per_combo)
    wanted = {path for _, content, index in plan for path in pair_paths(root, index, content)}
    # Pairs of an older plan (another number of images per combination) would mix studies
    # under the same indices: this folder belongs to fmc, so they go.
    stale = [path for path in root.glob("image_*_*.tif") if path not in wanted] \
        if root.is_dir() else []
    if dataset_version(root) != GENERATOR_VERSION:  # an older generator made them: all go
        stale = sorted(root.glob("image_*_*.tif")) if root.is_dir() else []
    missing = [(s, c, i) for s, c, i in plan
               if not all(p.exists() and p not in stale for p in pair_paths(root, i, c))]
    if not missing and not stale:
        return root
    for path in stale:
        path.unlink()
    root.mkdir(parents=True, exist_ok=True)
    (root / VERSION_FILE).unlink(missing_ok=True)
    log.info("no data root given: synthesizing the default dataset into %s (%d pairs; "
             "FMC_DATA moves it)", root.absolute(), len(plan))
    started = time.perf_counter()
    for study, content, index in paced(missing, log, "synthesizing pairs"):
        write_pair(root, study, content, index)
    (root / VERSION_FILE).write_text(f"{GENERATOR_VERSION}\n")
    log.info("synthesized %s in %.0f s", plural(len(missing), "pair"), time.perf_counter() - started)
    return root


def dataset_version(root: Path) -> int | None:
    """The generator version that wrote the embedded dataset in ``root`` (None: unknown)."""
    try:
        return int((Path(root) / VERSION_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
