"""napari reads fmc's TIFF and H5 files with their voxel size: the reader's layer data, and the
npe2 manifest that points napari at it (validated with npe2 when installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmc.io.lazy_array import LazyVolume
from fmc.io.metadata import VolumeMeta
from fmc.io.napari_reader import napari_get_reader, read_layers
from fmc.io.tiff import write_volume

FMC = Path(__file__).resolve().parents[2] / "fmc"


def test_a_tiff_opens_in_micrometres(tmp_path: Path):
    volume = np.arange(8 * 16 * 16, dtype=np.uint16).reshape(8, 16, 16)
    path = write_volume(tmp_path / "image_3_nucleus_angle.tif", volume,
                        VolumeMeta(study=3, content="nucleus", spacing_zyx=(2.0, 0.39, 0.39)))
    reader = napari_get_reader(str(path))
    [(data, attributes, kind)] = reader(str(path))
    assert isinstance(data, LazyVolume) and data.shape == volume.shape  # read on demand
    np.testing.assert_array_equal(data[3], volume[3])
    np.testing.assert_array_equal(np.asarray(data), volume)
    assert kind == "image" and attributes["scale"] == (2.0, 0.39, 0.39)
    assert attributes["name"] == "image_3_nucleus_angle"
    assert attributes["metadata"] == {"study": 3, "content": "nucleus", "kind": "angle"}


def test_an_h5_opens_as_one_layer_per_channel(h5_root: Path):
    path = sorted(h5_root.glob("*_angle.h5"))[0]
    layers = read_layers(path)
    names = [attributes["name"].split()[-1] for _, attributes, _ in layers]
    assert names[0] == "raw_image" and "surface_distance" in names
    assert all(len(attributes["scale"]) == 3 for _, attributes, _ in layers)
    assert [attributes["visible"] for _, attributes, _ in layers][:2] == [True, False]
    import h5py

    data = layers[0][0]
    assert isinstance(data, LazyVolume) and layers[0][1]["contrast_limits"] == (0.0, 1.0)
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(data[5, 10:20], handle["data/raw_image"][5, 10:20])


def test_an_ome_zarr_opens_in_micrometres(tmp_path: Path):
    pytest.importorskip("zarr")
    from fmc.io.zarr_volume import write_zarr_slabs

    volume = np.random.default_rng(0).random((8, 16, 16), dtype=np.float32)
    meta = VolumeMeta(study=2, content="membrane", spacing_zyx=(1.5, 0.3, 0.3))
    path = write_zarr_slabs(tmp_path / "image_2_membrane_angle.ome.zarr",
                            [volume[:4], volume[4:]], volume.shape, volume.dtype, meta)
    [(data, attributes, _)] = napari_get_reader(str(path))(str(path))
    assert attributes["scale"] == pytest.approx((1.5, 0.3, 0.3))
    assert attributes["metadata"]["kind"] == "angle"
    np.testing.assert_array_equal(data[2:5, :, 3], volume[2:5, :, 3])


def test_other_files_are_left_to_other_readers(tmp_path: Path):
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.png")]) is None


def test_the_manifest_names_the_reader():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(FMC / "napari.yaml")
    [command] = manifest.contributions.commands
    assert command.python_name == "fmc.io.napari_reader:napari_get_reader"
    reader = manifest.contributions.readers[0]
    assert {"*.h5", "*.tif", "*.zarr"} <= set(reader.filename_patterns)
    assert reader.accepts_directories  # a zarr store is a folder
