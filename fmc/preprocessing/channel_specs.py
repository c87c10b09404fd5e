"""The network's input channels, one spec each: H5 dataset, scale, how it is computed and streamed.

A *channel* is one input of the network (docs/design.md, "Words"). Its :class:`ChannelSpec` is the
one place that says where ``fmc.prepare`` stores it, how it is computed from a view, how
prediction streams it slab by slab, and how it is scaled before the network sees it. Every stage
reads the spec through :data:`CHANNELS`: preparation (:mod:`fmc.preprocessing.conversion`),
training data (:mod:`fmc.data`), prediction's input (:mod:`fmc.inference.network_input`), the
config checks, and the export and model zoo cards. A new channel is one spec, one function (its
plane source) and one YAML naming it in ``conf/channels/``::

    def stream_depth(view: ChannelView) -> PlaneSource: ...

    register_channel(ChannelSpec("depth", "data/depth", "depth below the first plane (µm)",
                                 stream=stream_depth, default_scale_um=20.0))

Other packages add channels as entry points of group ``fmc.channels`` naming a spec object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fmc.core.errors import FmcConfigError
from fmc.core.named_choices import Registry
from fmc.core.normalization import NormalizedPlanes, VolumeStats, normalize_float32, volume_stats
from fmc.io.h5 import RAW_IMAGE
from fmc.preprocessing.channels import WORKING_SPACING_UM, SurfaceDistanceField, surface_distance
from fmc.preprocessing.light import LightField, light_map

# The view itself: always the network's first channel, percentile-normalised, never scaled. The
# robustness augmentation, the zoo's "raw" input and the residual output all mean this channel.
VIEW = "raw_image"
DESCRIPTION_LENGTH = 80


@dataclass(frozen=True)
class ChannelView:
    """What a channel is computed from: one recorded view and what is known about it.

    Attributes
    ----------
    volume : numpy.ndarray or VolumeLike
        The view as recorded, ZYX; prediction passes a volume read lazily in z-slabs.
    spacing_zyx : tuple of 3 floats
        Voxel size in µm.
    degradation_axes : tuple of int, optional
        The study's illuminated axes (0 = Z, 1 = Y, 2 = X); None when the study is unknown.
    stats : VolumeStats, optional
        The view's whole-volume percentiles (computed when needed if not given).
    working_spacing_um : float
        Voxel size of the coarse grid that derived channels are computed on.
    """

    volume: Any
    spacing_zyx: tuple[float, float, float]
    degradation_axes: tuple[int, ...] | None = None
    stats: VolumeStats | None = None
    working_spacing_um: float = WORKING_SPACING_UM

    def volume_stats(self) -> VolumeStats:
        """The view's percentiles: the given ones, else computed (streamed over z-slabs)."""
        return self.stats if self.stats is not None else volume_stats(self.volume)


class PlaneSource(Protocol):
    """A channel of one volume produced on demand, as prediction streams it."""

    def planes(self, z0: int, z1: int) -> np.ndarray:
        """The channel's values of planes ``z0:z1`` (float32, the unit of its H5 dataset)."""
        ...


