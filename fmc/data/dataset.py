"""The patch Dataset over fmc's H5 files (the LightningDataModule is in :mod:`fmc.data.datamodule`).

A sample is one patch of the angle file's input channels and the same patch of the fused file's
``data/raw_image`` (the target). Only the patch is read (h5py slicing): memory grows with the patch,
never with the volume (docs/design.md §4, §10). Foreground patches are centred on a voxel drawn from the
fused file's ``data/foreground`` coordinates, written once by ``fmc.prepare``.

Randomness and reproducibility
------------------------------
Training samples draw from a numpy generator seeded with ``(seed, index, r)``, where ``r`` is one
draw of torch's global RNG in the process that loads the sample. PyTorch's DataLoader seeds torch in
each worker from a base seed it draws from the main process's torch RNG at the start of every
epoch, so patches differ between workers and epochs, and ``lightning.seed_everything(s)`` makes a
run reproducible (for a given ``num_workers``). Validation and test datasets (``fixed=True``) seed
with ``(seed, index)`` only: the same patches in every epoch, whatever the workers, without
augmentation.

H5 files are opened lazily in the process that reads them (the handles are never pickled and are
dropped after a fork), so ``num_workers > 0`` is safe.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.data.patches import (
    apply_augmentation,
    axis_indices,
    check_rot90_planes,
    draw_augmentation,
    draw_origin,
    pad_to_patch,
    patch_window,
    plane_indices,
)
from fmc.data.robustness import resample_z
from fmc.io.h5 import FOREGROUND, RAW_IMAGE
from fmc.preprocessing.channel_specs import CHANNELS, channel_name, channel_scales, scale_channel

# The target: the fused file's view, stored as fmc.prepare stores every view (fmc.io.h5).
TARGET_DATASET = RAW_IMAGE

Pair = tuple[Path, Path]


def check_patch_size(patch_size: Sequence[int]) -> tuple[int, int, int]:
    """``patch_size`` as three positive ints (Z, Y, X), else :class:`FmcConfigError`."""
    try:
        patch = tuple(int(p) for p in patch_size)
        exact = all(float(p) == int(p) for p in patch_size)
    except (TypeError, ValueError):
        patch, exact = (), False
    if len(patch) != 3 or not exact or min(patch) < 1:
        raise FmcConfigError(f"data.patch_size must be three positive integers [Z, Y, X], got "
                             f"{patch_size!r}")
    return patch  # type: ignore[return-value]


class PatchDataset(Dataset):
    """Patches of (input channels, target) from pairs of fmc H5 files.

    Parameters
    ----------
    pairs : sequence of (angle_path, fused_path)
        H5 files as written by ``fmc.prepare`` (see :mod:`fmc.io.h5`).
    channels : sequence of str
        Input channels, names of :data:`fmc.preprocessing.channel_specs.CHANNELS` (e.g.
        ``raw_image``, ``surface_distance``), read from the angle file in this order.
    patch_size : (Z, Y, X)
        Patch shape; volumes smaller along an axis are reflect-padded at its end.
    foreground_share : float, default 0.75
        Probability that a patch is centred on a foreground voxel (else uniform).
    samples_per_volume : int, default 1
        Patches per pair and epoch: ``len = len(pairs) * samples_per_volume``; sample ``i`` comes
        from pair ``i % len(pairs)``.
    epoch_samples : int, optional
        Patches per epoch, whatever the number of pairs (overrides ``samples_per_volume``):
        an epoch is then a fixed amount of training, not "one patch per volume". Sample ``i``
        still comes from pair ``i % len(pairs)``, so shuffled epochs visit the pairs evenly.
    flip_axes : axes, default ()
        Axes (``"ZYX"`` names or 0-2) flipped with probability 1/2 each (not when ``fixed``).
    rot90_planes : planes, default ()
        Planes (e.g. ``["YX"]``) turned by a random multiple of 90° (their patch sides must be
        equal; not when ``fixed``).
    fixed : bool, default False
        Validation/test: positions depend only on ``(seed, index)``, no augmentation.
    seed : int, default 0
    channel_scales_um : dict, optional
        Scale (µm) of the tanh applied to each scaled channel, by name; a channel left out gets
        its spec's default (:func:`fmc.preprocessing.channel_specs.scale_channel`).
    max_open_files : int, default 16
        Open H5 handles kept per process (least recently used closed first).
    robustness : fmc.data.robustness.RobustnessAugment, optional
        Intensity/optics augmentation of the raw-image channel (training datasets only).

    Items are dicts: ``input`` float32 ``[C, Z, Y, X]``, ``target`` float32 ``[1, Z, Y, X]``,
    ``index`` int and ``origin`` int64 ``[3]`` (ZYX start of the patch in the volume).
    """

    def __init__(self, pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
                 channels: Sequence[str], patch_size: Sequence[int], foreground_share: float = 0.75,
                 samples_per_volume: int = 1, epoch_samples: int | None = None,
                 flip_axes: Sequence[int | str] | str = (),
                 rot90_planes: Sequence[Sequence[int | str] | str] = (), fixed: bool = False,
                 seed: int = 0, channel_scales_um: dict[str, float] | None = None,
                 max_open_files: int = 16, robustness=None):
        self.pairs: list[Pair] = [(Path(a), Path(f)) for a, f in pairs]
        if not self.pairs:
            raise FmcInputError("no (angle, fused) pairs to sample patches from")
        self.channels = [channel_name(c) for c in channels]
        if not self.channels:
            raise FmcConfigError("data.channels is empty: give at least one input channel")
        self.patch_size = check_patch_size(patch_size)
        if not 0.0 <= float(foreground_share) <= 1.0:
            raise FmcConfigError(f"data.foreground_share must be in [0, 1], got {foreground_share}")
        self.foreground_share = float(foreground_share)
        if int(samples_per_volume) < 1:
            raise FmcConfigError(f"samples_per_volume must be ≥ 1, got {samples_per_volume}")
        self.samples_per_volume = int(samples_per_volume)
        if epoch_samples is not None and int(epoch_samples) < 1:
            raise FmcConfigError(f"epoch_samples must be ≥ 1, got {epoch_samples}")
        self.epoch_samples = None if epoch_samples is None else int(epoch_samples)
        self.fixed = bool(fixed)
        self.flip_axes = () if self.fixed else axis_indices(flip_axes)
        self.rot90_planes = () if self.fixed else plane_indices(rot90_planes)
        check_rot90_planes(self.rot90_planes, self.patch_size)
        self.seed = int(seed)
        self.scales = {**channel_scales(), **{name: float(scale) for name, scale in
                                              (channel_scales_um or {}).items()}}
        self.max_open_files = max(2, int(max_open_files))
        # Input-only intensity/optics augmentation (fmc.data.robustness); never on fixed datasets.
        self.robustness = None if self.fixed or robustness is None or not robustness.enabled \
            else robustness
        self._reset_handles()

    # -- per-process state: never pickled, dropped after a fork ---------------------------------
    def _reset_handles(self) -> None:
        self._pid = os.getpid()
        self._handles: OrderedDict[Path, h5py.File] = OrderedDict()
        self._foreground: dict[Path, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_pid", "_handles", "_foreground"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_handles()

    def _file(self, path: Path) -> h5py.File:
        if os.getpid() != self._pid:
            # A forked worker inherited the parent's handles: HDF5 state must not be shared.
            self._reset_handles()
        handle = self._handles.get(path)
        if handle is None:
            if len(self._handles) >= self.max_open_files:
                self._handles.popitem(last=False)[1].close()
            handle = self._handles[path] = h5py.File(path, "r")
        else:
            self._handles.move_to_end(path)
        return handle

    def _foreground_coordinates(self, path: Path) -> np.ndarray | None:
        if path not in self._foreground:
            handle = self._file(path)
            self._foreground[path] = handle[FOREGROUND][()] if FOREGROUND in handle else None
        return self._foreground[path]

    def close(self) -> None:
        """Close this process's open H5 files."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    # -- sampling -----------------------------------------------------------------------------
    def __len__(self) -> int:
        if self.epoch_samples is not None:
            return self.epoch_samples
        return len(self.pairs) * self.samples_per_volume

    def generator(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` (see the module docstring for the seeding)."""
        if self.fixed:
            return np.random.default_rng([self.seed, int(index)])
        draw = int(torch.randint(0, 2**62, (1,)).item())
        return np.random.default_rng([self.seed, int(index), draw])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        angle_path, fused_path = self.pairs[index % len(self.pairs)]
        rng = self.generator(index)
        angle, fused = self._file(angle_path), self._file(fused_path)
        target_data = fused[TARGET_DATASET]
        shape = target_data.shape
        foreground = self._foreground_coordinates(fused_path) if self.foreground_share > 0 else None
        # Another Z step (fmc.data.robustness, "anisotropy"): read more or fewer planes, resample.
        z_factor = 1.0 if self.robustness is None else self.robustness.z_step_factor(rng)
        read = self.patch_size if z_factor == 1.0 else (
            max(2, int(round(self.patch_size[0] * z_factor))), *self.patch_size[1:])
        origin = draw_origin(rng, read, shape, foreground, self.foreground_share)
        window = patch_window(origin, read, shape)
        inputs = np.stack([scale_channel(name, angle[CHANNELS[name].dataset][window],
                                         self.scales.get(name)) for name in self.channels])
        target = np.asarray(target_data[window], dtype=np.float32)[None]
        if z_factor != 1.0:
            planes = min(self.patch_size[0], max(1, int(round(inputs.shape[1] / z_factor))))
            inputs, target = resample_z(inputs, planes), resample_z(target, planes)
        inputs, target = pad_to_patch(inputs, self.patch_size), pad_to_patch(target, self.patch_size)
        if self.flip_axes or self.rot90_planes:
            # One draw for both: input and target must stay voxel-aligned.
            augmentation = draw_augmentation(rng, self.flip_axes, self.rot90_planes)
            inputs = apply_augmentation(inputs, augmentation)
            target = apply_augmentation(target, augmentation)
        if self.robustness is not None:  # the view only: channel 0 is raw_image
            inputs = np.array(inputs)
            inputs[0] = self.robustness.apply(inputs[0], rng)
        return {"input": torch.from_numpy(inputs), "target": torch.from_numpy(target),
                "index": int(index), "origin": torch.as_tensor(origin, dtype=torch.int64)}


# -- checks before training -------------------------------------------------------------------
