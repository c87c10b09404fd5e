"""Per-study facts of the Fuse My Cells data: voxel spacing, typical size, degradation axes.

Source: docs/references.md §2 (reconstructed by peers from the challenge
data: stegmaierj ``fmc_guess_dataset`` for sizes and spacings, ``get_fmc_gradient_info`` for the
axes along which one view degrades). Importable without Hydra: prepare, train and synth share it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmc.core.errors import FmcConfigError

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


# Demo shapes keep the ZYX aspect (in µm) of the typical recording at about a third to half of its
# extent; a full-size recording shrunk to ~128 pixels would need a Z step above 5 µm: cells of
# 5-15 µm would then span one or two planes.
# Per-study specimen and optics of the synthetic data, inside the ranges of docs/references.md
# §6.3 (1/e attenuation at 50-150 µm, sheet FWHM 2-6 µm, depth broadening ℓ 50-100 µm, cells
# 5-15 µm) and spread across them: which organism and microscope each real study used is not
# published, so these are invented, chosen to differ as much as real studies plausibly do.
# Study 1 keeps the generator's defaults.
STUDIES: dict[int, StudyProfile] = {
    1: StudyProfile(1, (1.0, 0.195, 0.195), (222, 731, 860), ("Z",), ("nucleus", "membrane"),
                    (40, 112, 128), 3.0),
    # A clear specimen of large cells, a thin sheet, a bright long exposure.
    2: StudyProfile(2, (1.0, 0.195, 0.195), (264, 2008, 1091), ("Z",), ("nucleus",),
                    (40, 128, 72), 3.0,
                    synthetic_specimen={"cell_diameter_um": (9.0, 14.0)},
                    synthetic_optics={"attenuation_length_um": 130.0, "psf_sigma_um": (1.0, 0.2),
                                      "blur_growth_um": 90.0, "haze_fraction": 0.25,
                                      "photons": 120.0}),
    # A turbid specimen of small dense cells, a thicker sheet, dim: a strong depth gradient.
    3: StudyProfile(3, (1.0, 0.39, 0.39), (891, 817, 817), ("X", "Y", "Z"),
                    ("nucleus", "membrane"), (48, 112, 112), 3.0,
                    synthetic_specimen={"cell_diameter_um": (5.0, 8.0),
                                        "nucleus_to_cell": (0.55, 0.75)},
                    synthetic_optics={"attenuation_length_um": 50.0, "psf_sigma_um": (1.8, 0.3),
                                      "blur_growth_um": 50.0, "haze_fraction": 0.45,
                                      "photons": 35.0}),
    # Thick sheet (FWHM ~6 µm) with 3 µm planes, fairly clear tissue, another camera (offset, gain).
    4: StudyProfile(4, (3.0, 0.33, 0.33), (80, 1920, 1920), ("X",), ("nucleus",),
                    (24, 128, 128), 2.0,
                    synthetic_specimen={"cell_diameter_um": (8.0, 13.0)},
                    synthetic_optics={"attenuation_length_um": 90.0, "psf_sigma_um": (2.5, 0.25),
                                      "blur_growth_um": 80.0, "photons": 200.0,
                                      "read_noise_e": 3.0, "offset_adu": 400.0,
                                      "gain_adu_per_e": 2.0}),
    # Fast, low-light imaging: few photons, a wider lateral PSF, moderate turbidity.
    5: StudyProfile(5, (1.01, 0.388, 0.388), (309, 1920, 1920), ("X",), ("nucleus",),
                    (40, 128, 128), 3.0,
                    synthetic_specimen={"cell_diameter_um": (6.0, 10.0)},
                    synthetic_optics={"attenuation_length_um": 65.0, "psf_sigma_um": (1.5, 0.35),
                                      "blur_growth_um": 70.0, "haze_fraction": 0.4,
                                      "photons": 25.0, "background_photons": 4.0}),
}


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
