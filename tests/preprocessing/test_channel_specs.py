"""Input channels have one home (fmc.preprocessing.channel_specs): every channel is complete and
streams what preparation stores, and a new channel -- one spec, one function, one YAML in
conf/channels/ -- reaches preparation, the config checks, training data, the model and
prediction's streamed input without any other module being edited."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fmc.core.cli import CONFIG_DIR
from fmc.core.errors import FmcConfigError
from fmc.preprocessing.channel_specs import (
    CHANNELS,
    VIEW,
    ChannelSpec,
    ChannelView,
    channel_scales,
    channel_spec,
    register_channel,
)
from fmc.simulation.synth import generate_pair, write_pair

SHAPE = (16, 32, 32)


# -- the new channel: one function and one spec ------------------------------------------------
class DepthPlanes:
    """Depth (µm) below the first plane, produced plane range by plane range."""

    def __init__(self, shape, step_um: float) -> None:
        self.shape, self.step = tuple(shape), np.float32(step_um)

    def planes(self, z0: int, z1: int) -> np.ndarray:
        depth = np.arange(z0, z1, dtype=np.float32) * self.step
        return np.broadcast_to(depth[:, None, None], (z1 - z0, *self.shape[1:])).astype(np.float32)


def stream_depth(view: ChannelView) -> DepthPlanes:
    return DepthPlanes(view.volume.shape, view.spacing_zyx[0])


@pytest.fixture
def depth_channel():
    spec = register_channel(ChannelSpec("z_depth", "data/z_depth", "depth below the first plane (µm)",
                                        stream=stream_depth, default_scale_um=20.0))
    yield spec
    CHANNELS.unregister("z_depth")  # the registry is the process's: leave it as found


def compose_train(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


# -- every channel -----------------------------------------------------------------------------
def test_every_registered_channel_has_a_dataset_a_description_and_both_functions():
    assert CHANNELS.names()[:3] == (VIEW, "surface_distance", "light_map")
    for name in CHANNELS:
        spec = CHANNELS[name]
        assert spec.name == name and spec.dataset.startswith("data/")
        assert spec.description and "\n" not in spec.description
        assert callable(spec.compute) and callable(spec.stream)
        assert (spec.scale_key is not None) == spec.scaled == (name != VIEW)
    assert channel_scales() == {"surface_distance": 50.0, "light_map": 100.0}
    assert channel_scales({"distance_scale_um": 30}) == {"surface_distance": 30.0, "light_map": 100.0}
    assert CHANNELS["light_map"].scaling(25.0) == "tanh(d / 25 µm)"
    assert CHANNELS[VIEW].scaling() == "none"


def test_each_channel_streams_what_preparation_stores():
    view, _, meta = generate_pair(1, "nucleus", 0, shape=SHAPE, scale=3.0)
    source = ChannelView(view, meta.spacing_zyx, (2,))
    for name in CHANNELS:
        spec = CHANNELS[name]
        whole, _ = spec.compute(source)
        assert whole.dtype == np.float32 and whole.shape == SHAPE, name
        planes = spec.stream(source)
        slabs = np.concatenate([planes.planes(z, min(z + 5, SHAPE[0])) for z in range(0, 16, 5)])
        np.testing.assert_allclose(slabs, whole, atol=1e-5, err_msg=name)
    _, attrs = CHANNELS["light_map"].compute(source)
    assert attrs["light_axes"] == "study" and set(attrs["lit_sides"]) == {"X"}


def test_unknown_and_duplicate_channels_are_refused_in_one_line():
    with pytest.raises(FmcConfigError, match=r"^channels.list=nuclei: choose one of raw_image, "
                                             r"surface_distance, light_map \(conf/channels/"):
        channel_spec("nuclei")
    assert channel_spec("data/light_map") is CHANNELS["light_map"]  # its H5 dataset names it too
    with pytest.raises(ValueError, match="registered twice"):
        register_channel(CHANNELS["light_map"])
    with pytest.raises(ValueError, match="one line"):
        ChannelSpec("long", "data/long", "x" * 81, stream=stream_depth)


# -- a new channel, end to end -----------------------------------------------------------------
def test_a_new_channel_is_one_spec_one_function_and_one_yaml(depth_channel, tmp_path: Path):
    from fmc.data.dataset import PatchDataset
    from fmc.inference.network_input import NetworkInput, open_volume
    from fmc.preprocessing.conversion import convert_tiff
    from fmc.training.builders import build_module
    from fmc.training.config_checks import check_config

    # The YAML: a channels group option naming it, in a config folder of the user's own.
    (tmp_path / "conf" / "channels").mkdir(parents=True)
    (tmp_path / "conf" / "channels" / "raw_depth.yaml").write_text(
        "name: raw_depth\nlist: [raw_image, z_depth]\n")
    cfg = compose_train(f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "channels=raw_depth",
                        "+data.z_depth_scale_um=10.0")
    check_config(cfg)  # the config checks know the channel
    channels = list(cfg.channels.list)

    # Preparation computes and stores it.
    angle, fused = write_pair(tmp_path / "raw", 1, "nucleus", 0, shape=SHAPE, scale=3.0)
    h5 = [convert_tiff(path, tmp_path / "h5").output for path in (angle, fused)]
    with h5py.File(h5[0], "r") as handle:
        stored = handle["data/z_depth"][...]
    with h5py.File(h5[1], "r") as handle:
        assert "data/z_depth" not in handle  # a fused file holds the target only
    step = stored[1, 0, 0]
    np.testing.assert_allclose(stored[:, 5, 7], np.arange(SHAPE[0]) * step)
    expected = np.tanh(stored / 10.0)

    # Training data read it at its dataset, scaled by the config's scale.
    module = build_module(cfg, {})
    assert module.in_channels == 2 and module.hparams.channel_scales_um["z_depth"] == 10.0
    dataset = PatchDataset([tuple(h5)], channels, (8, 16, 16), fixed=True,
                           channel_scales_um=module.hparams.channel_scales_um)
    item = dataset[0]
    window = tuple(slice(int(o), int(o) + p) for o, p in zip(item["origin"], (8, 16, 16),
                                                             strict=True))
    np.testing.assert_allclose(item["input"][1].numpy(), expected[window], atol=1e-6)

    # Prediction streams it from a TIFF and reads it back from a prepared file.
    for source, computed in ((angle, True), (h5[0], False)):
        opened = open_volume(source)
        try:
            network_input = NetworkInput(opened, module.hparams.channels,
                                         module.hparams.channel_scales_um)
            assert ("z_depth" in network_input.fields) == computed
            slab = np.concatenate([network_input.slab(z, min(z + 6, SHAPE[0]))
                                   for z in range(0, SHAPE[0], 6)], axis=1)
        finally:
            opened.close()
        np.testing.assert_allclose(slab[1], expected, atol=1e-6, err_msg=str(source))
