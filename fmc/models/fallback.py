"""Input fallback: blend the prediction toward the input where the network is not to be trusted.

Two mechanisms share the streaming form below:

* ``difference`` (:class:`DifferenceWeighting`): keep the input where the network changes little.
* ``calibrated`` (:class:`ChangeLimit`): limit the local change to the largest the network made
  on its own validation volumes (``change_limit``, measured at the end of training): on a study
  it never saw, a network that suddenly changes more than it ever did on data it knows is out
  of its depth, and there the output moves back toward the input.

Difference weighting:

N_SSIM's downside is unbounded: a prediction slightly worse than an already good input costs more
than a large gain elsewhere earns (docs/references.md §1.5). lWM's "difference weighting" (§3.1)
blends the prediction O with the normalised input I as ``O' = (1 - w)·I + w·O``, where ``w`` is the
normalised, smoothed magnitude of the change ``|I - O|``: the input passes through wherever the
network changed little. As in lWM, ``w`` is computed on a coarse grid (at most 128 nodes per axis),
max-filtered (9 nodes), Gaussian-smoothed (σ 3 nodes), mapped to [0, 1] between its 2nd and 98th
percentiles, and interpolated back to full resolution.

Streaming form: the change is accumulated slab by slab while the prediction is produced
(:meth:`DifferenceWeighting.add`), and the blend is applied in a second pass
(:meth:`DifferenceWeighting.blend`) over the prediction kept meanwhile
(:func:`fmc.inference.volume_prediction.predicted_slabs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from fmc.core.grids import reduce_axis, resize_linear_planes
from fmc.core.named_choices import Registry

# Coarse grid of the change map (nodes per axis at most), shared by both mechanisms.
COARSE_GRID = 128


class DifferenceWeighting:
    """lWM's difference weighting, accumulated over z-slabs.

    Parameters
    ----------
    shape : sequence of 3 ints
        The volume's ZYX shape.
    grid : int
        Nodes per axis of the coarse grid (fewer where the volume is smaller).
    max_size, sigma : float
        Max-filter size and Gaussian σ, in coarse nodes.
    percentiles : (float, float)
        The change is mapped to [0, 1] between these percentiles.
    """

    def __init__(self, shape: Sequence[int], grid: int = COARSE_GRID, max_size: int = 9,
                 sigma: float = 3.0,
                 percentiles: tuple[float, float] = (2.0, 98.0)):
        self.shape = tuple(int(n) for n in shape)
        self.coarse_shape = tuple(min(n, int(grid)) for n in self.shape)
        self.max_size = int(max_size)
        self.sigma = float(sigma)
        self.percentiles = percentiles
        self._lateral = np.zeros((self.shape[0], *self.coarse_shape[1:]), np.float32)
        self.weights: np.ndarray | None = None

    def add(self, z0: int, inputs: np.ndarray, prediction: np.ndarray) -> None:
        """Record ``|input - prediction|`` of planes ``z0:z0 + n`` (block means per plane)."""
        change = np.abs(np.asarray(inputs, np.float32) - np.asarray(prediction, np.float32))
        for axis in (1, 2):
            change = reduce_axis(change, axis, self.coarse_shape[axis])
        self._lateral[z0:z0 + change.shape[0]] = change

    def coarse_change(self) -> np.ndarray:
        """The mean ``|input - prediction|`` per coarse node (after every slab was added)."""
        return reduce_axis(self._lateral, 0, self.coarse_shape[0])

    def finish(self) -> np.ndarray:
        """Compute the coarse weights from everything added; returns them (also kept)."""
        coarse = self.coarse_change()
        coarse = ndimage.maximum_filter(coarse, size=self.max_size, mode="nearest")
        coarse = ndimage.gaussian_filter(coarse, self.sigma, mode="nearest")
        low, high = np.percentile(coarse, self.percentiles)
        if high > low:
            weights = np.clip((coarse - low) / (high - low), 0, 1)
        else:  # a uniform change (or none): trust the network everywhere alike
            weights = np.ones_like(coarse)
        self.weights = weights.astype(np.float32)
        return self.weights

    def blend(self, z0: int, inputs: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        """``(1 - w)·input + w·prediction`` for planes ``z0:z0 + n`` (after :meth:`finish`)."""
        if self.weights is None:
            raise RuntimeError("call finish() before blend()")
        weights = resize_linear_planes(self.weights, self.shape, z0, z0 + prediction.shape[0])
        inputs = np.asarray(inputs, np.float32)
        return inputs + weights * (np.asarray(prediction, np.float32) - inputs)


class ChangeLimit(DifferenceWeighting):
    """Limit the local change to what the network did on data it knows (``calibrated``).

    The change ``|input - prediction|`` is averaged per coarse node as in
    :class:`DifferenceWeighting`; where it exceeds ``limit`` the prediction is blended toward the
    input by ``limit / change``, so that no region changes more than ``limit`` (weights smoothed
    over ``sigma`` nodes to avoid seams). ``limit`` comes from :func:`calibrate_change_limit`.
    """

    def __init__(self, shape: Sequence[int], limit: float, grid: int = COARSE_GRID,
                 sigma: float = 1.0):
        super().__init__(shape, grid=grid, sigma=sigma)
        if not limit > 0:
            raise ValueError(f"change limit must be > 0, got {limit}")
        self.limit = float(limit)

    def finish(self) -> np.ndarray:
        coarse = self.coarse_change()
        weights = np.minimum(1.0, self.limit / np.maximum(coarse, 1e-12))
        weights = ndimage.gaussian_filter(weights, self.sigma, mode="nearest")
        self.weights = np.clip(weights, 0, 1).astype(np.float32)
        return self.weights


def calibrate_change_limit(changes: Sequence[np.ndarray], percentile: float = 99.0) -> float:
    """The change limit from the coarse change maps of validation volumes.

    ``changes`` are :meth:`DifferenceWeighting.coarse_change` maps of the network's predictions
    on volumes like its training data; the limit is their ``percentile`` over all nodes.
    """
    values = np.concatenate([np.ravel(c) for c in changes]) if changes else np.array([])
    if values.size == 0:
        raise ValueError("no change maps to calibrate on")
    return float(max(np.percentile(values, percentile), 1e-6))


FALLBACKS = Registry("input fallback", "model.fallback",
                     "conf/model/unet3d.yaml, or fallback= of fmc.predict",
                     group="fmc.fallbacks")


def fallback_choices() -> tuple[str, ...]:
    """What fmc.predict's and fmc.challenge's ``fallback`` takes: ``auto`` (the fallback the
    checkpoint was trained for) and every registered fallback."""
    return ("auto", *FALLBACKS.names())


def resolve_fallback(choice: str, hparams) -> str:
    """``auto`` -> the checkpoint's ``fallback`` hyperparameter (``none`` if it has none)."""
    if choice != "auto":
        return choice
    stored = str(hparams.get("fallback") or "none")
    if stored == "calibrated" and hparams.get("change_limit") is None:
        return "none"  # trained for it, but never calibrated (no validation volumes)
    return stored if stored in FALLBACKS else "none"


