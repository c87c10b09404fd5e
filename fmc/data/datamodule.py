"""Training data: the LightningDataModule over fmc's H5 files and split lists, and the checks run
before training (lists, files, channels, patch size). The patch Dataset itself, with its sampling
and reproducibility rules, is :class:`fmc.data.dataset.PatchDataset`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.studies import AXIS_NAMES, STUDIES
from fmc.data.dataset import TARGET_DATASET, Pair, PatchDataset, check_patch_size
from fmc.data.patches import (
    axis_indices,
    check_rot90_planes,
    default_augment_axes,
    default_rot90_planes,
    plane_indices,
    resolve_flip_axes,
)
from fmc.io.h5 import FOREGROUND, read_attrs
from fmc.preprocessing.channel_specs import CHANNELS, channel_name, channel_scales, scale_channel
from fmc.preprocessing.splits import read_list

__all__ = ["CHANNELS", "FmcDataModule", "PatchDataset", "check_patch_size", "check_pairs",
           "default_augment_axes", "resolve_list", "scale_channel"]

log = logging.getLogger(__name__)


def resolve_list(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Find a split list: absolute, else ``root/lists/<path>``, ``root/<path>``, then the cwd.

    A name without suffix gets ``.csv`` (``study1_nucleus_train`` works).

    Raises
    ------
    FmcInputError
        Naming every place that was tried.
    """
    path = Path(path)
    names = [path] if path.suffix else [path.with_name(path.name + ".csv"), path]
    tried: list[Path] = []
    for name in names:
        if name.is_absolute():
            tried.append(name)
            continue
        if root is not None:
            tried += [Path(root) / "lists" / name, Path(root) / name]
        tried.append(Path.cwd() / name)
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise FmcInputError(f"split list {str(path)!r} not found (tried "
                        f"{', '.join(str(p) for p in dict.fromkeys(tried))})")


def check_pairs(pairs: Sequence[Pair], channels: Sequence[str], list_path: Path | None = None
                ) -> list[dict[str, Any]]:
    """Check that every pair holds what training reads; return the fused files' attributes.

    Raises
    ------
    FmcInputError
        Naming the file and the missing dataset (and the ones it holds) or the shape mismatch.
    """
    where = f" (listed in {list_path})" if list_path is not None else ""
    attrs = []
    for angle, fused in pairs:
        angle_shape = _check_datasets(angle, [CHANNELS[c].dataset for c in channels], where,
                                      "input channel")
        fused_shape = _check_datasets(fused, [TARGET_DATASET, FOREGROUND], where, "target file")
        if angle_shape != fused_shape:
            raise FmcInputError(f"{angle} {list(angle_shape)} and {fused} {list(fused_shape)}"
                                f"{where}: angle and fused volumes differ in shape")
        attrs.append(read_attrs(fused))
    return attrs


def _check_datasets(path: Path, names: Sequence[str], where: str, role: str) -> tuple[int, ...]:
    try:
        with h5py.File(path, "r") as handle:
            held: list[str] = []
            handle.visititems(lambda n, item: held.append(n) if isinstance(item, h5py.Dataset) else None)
            for name in names:
                if name not in handle:
                    raise FmcInputError(
                        f"{path}{where}: no dataset {name!r} ({role}); it holds "
                        f"{', '.join(held) or 'no datasets'}. Re-run fmc.prepare, or choose "
                        f"data.channels among the available ones")
            shapes = {name: handle[name].shape for name in names if name != FOREGROUND}
    except OSError as error:
        raise FmcInputError(f"{path}{where}: not a readable HDF5 file ({error})") from None
    first = next(iter(shapes.values()))
    for name, shape in shapes.items():
        if len(shape) != 3 or shape != first:
            raise FmcInputError(f"{path}{where}: dataset {name!r} has shape {list(shape)}, "
                                f"expected a 3D volume of shape {list(first)}")
    return first


