"""Prediction's slab-wise inputs equal what fmc.prepare stores; fallback and registry logic."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from fmc.inference.network_input import NetworkInput, open_volume
from fmc.inference.plane_buffer import PlaneBuffer
from fmc.inference.registry import ModelRegistry, RegistryEntry
from fmc.io.h5 import RAW_IMAGE
from fmc.io.metadata import VolumeMeta
from fmc.models.fallback import DifferenceWeighting
from fmc.preprocessing.channel_specs import CHANNELS as SPECS
from fmc.preprocessing.channel_specs import scale_channel
from fmc.preprocessing.conversion import convert_tiff
from fmc.simulation.synth import write_pair

CHANNELS = ["raw_image", "surface_distance", "light_map"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    angle, _ = write_pair(folder / "raw", 1, "nucleus", 0, shape=(24, 48, 56), scale=3.0)
    result = convert_tiff(angle, folder / "h5")
    assert result.status == "written", result.message
    return angle, result.output


def test_slabs_from_a_tiff_equal_the_prepared_channels(prepared):
    angle, h5 = prepared
    opened = open_volume(angle)
    try:
        source = NetworkInput(opened, CHANNELS)
        slabs = np.concatenate([source.slab(z, min(z + 5, 24)) for z in range(0, 24, 5)], axis=1)
    finally:
        opened.close()
    with h5py.File(h5, "r") as handle:
        stored = [scale_channel(name, handle[SPECS[name].dataset][:]) for name in CHANNELS]
    for index, name in enumerate(CHANNELS):
        np.testing.assert_allclose(slabs[index], stored[index], atol=1e-5, err_msg=name)


def test_an_h5_input_reuses_its_stored_channels_and_names_the_source_tiff(prepared):
    angle, h5 = prepared
    opened = open_volume(h5)
    try:
        assert opened.output_name == angle.name
        assert opened.meta.study == 1 and opened.meta.content == "nucleus"
        source = NetworkInput(opened, CHANNELS)
        assert source.fields == {}  # nothing recomputed
        slab = source.slab(3, 9)
        with h5py.File(h5, "r") as handle:
            np.testing.assert_array_equal(slab[0], handle[RAW_IMAGE][3:9])
        assert source.intensity_stats.high > source.intensity_stats.low  # for uint16 output
    finally:
        opened.close()


def test_difference_weighting_keeps_the_input_where_nothing_changed():
    shape = (20, 40, 40)
    inputs = np.random.default_rng(0).random(shape).astype(np.float32)
    prediction = inputs.copy()
    prediction[5:15, 10:30, 10:30] += 1.0  # the network changed one block only
    weighting = DifferenceWeighting(shape, grid=20, max_size=3, sigma=1.0)
    for z in range(0, 20, 6):
        weighting.add(z, inputs[z:z + 6], prediction[z:z + 6])
    weights = weighting.finish()
    assert weights.min() == 0 and weights.max() == 1
    blended = np.concatenate([weighting.blend(z, inputs[z:z + 6], prediction[z:z + 6])
                              for z in range(0, 20, 6)])
    centre = (slice(8, 12), slice(18, 22), slice(18, 22))
    np.testing.assert_allclose(blended[centre], prediction[centre], atol=1e-5)
    np.testing.assert_allclose(blended[0, 0], inputs[0, 0], atol=1e-5)
    # Unchanged volume: the blend is the input itself.
    same = DifferenceWeighting(shape)
    same.add(0, inputs, inputs)
    same.finish()
    np.testing.assert_allclose(same.blend(0, inputs, inputs), inputs, atol=1e-6)


@pytest.mark.parametrize("threshold", [1e12, 0])
def test_plane_buffer_in_memory_and_on_disk(tmp_path: Path, threshold):
    data = np.random.default_rng(1).random((7, 9, 11)).astype(np.float32)
    with PlaneBuffer(data.shape, threshold, tmp_path) as buffer:
        assert buffer.on_disk == (threshold == 0)
        for z in range(0, 7, 3):
            buffer.write(z, data[z:z + 3])
        np.testing.assert_array_equal(buffer.read(2, 6), data[2:6])
    assert list(tmp_path.iterdir()) == []  # temporary file removed


def _registry(*entries) -> ModelRegistry:
    return ModelRegistry([RegistryEntry(Path(f"{s}_{c}.ckpt"), s, c) for s, c in entries],
                         Path("reg"))


def test_registry_picks_the_exact_study_and_content():
    registry = _registry((1, "nucleus"), (1, "membrane"), (5, "nucleus"))
    choice = registry.choose(VolumeMeta(study=1, content="membrane"), (222, 731, 860))
    assert (choice.entries[0].study, choice.entries[0].content) == (1, "membrane")


def test_registry_falls_back_to_the_nearest_study_of_the_same_content():
    registry = _registry((1, "nucleus"), (3, "membrane"), (5, "nucleus"))
    # No study in the metadata, a study-5-like shape and spacing → the study-5 nucleus model.
    meta = VolumeMeta(content="nucleus", spacing_zyx=(1.0, 0.39, 0.39))
    choice = registry.choose(meta, (300, 1900, 1900))
    assert choice.entries[0].study == 5 and "no study in the metadata" in choice.reason
    # Unknown study 9, study-1-like shape → study 1.
    choice = registry.choose(VolumeMeta(study=9, content="nucleus"), (220, 730, 860))
    assert choice.entries[0].study == 1 and "unknown study 9" in choice.reason
    # Study 2 has no model: same content, nearest other study.
    choice = registry.choose(VolumeMeta(study=2, content="nucleus"), (264, 2008, 1091))
    assert choice.entries[0].content == "nucleus" and "no model for study 2" in choice.reason


def test_registry_falls_back_to_any_model_when_the_content_has_none():
    registry = _registry((1, "nucleus"), (5, "nucleus"))
    choice = registry.choose(VolumeMeta(study=3, content="membrane"), (891, 817, 817))
    assert choice.entries[0].content == "nucleus" and "no membrane model at all" in choice.reason
    choice = registry.choose(VolumeMeta(), (80, 1920, 1920))  # nothing known at all
    assert choice.entries[0].study == 5 and "no content in the metadata" in choice.reason
