"""Per-study facts of the Fuse My Cells data: voxel spacing, typical size, degradation axes.

The facts live in YAML, one file per study (``conf/studies/study<N>.yaml``; sources:
docs/references.md §2, reconstructed by peers from the challenge data: stegmaierj
``fmc_guess_dataset`` for sizes and spacings, ``get_fmc_gradient_info`` for the axes along which
one view degrades). Hydra shows them (``study_facts``) and the code that runs without Hydra
(synth, prepare, registry, challenge) reads them here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmc.core.errors import FmcConfigError
from fmc.core.locations import config_dir

AXIS_NAMES = ("Z", "Y", "X")
CONTENTS = ("nucleus", "membrane")
# Spellings met in the wild for the two contents; the challenge writes 'nucleus' / 'membrane'.
_CONTENT_ALIASES = {"nucleus": "nucleus", "nuclei": "nucleus", "nuclear": "nucleus",
                    "membrane": "membrane", "membranes": "membrane", "cell": "membrane"}


@dataclass(frozen=True)
class StudyProfile:
    """What fmc knows of one study.

    Attributes
    ----------
    study : int
        Study number (1-5).
    spacing_zyx : tuple of 3 floats
        Native voxel size in µm, ZYX.
    typical_shape : tuple of 3 ints
        Typical ZYX size of a recording, in voxels.
    degradation_axes : tuple of str
        Axes ('Z', 'Y', 'X') along which a single view gets worse with depth.
    real_contents : tuple of str
        Contents present in the challenge data (membrane only for studies 1 and 3).
    demo_shape : tuple of 3 ints
        Small ZYX shape for demos and tests (~40 × 128 × 128), with the typical recording's
        aspect in µm.
    demo_scale : float
        Factor applied to ``spacing_zyx`` at ``demo_shape``: coarser voxels, so that a demo volume
        still holds a whole (small) embryo-like specimen with cells of realistic size in µm. The
        same factor on every axis keeps the study's anisotropy; it stays small enough (Z step
        <= 6 µm) that a cell still spans a few planes.
    synthetic_specimen, synthetic_optics : dict
        The study's own synthetic specimen and microscope: fields of
        :class:`fmc.simulation.specimen.SpecimenParams` and
        :class:`fmc.simulation.lightsheet.OpticsParams` that
        differ from their defaults. Real studies differ in organism (cell size, density,
        turbidity) and in microscope (sheet thickness, objective, camera, exposure), so a model
        that never saw a study meets a real domain shift (docs/synthetic.md, "Studies differ").
    embedded : bool
        One of the studies of the embedded synthetic dataset (the five challenge studies).
    """

    study: int
    spacing_zyx: tuple[float, float, float]
    typical_shape: tuple[int, int, int]
    degradation_axes: tuple[str, ...]
    real_contents: tuple[str, ...]
    demo_shape: tuple[int, int, int]
    demo_scale: float
    synthetic_specimen: dict[str, Any] = field(default_factory=dict)
    synthetic_optics: dict[str, Any] = field(default_factory=dict)
    embedded: bool = False

    @property
    def specimen_extent_um(self) -> tuple[float, float, float]:
        """ZYX extent (µm) of the study's synthetic specimen: its demo volume's field of view.

        A smaller synthetic volume sees the middle of a specimen this large
        (:func:`fmc.simulation.synth.simulation_box`), as a small recording of a real embryo would.
        """
        return tuple(n * s * self.demo_scale for n, s in zip(self.demo_shape, self.spacing_zyx,
                                                              strict=True))

    @property
    def anisotropy(self) -> float:
        """Z spacing over the lateral spacing."""
        return self.spacing_zyx[0] / self.spacing_zyx[2]

    @property
    def degradation_axis_indices(self) -> tuple[int, ...]:
        """Degradation axes as array axis indices (Z=0, Y=1, X=2)."""
        return tuple(AXIS_NAMES.index(a) for a in self.degradation_axes)


# The studies fmc knows: one YAML file each, conf/studies/study<N>.yaml (the ones fmc ships), plus
# the studies/ of every config folder named by FMC_CONFIG_DIRS (os.pathsep-separated; fmc.train
# adds those folders to Hydra's search path): a new study is one file. Each file is a Hydra
# config of the group `studies` whose package is study_facts.study<N> (its first line says so),
# so that fmc.train's config shows the facts (fmc.training.profile.with_study_facts).
CONFIG_ROOT = config_dir()
STUDY_DIR = CONFIG_ROOT / "studies"
CONFIG_DIRS_ENV = "FMC_CONFIG_DIRS"
_FIELDS = ("study", "spacing_zyx", "typical_shape", "degradation_axes", "real_contents",
           "demo_shape", "demo_scale")
_OPTIONAL = ("embedded", "synthetic_specimen", "synthetic_optics")


def _tuples(value: Any) -> Any:
    """YAML lists as tuples, recursively (the profiles are frozen)."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def read_study_file(path: Path) -> StudyProfile:
    """One ``study<N>.yaml`` as a :class:`StudyProfile`.

    Raises
    ------
    FmcConfigError
        Naming the file and the key, for a missing or malformed key.
    """
    import yaml

    try:
        text = Path(path).read_text()
        facts = yaml.safe_load(text) or {}
    except OSError as error:
        raise FmcConfigError(f"{path}: cannot read the study file ({error.strerror or error})"
                             ) from None
    except yaml.YAMLError as error:  # tags such as !!python/... included: plain data only
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise FmcConfigError(f"{path}: not a plain YAML study file ({problem}{where})") from None
    if not isinstance(facts, dict):
        raise FmcConfigError(f"{path}: not a mapping of study facts")
    missing = [key for key in _FIELDS if key not in facts]
    unknown = sorted(set(facts) - set(_FIELDS) - set(_OPTIONAL))
    if missing or unknown:
        raise FmcConfigError(f"{path}: " + (f"missing {', '.join(missing)}" if missing else
                                            f"unknown key {unknown[0]}") +
                             f"; a study file holds {', '.join(_FIELDS)} and optionally "
                             f"{', '.join(_OPTIONAL)}")
    header = f"# @package study_facts.study{facts['study']}"
    if text.splitlines()[0].strip() != header:
        raise FmcConfigError(f"{path}: its first line must be '{header}' (the Hydra package "
                             "that shows the facts in fmc.train's config)")
    try:
        profile = StudyProfile(
            study=int(facts["study"]),
            spacing_zyx=tuple(float(s) for s in facts["spacing_zyx"]),
            typical_shape=tuple(int(n) for n in facts["typical_shape"]),
            degradation_axes=tuple(str(a).upper() for a in facts["degradation_axes"]),
            real_contents=tuple(str(c) for c in facts["real_contents"]),
            demo_shape=tuple(int(n) for n in facts["demo_shape"]),
            demo_scale=float(facts["demo_scale"]),
            synthetic_specimen=_tuples(facts.get("synthetic_specimen") or {}),
            synthetic_optics=_tuples(facts.get("synthetic_optics") or {}),
            embedded=bool(facts.get("embedded", False)))
    except (TypeError, ValueError) as error:
        raise FmcConfigError(f"{path}: {error}") from None
    if len(profile.spacing_zyx) != 3 or len(profile.typical_shape) != 3 or \
            len(profile.demo_shape) != 3:
        raise FmcConfigError(f"{path}: spacing_zyx, typical_shape and demo_shape need 3 values "
                             "(Z, Y, X)")
    if not set(profile.degradation_axes) <= set(AXIS_NAMES) or \
            not set(profile.real_contents) <= set(CONTENTS):
        raise FmcConfigError(f"{path}: degradation_axes from {', '.join(AXIS_NAMES)}, "
                             f"real_contents from {', '.join(CONTENTS)}")
    return profile


