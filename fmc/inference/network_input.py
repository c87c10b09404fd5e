"""A checkpoint's input channels for one volume, built slab by slab (used by prediction).

Training reads channels that ``fmc.prepare`` computed on whole volumes; prediction must feed the
same values without holding a 309×1920×1920 volume (4.5 GB per float32 channel) in memory. The
whole-volume work is done once on small things: exact percentiles streamed over z-slabs, and the
surface distance / light direction on the ~1 µm coarse grid (block means streamed over slabs).
Each slab is then normalised, and its distance planes interpolated, on demand -- with the same
functions ``fmc.prepare`` uses, so the values equal the prepared ones (tested). How each channel
streams is its spec's (:mod:`fmc.preprocessing.channel_specs`).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fmc.core.errors import FmcInputError
from fmc.core.naming import OUTPUT_MARK, is_zarr, volume_stem
from fmc.core.normalization import VolumeStats, volume_stats
from fmc.core.studies import STUDIES, parse_content, parse_study
from fmc.io.h5 import RAW_IMAGE
from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import TiffVolume
from fmc.preprocessing.channel_specs import CHANNELS, VIEW, ChannelView, scale_channel
from fmc.preprocessing.channels import ChannelWarning
from fmc.preprocessing.conversion import resolve_spacing

log = logging.getLogger(__name__)

# Planes converted at a time when building a slab (bounds the temporaries).
FILL_PLANES = 8


@dataclass
class OpenedVolume:
    """One input volume opened for prediction.

    Attributes
    ----------
    volume : VolumeLike
        The raw view, readable in z-slabs (``volume[z0:z1]``).
    meta : VolumeMeta
        Its metadata (for H5 files: the source TIFF's, from the file's attributes).
    output_name : str
        File name of the prediction (the input's TIFF name).
    stats : VolumeStats or None
        Known normalisation (H5 files store normalised intensities and their percentiles).
    stored : dict
        Channels already computed by ``fmc.prepare`` (H5 files), by channel name.
    """

    volume: Any
    meta: VolumeMeta
    output_name: str
    stats: VolumeStats | None = None
    stored: dict[str, Any] | None = None
    handle: Any = None

    def close(self) -> None:
        """Close the underlying file."""
        if self.handle is not None:
            self.handle.close()


def open_volume(path: str | Path) -> OpenedVolume:
    """Open a TIFF view (read lazily by pages) or a prepared H5 file (``data/raw_image``)."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return _open_h5(path)
    if is_zarr(path):
        from fmc.io.zarr_volume import ZarrVolume

        volume = ZarrVolume(path)
        return OpenedVolume(volume, volume.meta, f"{volume_stem(path)}.tif", handle=volume)
    tiff = TiffVolume(path)
    if len(tiff.shape) != 3:
        tiff.close()
        raise FmcInputError(f"{path}: expected a 3D volume, got shape {tiff.shape}")
    return OpenedVolume(tiff, tiff.meta, path.name, handle=tiff)


def _open_h5(path: Path) -> OpenedVolume:
    import h5py

    from fmc.io.h5 import is_complete, read_attrs

    if not is_complete(path):
        raise FmcInputError(f"{path}: not a complete fmc H5 file (run fmc.prepare again)")
    attrs = read_attrs(path)
    handle = h5py.File(path, "r")
    if RAW_IMAGE not in handle:
        handle.close()
        raise FmcInputError(f"{path}: no {RAW_IMAGE} dataset")
    raw = handle[RAW_IMAGE]
    if raw.ndim != 3:
        handle.close()
        raise FmcInputError(f"{path}: expected a 3D {RAW_IMAGE}, got shape {raw.shape}")
    spacing = attrs.get("spacing_zyx")
    meta = VolumeMeta(study=parse_study(attrs.get("study")), content=parse_content(attrs.get("content")),
                      spacing_zyx=tuple(float(s) for s in spacing) if spacing else None,
                      dtype=attrs.get("dtype"), shape=tuple(int(n) for n in raw.shape),
                      original=attrs.get("metadata") or {})
    # The stored intensities are already normalised; the stored percentiles map them back.
    low, high = attrs.get("percentile_low"), attrs.get("percentile_high")
    stats = None
    if low is not None and high is not None:
        stats = VolumeStats(low=float(low), high=float(high), minimum=math.nan, maximum=math.nan)
    stored = {name: handle[CHANNELS[name].dataset] for name in CHANNELS
              if CHANNELS[name].dataset in handle}
    source = attrs.get("source") or f"{path.stem}.tif"
    return OpenedVolume(raw, meta, Path(str(source)).name, stats=stats, stored=stored,
                        handle=handle)


class NetworkInput:
    """The input channels of a checkpoint for one volume: a :class:`fmc.inference.tiling.SlabSource`.

    Parameters
    ----------
    opened : OpenedVolume
        The volume and what is known about it.
    channels : sequence of str
        Channel names, in the order the network was trained on (from the checkpoint).
    channel_scales_um : dict, optional
        tanh scale of each distance channel (from the checkpoint).
    fallback_study : int, optional
        The checkpoint's study: used for the light map's illuminated axes when the volume's
        metadata names no known study.
    """

    def __init__(self, opened: OpenedVolume, channels, channel_scales_um: dict | None = None,
                 fallback_study: int | None = None):
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            raise FmcInputError(f"the checkpoint asks for input channel(s) {unknown}; fmc knows "
                                f"{', '.join(CHANNELS)} (conf/channels/)")
        self.opened = opened
        self.volume = opened.volume
        self.shape = tuple(int(n) for n in self.volume.shape)
        self.channels = list(channels)
        self.scales = dict(channel_scales_um or {})
        self.stored = opened.stored or {}
        name = opened.output_name
        self.spacing, _ = resolve_spacing(opened.meta, Path(name))
        if opened.stored is not None:  # H5: intensities already normalised
            self.stats = VolumeStats(low=0.0, high=1.0, minimum=math.nan, maximum=math.nan)
            self.intensity_stats = opened.stats
        else:
            self.stats = volume_stats(self.volume, name=name)
            self.intensity_stats = self.stats
            if self.stats.high == self.stats.low:
                log.warning("%s: constant volume (p2 == p99.8 == %g); intensities left "
                            "unnormalised", name, self.stats.low)
        study = opened.meta.study if opened.meta.study in STUDIES else fallback_study
        view = ChannelView(self.volume, tuple(self.spacing),
                           STUDIES[study].degradation_axis_indices if study in STUDIES else None,
                           self.stats)
        # Each channel that is not stored streams as its spec says; the view always does, as
        # raw() serves the input fallback and scoring whatever the channels.
        self.fields: dict[str, Any] = {}
        for channel in dict.fromkeys([VIEW, *self.channels]):
            if channel in self.stored:
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ChannelWarning)
                self.fields[channel] = CHANNELS[channel].stream(view)
            for warning in caught:
                log.warning("%s: %s", name, warning.message)

    def raw(self, z0: int, z1: int) -> np.ndarray:
        """Normalised intensities of planes ``z0:z1`` (float32), as fmc.prepare stores them."""
        result = np.empty((z1 - z0, *self.shape[1:]), np.float32)
        self._fill(result, VIEW, z0, z1)
        return result

    def slab(self, z0: int, z1: int) -> np.ndarray:
        """The network input of planes ``z0:z1``: ``(C, z1 - z0, Y, X)`` float32."""
        result = np.empty((len(self.channels), z1 - z0, *self.shape[1:]), np.float32)
        for index, channel in enumerate(self.channels):
            self._fill(result[index], channel, z0, z1)
        return result

    def _fill(self, into: np.ndarray, channel: str, z0: int, z1: int) -> None:
        # A few planes at a time: the float64 and float32 temporaries of a 1920×1920 slab would
        # otherwise outweigh the slab itself.
        for c0 in range(z0, z1, FILL_PLANES):
            c1 = min(c0 + FILL_PLANES, z1)
            target = into[c0 - z0:c1 - z0]
            if channel in self.stored:
                values = np.asarray(self.stored[channel][c0:c1])
            else:
                values = self.fields[channel].planes(c0, c1)
            target[...] = scale_channel(channel, values, self.scales.get(channel))

    def output_meta(self, dtype: str) -> VolumeMeta:
        """The prediction's metadata: the input's, with the resolved spacing and new dtype."""
        original = {**self.opened.meta.original, OUTPUT_MARK: "prediction"}
        return replace(self.opened.meta, spacing_zyx=tuple(self.spacing), dtype=dtype,
                       shape=self.shape, original=original)