def make_fallback(kind: str, shape: Sequence[int], hparams):
    """The weighting object of fallback ``kind`` for a volume of ``shape`` (None for none).

    A fallback's builder takes the volume's ``shape`` and the checkpoint's ``hparams`` and
    returns an object with ``add(z0, inputs, prediction)``, ``finish()`` and
    ``blend(z0, inputs, prediction)`` (:class:`DifferenceWeighting`), or None.
    """
    return FALLBACKS.get(kind)(shape, hparams)


@FALLBACKS.register("none")
def no_fallback(shape: Sequence[int], hparams) -> None:
    """The prediction as it is."""
    return None


@FALLBACKS.register("difference")
def difference_fallback(shape: Sequence[int], hparams) -> DifferenceWeighting:
    """lWM's difference weighting (:class:`DifferenceWeighting`)."""
    return DifferenceWeighting(shape)


@FALLBACKS.register("calibrated")
def calibrated_fallback(shape: Sequence[int], hparams) -> ChangeLimit:
    """The change limit measured at the end of training (:class:`ChangeLimit`)."""
    limit = hparams.get("change_limit")
    if limit is None:
        raise ValueError("fallback=calibrated needs a checkpoint with change_limit (trained "
                         "with model.fallback=calibrated and validation volumes)")
    return ChangeLimit(shape, float(limit))