Stream = Callable[[ChannelView], PlaneSource]
Compute = Callable[[ChannelView], tuple[np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class ChannelSpec:
    """One input channel of the network.

    Attributes
    ----------
    name : str
        The name configs and checkpoints use (``channels.list``).
    dataset : str
        Its H5 dataset in an angle file written by ``fmc.prepare``.
    description : str
        What its stored values are, in one line of at most :data:`DESCRIPTION_LENGTH`
        characters (model cards, export cards; the model zoo allows 128 per input, its dataset
        path included).
    stream : callable
        ``stream(view) -> PlaneSource``: the channel of a whole volume, read plane range by plane
        range (prediction on volumes that were not prepared).
    compute : callable, optional
        ``compute(view) -> (array, attrs)``: the whole volume as ``fmc.prepare`` stores it, and
        root attributes to write beside it. Default: ``stream(view).planes(0, depth)``, no
        attributes -- the two must agree, and the default makes sure they do.
    default_scale_um : float, optional
        The channel enters the network as ``tanh(d / scale)`` with this scale in µm (a distance
        of ± hundreds of µm next to a [0, 1] image would swamp it); None: unscaled.
    scale_key : str, optional
        The ``data.*`` config key that overrides the scale (default ``<name>_scale_um``).
    """

    name: str
    dataset: str
    description: str
    stream: Stream
    compute: Compute | None = None
    default_scale_um: float | None = None
    scale_key: str | None = None

    def __post_init__(self) -> None:
        if "\n" in self.description or not 0 < len(self.description) <= DESCRIPTION_LENGTH:
            raise ValueError(f"channel {self.name}: the description must be one line of 1 to "
                             f"{DESCRIPTION_LENGTH} characters, got {self.description!r}")
        if self.compute is None:
            object.__setattr__(self, "compute", self._whole_volume)
        if self.default_scale_um is not None and self.scale_key is None:
            object.__setattr__(self, "scale_key", f"{self.name}_scale_um")

    def _whole_volume(self, view: ChannelView) -> tuple[np.ndarray, dict[str, Any]]:
        return self.stream(view).planes(0, int(view.volume.shape[0])), {}

    @property
    def scaled(self) -> bool:
        """Whether the network sees ``tanh(d / scale)`` rather than the stored values."""
        return self.default_scale_um is not None

    def scaling(self, scale_um: float | None = None) -> str:
        """How the network sees the channel: ``"none"`` or ``"tanh(d / 50 µm)"``."""
        if not self.scaled:
            return "none"
        return f"tanh(d / {self.default_scale_um if scale_um is None else scale_um:g} µm)"


CHANNELS = Registry("input channel", "channels.list", "conf/channels/", group="fmc.channels",
                    entry_type=ChannelSpec)


def register_channel(spec: ChannelSpec) -> ChannelSpec:
    """Add ``spec`` to :data:`CHANNELS` under its name (a name already there is refused)."""
    CHANNELS.register(spec.name, spec)
    return spec


def channel_spec(name: str) -> ChannelSpec:
    """The spec of channel ``name``, or of the channel stored at the H5 dataset ``name``.

    Raises
    ------
    FmcConfigError
        ``channels.list=<name>: choose one of ... (conf/channels/...)``.
    """
    name = str(name)
    if name not in CHANNELS:
        name = {CHANNELS[known].dataset: known for known in CHANNELS.names()}.get(name, name)
    return CHANNELS[name]


def channel_name(name: str) -> str:
    """``'data/surface_distance'`` or ``'surface_distance'`` → ``'surface_distance'``."""
    return channel_spec(name).name


def derived_channels() -> tuple[ChannelSpec, ...]:
    """Every channel but the view: those ``fmc.prepare`` computes for each angle file."""
    return tuple(CHANNELS[name] for name in CHANNELS.names() if name != VIEW)


def channel_scales(settings: Mapping | None = None) -> dict[str, float]:
    """The scale (µm) of every scaled channel: ``settings[spec.scale_key]`` when the settings
    (the ``data`` config, or keyword arguments) hold it, else the spec's default."""
    settings = settings or {}
    return {spec.name: float(settings.get(spec.scale_key, spec.default_scale_um))
            for spec in map(CHANNELS.get, CHANNELS.names()) if spec.scaled}


def scale_channel(name: str, array: np.ndarray, scale_um: float | None = None) -> np.ndarray:
    """Scale one input channel to the range the network expects (float32).

    RWTH-GE fed distances of ± hundreds of µm next to a [0, 1] image; a tanh keeps the sign and
    the detail near the hull (or the lit border), where it matters, in about [-1, 1].

    Parameters
    ----------
    name : str
        A channel name (or its dataset path).
    array : numpy.ndarray
        The channel as stored in the H5 file (µm for distances).
    scale_um : float, optional
        Length in µm that maps to tanh(1) ≈ 0.76; default: the spec's ``default_scale_um``.
        Ignored for unscaled channels (the view).
    """
    spec = channel_spec(name)
    array = np.asarray(array, dtype=np.float32)
    if not spec.scaled:
        return array
    scale = spec.default_scale_um if scale_um is None else float(scale_um)
    if not scale > 0:
        raise FmcConfigError(f"scale for channel {name!r} must be > 0 µm, got {scale_um!r}")
    return np.tanh(array / np.float32(scale))


# ----------------------------------------------------------------------------------------------
# fmc's own channels: how each is computed at preparation and streamed at prediction
# ----------------------------------------------------------------------------------------------
def _view_planes(view: ChannelView) -> PlaneSource:
    return NormalizedPlanes(view.volume, view.volume_stats())


def _view_volume(view: ChannelView) -> tuple[np.ndarray, dict[str, Any]]:
    stats = view.volume_stats()
    return normalize_float32(view.volume, stats.low, stats.high), {}


def _distance_field(view: ChannelView) -> PlaneSource:
    return SurfaceDistanceField.from_volume(view.volume, view.spacing_zyx, view.working_spacing_um)


def _distance_volume(view: ChannelView) -> tuple[np.ndarray, dict[str, Any]]:
    return surface_distance(view.volume, view.spacing_zyx, view.working_spacing_um), {}


def _light_field(view: ChannelView) -> PlaneSource:
    return LightField.from_volume(view.volume, view.spacing_zyx, view.degradation_axes,
                                  view.working_spacing_um)


def _light_volume(view: ChannelView) -> tuple[np.ndarray, dict[str, Any]]:
    light, info = light_map(view.volume, view.spacing_zyx, view.degradation_axes,
                            view.working_spacing_um)
    # Written beside the map so that a file says which side fmc took for the lit one, and why.
    return light, {"light_direction": info["direction"], "lit_sides": info["lit_sides"],
                   "light_axes": "study" if view.degradation_axes else "strongest gradient"}


register_channel(ChannelSpec(
    VIEW, RAW_IMAGE, "the view, (x - p2) / (p99.8 - p2) over the whole volume, not clipped",
    stream=_view_planes, compute=_view_volume))
register_channel(ChannelSpec(
    "surface_distance", "data/surface_distance",
    "signed distance to the specimen hull (µm, + inside, 0 on the hull)",
    stream=_distance_field, compute=_distance_volume, default_scale_um=50.0,
    scale_key="distance_scale_um"))
register_channel(ChannelSpec(
    "light_map", "data/light_map",
    "distance from the border the light enters (µm, 0 there, growing inwards)",
    stream=_light_field, compute=_light_volume, default_scale_um=100.0,
    scale_key="light_scale_um"))