def extra_config_dirs() -> list[Path]:
    """The config folders named by ``FMC_CONFIG_DIRS`` (their ``studies/`` add studies)."""
    return [Path(p) for p in os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if p]


def study_folders() -> list[Path]:
    """conf/studies, then ``studies/`` of each folder named by ``FMC_CONFIG_DIRS``."""
    return [STUDY_DIR, *(folder / "studies" for folder in extra_config_dirs())]


def load_studies(folders: list[Path] | None = None) -> dict[int, StudyProfile]:
    """Every ``study<N>.yaml`` of ``folders`` (default :func:`study_folders`), by study number."""
    studies: dict[int, StudyProfile] = {}
    files: dict[int, Path] = {}
    for folder in folders if folders is not None else study_folders():
        for path in sorted(Path(folder).glob("study*.yaml")):
            profile = read_study_file(path)
            if path.stem != f"study{profile.study}":
                raise FmcConfigError(f"{path}: holds study {profile.study}; name it "
                                     f"study{profile.study}.yaml")
            if profile.study in files:
                # Hydra would show the first file and fmc would use the second: one file each.
                raise FmcConfigError(f"{path}: study {profile.study} is already defined by "
                                     f"{files[profile.study]}; give the new study another number")
            studies[profile.study], files[profile.study] = profile, path
    return dict(sorted(studies.items()))


def _load_or_defer() -> tuple[dict[int, StudyProfile], FmcConfigError | None]:
    """The studies at import time; a broken study file under ``FMC_CONFIG_DIRS`` is kept as an
    error for :func:`check_study_files` (an import cannot print fmc's one-line message) and
    the shipped studies are used meanwhile."""
    try:
        return load_studies(), None
    except FmcConfigError as error:
        return load_studies([STUDY_DIR]), error


def check_study_files() -> None:
    """Raise the error of a study file that could not be read at import (see above)."""
    if STUDY_FILE_ERROR is not None:
        raise STUDY_FILE_ERROR


STUDIES, STUDY_FILE_ERROR = _load_or_defer()
# The studies of the embedded synthetic dataset (``embedded: true``), whatever else is added.
EMBEDDED_STUDIES: tuple[int, ...] = tuple(n for n, p in STUDIES.items() if p.embedded)


def get_profile(study: int | str) -> StudyProfile:
    """Return the profile of ``study`` or raise a :class:`FmcConfigError` listing valid values."""
    try:
        number = int(study)
    except (TypeError, ValueError):
        number = None
    if number not in STUDIES:
        raise FmcConfigError(f"unknown study {study!r}: valid studies are "
                             f"{', '.join(str(s) for s in STUDIES)}")
    return STUDIES[number]


def check_content(content: str) -> str:
    """Return ``content`` if it is 'nucleus' or 'membrane', else raise listing the valid values."""
    if content not in CONTENTS:
        raise FmcConfigError(f"unknown content {content!r}: valid contents are "
                             f"{', '.join(CONTENTS)}")
    return content


def parse_study(value: Any) -> int | None:
    """Return the study number in ``value`` (int, '3', '3.0', 'study3'), or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    match = re.fullmatch(r"\s*(?:study[_ ]?)?(\d+)(?:\.0*)?\s*", str(value), flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def parse_content(value: Any) -> str | None:
    """Return 'nucleus' or 'membrane' for a ``channel`` value (case-insensitive), else None."""
    if value is None:
        return None
    return _CONTENT_ALIASES.get(str(value).strip().lower())