# -- the LightningDataModule ------------------------------------------------------------------
class FmcDataModule(L.LightningDataModule):
    """Train/val/test patch loaders over fmc H5 files and split lists.

    Parameters
    ----------
    root : path, optional
        The H5 folder; list rows are relative to it, and relative list paths are looked up in
        ``root/lists/`` first (:func:`resolve_list`).
    train_list, val_list, test_list : path, optional
        Split lists (``angle.h5;fused.h5`` rows). Only the lists of the stage being set up are
        required; without ``val_list`` there is no validation.
    channels : sequence of str, default ("raw_image", "surface_distance")
        Input channels (:data:`fmc.preprocessing.channel_specs.CHANNELS`); ``in_channels ==
        len(channels)``.
    patch_size : (Z, Y, X), default (64, 256, 256)
    batch_size : int, default 1
    num_workers : int, default 0
        DataLoader processes (persistent between epochs when > 0).
    foreground_share : float, default 0.75
    samples_per_volume, val_samples_per_volume : int, default 1
    epoch_steps : int, optional
        Optimizer steps per training epoch (``epoch_steps * batch_size`` patches, whatever the
        number of volumes); None: ``samples_per_volume`` patches per volume, RWTH-GE's epoch.
    augment : bool, default True
        Master switch for flips and rotations of training patches.
    flip_axes : "auto", "lateral" or axes, default "auto"
        ``"auto"``: the axes that are not in ``degradation_axes`` or, when that is not given, not
        degradation axes of the training files' study (:func:`fmc.data.patches.default_augment_axes`;
        the intersection over several studies; no flips for an unknown study). ``"lateral"``: Y and
        X whatever the light's direction, Z too where no study's light travels along it
        (:func:`fmc.data.patches.lateral_augment_axes`): light from every lateral side.
    rot90_planes : "auto" or planes, default "auto"
        ``"auto"``: planes of two flip axes with equal patch sides (YX for studies 1 and 2, and with
        ``flip_axes="lateral"``).
    degradation_axes : axes, optional
        Axes along which the view degrades (e.g. the study config's ``["Z"]``); they are never
        flipped by ``"auto"``.
    seed : int, default 0
        Seeds the validation/test patch positions and, with torch's RNG, the training draws.
    robustness : dict, optional
        Input-only intensity/optics augmentation strengths (:mod:`fmc.data.robustness`), applied to
        training patches when ``augment`` is true.
    channel_scales_um : dict, optional
        tanh scale (µm) of each scaled channel, by name; default: each spec's
        (:func:`fmc.preprocessing.channel_specs.channel_scales`).
    pin_memory : bool, optional
        Default: True when CUDA is available.
    """

    def __init__(self, root: str | os.PathLike | None = None,
                 train_list: str | os.PathLike | None = None,
                 val_list: str | os.PathLike | None = None,
                 test_list: str | os.PathLike | None = None,
                 channels: Sequence[str] = ("raw_image", "surface_distance"),
                 patch_size: Sequence[int] = (64, 256, 256), batch_size: int = 1,
                 num_workers: int = 0, foreground_share: float = 0.75, samples_per_volume: int = 1,
                 val_samples_per_volume: int = 1, epoch_steps: int | None = None, augment: bool = True,
                 flip_axes: Sequence[int | str] | str = "auto",
                 rot90_planes: Sequence[Sequence[int | str] | str] | str = "auto",
                 degradation_axes: Sequence[int | str] | None = None, seed: int = 0,
                 channel_scales_um: dict[str, float] | None = None,
                 pin_memory: bool | None = None, robustness: dict | None = None):
        super().__init__()
        from fmc.data.robustness import RobustnessAugment

        robust = RobustnessAugment.from_mapping(robustness)
        # Plain values only (paths as text): checkpoints must load with torch's weights_only.
        self.save_hyperparameters({
            key: str(value) if isinstance(value, os.PathLike) else value
            for key, value in dict(
                root=root, train_list=train_list, val_list=val_list, test_list=test_list,
                channels=list(channels), patch_size=list(patch_size), batch_size=batch_size,
                num_workers=num_workers, foreground_share=foreground_share,
                samples_per_volume=samples_per_volume,
                val_samples_per_volume=val_samples_per_volume, epoch_steps=epoch_steps,
                augment=augment,
                flip_axes=flip_axes if isinstance(flip_axes, str) else list(flip_axes),
                rot90_planes=rot90_planes if isinstance(rot90_planes, str) else
                [list(p) if not isinstance(p, str) else p for p in rot90_planes],
                degradation_axes=None if degradation_axes is None else list(degradation_axes),
                seed=seed, channel_scales_um=dict(channel_scales_um or {}),
                pin_memory=pin_memory, robustness=dict(robustness or {})).items()})
        self.root = Path(root) if root is not None else None
        self.lists = {"train": train_list, "val": val_list, "test": test_list}
        self.channels = [str(c) for c in channels]
        self.patch_size = patch_size
        self.batch_size, self.num_workers = batch_size, num_workers
        self.foreground_share = foreground_share
        self.samples_per_volume, self.val_samples_per_volume = samples_per_volume, val_samples_per_volume
        self.epoch_steps = epoch_steps
        self.augment, self.flip_axes, self.rot90_planes = augment, flip_axes, rot90_planes
        self.degradation_axes = None if degradation_axes is None else axis_indices(degradation_axes)
        self.seed = seed
        self.channel_scales_um = {**channel_scales(), **dict(channel_scales_um or {})}
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.robustness = robust if augment else None
        self._pairs: dict[str, list[Pair]] = {}
        self._attrs: dict[str, list[dict[str, Any]]] = {}
        self.datasets: dict[str, PatchDataset] = {}

    @property
    def in_channels(self) -> int:
        """Number of input channels the network must take."""
        return len(self.channels)

    # -- checks -------------------------------------------------------------------------------
    def _check_settings(self) -> None:
        self.patch = check_patch_size(self.patch_size)
        self.channels = [channel_name(c) for c in self.channels]
        if not self.channels:
            raise FmcConfigError("data.channels is empty: give at least one input channel")
        if len(set(self.channels)) != len(self.channels):
            raise FmcConfigError(f"data.channels lists a channel twice: {self.channels}")
        for key, value, low in (("batch_size", self.batch_size, 1), ("num_workers", self.num_workers, 0),
                                ("samples_per_volume", self.samples_per_volume, 1),
                                ("val_samples_per_volume", self.val_samples_per_volume, 1),
                                *([("epoch_steps", self.epoch_steps, 1)]
                                  if self.epoch_steps is not None else [])):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise FmcConfigError(f"data.{key} must be an integer ≥ {low}, got {value!r}")
        if not 0.0 <= float(self.foreground_share) <= 1.0:
            raise FmcConfigError(f"data.foreground_share must be in [0, 1], got {self.foreground_share}")
        for name, scale in self.channel_scales_um.items():
            if not float(scale) > 0:
                raise FmcConfigError(f"data.{CHANNELS[name].scale_key} must be > 0 µm, got "
                                     f"{scale!r}")

    def _load_split(self, split: str) -> None:
        if split in self._pairs:
            return
        given = self.lists[split]
        if given is None:
            raise FmcConfigError(f"data.{split}_list is not set: give a split list for {split}")
        path = resolve_list(given, self.root)
        pairs = read_list(path, self.root)
        if not pairs:
            raise FmcInputError(f"{path}: split list is empty (data.{split}_list): list at least one "
                                f"'angle.h5;fused.h5' row, or re-run fmc.prepare")
        self._attrs[split] = check_pairs(pairs, self.channels, path)
        self._pairs[split] = pairs

    def validate(self, stage: str | None = None) -> None:
        """Check settings, lists and H5 files before any training step.

        ``stage`` as in :meth:`setup`; ``None`` checks every list that is set. Raises
        :class:`FmcConfigError` / :class:`FmcInputError` with a one-line message.
        """
        self._check_settings()
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"],
                  "predict": []}.get(stage, ["train", "val", "test"])
        if stage in ("fit", None) and self.lists["train"] is None:
            raise FmcConfigError("data.train_list is not set: give the training split list")
        if stage == "validate" and self.lists["val"] is None:
            raise FmcConfigError("data.val_list is not set: give the validation split list")
        if stage == "test" and self.lists["test"] is None:
            raise FmcConfigError("data.test_list is not set: give the test split list")
        for split in splits:
            if self.lists[split] is not None:
                self._load_split(split)

    def pairs(self, split: str) -> list[Pair]:
        """The (angle, fused) H5 pairs of ``split`` ('train', 'val' or 'test'), checked."""
        self._check_settings()
        self._load_split(split)
        return list(self._pairs[split])

    # -- augmentation -------------------------------------------------------------------------
    def augmentation_axes(self) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        """The flip axes and rot90 planes used for training (``"auto"`` resolved)."""
        if not self.augment:
            return (), ()
        studies = [int(s) if s is not None and int(s) in STUDIES else None
                   for s in {a.get("study") for a in self._attrs.get("train", [])}]
        flips = resolve_flip_axes(self.flip_axes, studies, self.degradation_axes)
        if self.rot90_planes == "auto":
            planes = default_rot90_planes(flips, self.patch)
        else:
            planes = plane_indices(self.rot90_planes)
            check_rot90_planes(planes, self.patch)
        return flips, planes

    # -- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Validate, then build the datasets of ``stage``."""
        self.validate(stage)
        common = dict(channels=self.channels, patch_size=self.patch,
                      foreground_share=self.foreground_share, seed=self.seed,
                      channel_scales_um=self.channel_scales_um)
        if "train" in self._pairs and "train" not in self.datasets:
            flips, planes = self.augmentation_axes()
            self.datasets["train"] = PatchDataset(
                self._pairs["train"], samples_per_volume=self.samples_per_volume,
                epoch_samples=None if self.epoch_steps is None else self.epoch_steps * self.batch_size,
                flip_axes=flips, rot90_planes=planes, robustness=self.robustness, **common)
        for split in ("val", "test"):
            if split in self._pairs and split not in self.datasets:
                self.datasets[split] = PatchDataset(
                    self._pairs[split], samples_per_volume=self.val_samples_per_volume, fixed=True,
                    **common)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          drop_last=shuffle and len(dataset) >= self.batch_size,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        # No validation list: Lightning skips validation for an empty list of loaders.
        return self._loader("val", shuffle=False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def teardown(self, stage: str | None = None) -> None:
        for dataset in self.datasets.values():
            dataset.close()

    # -- what a checkpoint should remember ----------------------------------------------------
    def dataset_info(self) -> dict[str, Any]:
        """Input channels, scaling, patch size and the training files' study/content/spacing.

        Call after :meth:`validate` (or :meth:`setup`) for the training list.
        """
        if "train" not in self._attrs:
            self.validate("fit")
        attrs = self._attrs["train"]

        def summary(key: str) -> Any:
            values = sorted({str(a.get(key)) for a in attrs if a.get(key) is not None})
            return values[0] if len(values) == 1 else values

        spacings = np.array([a["spacing_zyx"] for a in attrs if a.get("spacing_zyx") is not None],
                            dtype=np.float64)
        study = summary("study")
        flips, planes = self.augmentation_axes()
        return {
            "channels": list(self.channels),
            "channel_datasets": [CHANNELS[c].dataset for c in self.channels],
            "target": TARGET_DATASET,
            "channel_scaling": {c: CHANNELS[c].scaling(self.channel_scales_um.get(c))
                                for c in self.channels},
            "channel_scales_um": {c: float(s) for c, s in self.channel_scales_um.items()},
            "patch_size": list(self.patch),
            "study": int(study) if isinstance(study, str) and study.isdigit() else study,
            "content": summary("content"),
            "spacing_zyx": spacings.mean(axis=0).round(6).tolist() if len(spacings) else None,
            "normalization": summary("normalization"),
            "n_train": len(attrs),
            "flip_axes": "".join(AXIS_NAMES[a] for a in flips),
            "rot90_planes": ["".join(AXIS_NAMES[a] for a in p) for p in planes],
        }
