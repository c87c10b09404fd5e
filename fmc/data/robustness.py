"""Intensity and optics augmentations of the input view, for studies a model has never seen.

Studies differ in camera, exposure, labelling, sheet thickness and turbidity. A network that saw
only a few studies learns their particular brightness curve, noise level and blur; on a new
microscope it is then out of its depth. These augmentations change the **input view only** (the
raw-image channel; the target and the geometric channels stay): the network learns to map a
range of plausible acquisitions of the same specimen onto the same fusion.

Each kind is a strength in ``data.robustness`` (0 = off) and is applied to a training patch with
probability ``data.robustness.probability``, independently of the others:

* ``gamma`` a: intensities ``x -> x**g`` (positive part) with ``log g`` uniform in [-a, a]
  (camera response, labelling density);
* ``contrast`` c: ``x -> (1 + u) x + v`` with u uniform in [-c, c] and v in [-c/10, c/10]
  (another normalisation, background or bleaching level);
* ``noise`` n: Gaussian noise of σ = s·sqrt(max(x, 0) + 0.01), s uniform in [0, n] (shot noise of
  a shorter exposure; the normalised intensities are about 0-1);
* ``blur`` b: Gaussian blur, σ along Z and σ across YX drawn apart, each uniform in [0, b]
  voxels (a thicker sheet blurs along Z, a weaker objective across YX);
* ``attenuation`` a: the patch dims along a random axis and direction as exp(-u t), t in [0, 1]
  across the patch, u uniform in [0, a] (another depth of tissue in front of it).

One geometric kind changes the view **and** the target alike (and the geometric channels), since
it changes the sampling, not the acquisition:

* ``anisotropy`` a: the Z step is multiplied by 2**u, u uniform in [-a, a] (another plane
  spacing; studies' Z steps differ 1-3 µm at 0.2-0.4 µm lateral pixels): a patch of
  ``round(Z * 2**u)`` planes is read, smoothed along Z when it is thinned (anti-aliasing) and
  resampled linearly to Z planes (:func:`resample_z`).

The draws come from the sample's own generator (:meth:`fmc.data.dataset.PatchDataset.generator`), so
a run stays reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage

from fmc.core.errors import FmcConfigError

KINDS = ("gamma", "contrast", "noise", "blur", "attenuation")
GEOMETRIC_KINDS = ("anisotropy",)


@dataclass(frozen=True)
class RobustnessAugment:
    """Strengths of the input augmentations (0 = off) and the probability of each."""

    probability: float = 0.5
    gamma: float = 0.0
    contrast: float = 0.0
    noise: float = 0.0
    blur: float = 0.0
    attenuation: float = 0.0
    anisotropy: float = 0.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> RobustnessAugment:
        """Build from ``data.robustness``; unknown keys or negative strengths are config errors."""
        values = dict(values or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise FmcConfigError(f"data.robustness: unknown key(s) {unknown}; valid keys are "
                                 f"{', '.join(names)}")
        try:
            made = cls(**{k: float(v) for k, v in values.items()})
        except (TypeError, ValueError):
            raise FmcConfigError(f"data.robustness: every value must be a number, got "
                                 f"{values}") from None
        if not 0.0 <= made.probability <= 1.0:
            raise FmcConfigError(f"data.robustness.probability={made.probability}: give a "
                                 "value in [0, 1]")
        negative = [k for k in (*KINDS, *GEOMETRIC_KINDS) if getattr(made, k) < 0]
        if negative:
            raise FmcConfigError(f"data.robustness.{negative[0]}={getattr(made, negative[0])}: "
                                 "strengths are >= 0 (0 = off)")
        return made

    @property
    def enabled(self) -> bool:
        """True when any kind has a positive strength and the probability is positive."""
        return self.probability > 0 and any(getattr(self, k) > 0
                                            for k in (*KINDS, *GEOMETRIC_KINDS))

    def z_step_factor(self, rng: np.random.Generator) -> float:
        """The factor of the Z step for one patch (1.0: unchanged; no draw when off, so the
        patches of a run without it are those of a run without any augmentation)."""
        if self.anisotropy <= 0:
            return 1.0
        chosen = rng.random() < self.probability
        exponent = rng.uniform(-1.0, 1.0)
        if not chosen:
            return 1.0
        return float(2.0 ** (exponent * self.anisotropy))

    def apply(self, view: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one ZYX input patch (float32); returns a new array (``view`` is not changed)."""
        out = np.array(view, dtype=np.float32)
        # One draw per kind whether it is on or not: turning one kind on does not change which
        # patches the others touch.
        chosen = {kind: rng.random() < self.probability for kind in KINDS}
        if chosen["blur"] and self.blur > 0:
            axial, lateral = rng.uniform(0, self.blur, size=2)
            out = ndimage.gaussian_filter(out, (axial, lateral, lateral), mode="reflect")
        if chosen["attenuation"] and self.attenuation > 0:
            axis = int(rng.integers(3))
            ramp = np.linspace(0.0, 1.0, out.shape[axis], dtype=np.float32)
            if rng.random() < 0.5:
                ramp = ramp[::-1]
            shape = [1, 1, 1]
            shape[axis] = out.shape[axis]
            out *= np.exp(-rng.uniform(0, self.attenuation) * ramp).reshape(shape)
        if chosen["gamma"] and self.gamma > 0:
            exponent = float(np.exp(rng.uniform(-self.gamma, self.gamma)))
            positive = out > 0
            out[positive] = out[positive] ** exponent
        if chosen["contrast"] and self.contrast > 0:
            scale = 1.0 + rng.uniform(-self.contrast, self.contrast)
            out = out * scale + rng.uniform(-self.contrast, self.contrast) / 10
        if chosen["noise"] and self.noise > 0:
            sigma = rng.uniform(0, self.noise) * np.sqrt(np.maximum(out, 0) + 0.01)
            out = out + sigma * rng.standard_normal(out.shape, dtype=np.float32)
        return out.astype(np.float32, copy=False)


def resample_z(array: np.ndarray, planes: int) -> np.ndarray:
    """Resample the Z axis (third from last) of ``array`` to ``planes`` planes, linearly.

    Cell-centred sampling (both ends map to the ends' voxel centres' footprint); when planes are
    thinned the array is first smoothed along Z (σ = half the step ratio) against aliasing.
    """
    current = array.shape[-3]
    if current == planes:
        return array
    ratio = current / planes
    values = np.asarray(array, np.float32)
    if ratio > 1:
        values = ndimage.gaussian_filter1d(values, sigma=0.5 * ratio, axis=-3, mode="reflect")
    positions = (np.arange(planes, dtype=np.float64) + 0.5) * ratio - 0.5
    positions = np.clip(positions, 0, current - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, current - 1)
    weight = (positions - low).astype(np.float32).reshape(-1, 1, 1)
    low_planes = np.take(values, low, axis=-3)
    high_planes = np.take(values, high, axis=-3)
    return (low_planes + weight * (high_planes - low_planes)).astype(np.float32)
