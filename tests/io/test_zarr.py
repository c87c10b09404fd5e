"""OME-Zarr volumes: written slab by slab with the voxel size in the NGFF metadata, read back
lazily; plain zarr arrays and singleton t/c axes read too; bad stores are one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmc.core.errors import FmcInputError
from fmc.io.metadata import VolumeMeta

zarr = pytest.importorskip("zarr")

from fmc.io.zarr_volume import ZarrVolume, open_lazy, write_zarr_slabs  # noqa: E402

VOLUME = np.random.default_rng(0).random((20, 40, 50)).astype(np.float32)


def test_round_trip_slab_by_slab_with_the_voxel_size(tmp_path: Path):
    meta = VolumeMeta(study=2, content="nucleus", spacing_zyx=(2.0, 0.5, 0.5),
                      original={"microscope": "x"})
    path = write_zarr_slabs(tmp_path / "a.ome.zarr", (VOLUME[z:z + 6] for z in range(0, 20, 6)),
                            VOLUME.shape, VOLUME.dtype, meta)
    group = zarr.open_group(str(path), mode="r")
    image = group.attrs["multiscales"][0]
    assert image["version"] == "0.4" and [a["name"] for a in image["axes"]] == ["z", "y", "x"]
    assert image["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.5, 0.5]
    volume = open_lazy(path)
    assert isinstance(volume, ZarrVolume) and volume.shape == VOLUME.shape
    np.testing.assert_array_equal(volume[3:9], VOLUME[3:9])
    assert (volume.meta.study, volume.meta.content, volume.meta.spacing_zyx) == \
        (2, "nucleus", (2.0, 0.5, 0.5))
    assert volume.meta.original == {"microscope": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.ome.zarr"]  # no temporary left


def test_plain_arrays_and_singleton_axes(tmp_path: Path):
    zarr.save_array(str(tmp_path / "plain.zarr"), VOLUME)
    plain = ZarrVolume(tmp_path / "plain.zarr")
    assert plain.shape == VOLUME.shape and plain.meta.spacing_zyx is None
    root = zarr.open_group(str(tmp_path / "tczyx.ome.zarr"), mode="w", zarr_format=2)
    root.create_array("0", data=VOLUME[None, None])
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
        *({"name": a, "type": "space", "unit": "nanometer"} for a in "zyx")],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 2000, 500, 500]}]}]}]
    volume = ZarrVolume(tmp_path / "tczyx.ome.zarr")
    assert volume.shape == VOLUME.shape and volume.meta.spacing_zyx == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(volume[5], VOLUME[5])


def test_a_store_that_is_not_an_image_is_refused(tmp_path: Path):
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(FmcInputError, match="without OME-NGFF multiscales"):
        ZarrVolume(tmp_path / "empty.zarr")
    with pytest.raises(FmcInputError, match="not a readable zarr store"):
        ZarrVolume(tmp_path / "missing.zarr")


SMALL = np.random.default_rng(1).random((8, 16, 12)).astype(np.float32)


def image(path: Path, data: np.ndarray, axes="zyx", scale=None, units="micrometer",
          multiscales=None, chunks=(4, 4, 4)) -> Path:
    """An OME-NGFF 0.4 group at ``path`` holding ``data`` (stored as given) with these axes."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("0", data=data, chunks=chunks[: data.ndim] + (1,) * (data.ndim - 3))
    unit = units if isinstance(units, (list, tuple)) else [units] * len(axes)
    kinds = {"t": "time", "c": "channel"}
    declared = [{"name": a, "type": kinds.get(a, "space"),
                 **({"unit": u} if u is not None and a in "zyx" else {})}
                for a, u in zip(axes, unit, strict=True)]
    root.attrs["multiscales"] = multiscales if multiscales is not None else [{
        "version": "0.4", "axes": declared,
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": scale if scale is not None else [1.0] * len(axes)}]}]}]
    return path


@pytest.mark.parametrize("axes", ["xyz", "yzx", "zxy", "cxtzy"])
def test_axes_in_any_order_are_read_as_zyx(tmp_path: Path, axes: str):
    """The store's axis order is honoured: the volume is the ZYX one, sliced lazily."""
    spatial = [a for a in axes if a in "zyx"]
    stored = SMALL.transpose(["zyx".index(a) for a in spatial])
    stored = stored.reshape([stored.shape[spatial.index(a)] if a in "zyx" else 1 for a in axes]
                            ) if len(axes) == 3 else np.expand_dims(
        stored, [i for i, a in enumerate(axes) if a not in "zyx"])
    size = {"z": 2.0, "y": 0.6, "x": 0.5}
    volume = ZarrVolume(image(tmp_path / "v.ome.zarr", stored, axes,
                              scale=[size.get(a, 1.0) for a in axes]))
    assert volume.shape == SMALL.shape and volume.meta.spacing_zyx == (2.0, 0.6, 0.5)
    for key in [np.s_[2:5], 3, np.s_[:, 4], np.s_[..., 1], np.s_[::-2, 1:9:3, 2],
                np.s_[1:3, ::-1, -1], np.s_[[1, 3]], np.s_[5:2], np.s_[-1, -2, -3]]:
        np.testing.assert_array_equal(volume[key], SMALL[key])
    with pytest.raises(IndexError):
        volume[8]


def test_a_slab_of_a_transposed_store_reads_only_its_planes(tmp_path: Path):
    volume = ZarrVolume(image(tmp_path / "v.ome.zarr", SMALL.transpose(2, 1, 0).copy(), "xyz"))
    keys = []

    class Recording:
        def __init__(self, array):
            self.array = array

        def __getitem__(self, key):
            keys.append(key)
            return self.array[key]

    volume._array = Recording(volume._array)
    np.testing.assert_array_equal(volume[3:5], SMALL[3:5])
    assert keys == [(slice(0, 12, 1), slice(0, 16, 1), slice(3, 5, 1))]  # z is the last axis


@pytest.mark.parametrize("axes,shape,message", [
    ("zyq", (8, 16, 12), "include ['q'], which fmc does not know"),
    ("zyxx", (8, 16, 12, 1), "each of z, y, x exactly once"),
    ("zy", (8, 16, 12), "each of z, y, x exactly once"),
    ("tzyx", (8, 16, 12), "declares 4 axes"),
    ("czyx", (2, 8, 16, 12), "expected a 3D image"),
])
def test_unknown_duplicate_or_miscounted_axes_are_refused(tmp_path: Path, axes, shape, message):
    path = image(tmp_path / "v.ome.zarr", np.zeros(shape, np.float32), axes)
    with pytest.raises(FmcInputError, match=message.replace("[", r"\[").replace("]", r"\]")) \
            as error:
        ZarrVolume(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("unit,um", [("micrometer", 1.0), ("um", 1.0), ("µm", 1.0),
                                     ("micron", 1.0), ("nanometer", 1e-3), ("millimeter", 1e3),
                                     ("angstrom", 1e-4), (None, 1.0)])
def test_known_units_are_converted_to_um(tmp_path: Path, unit, um):
    path = image(tmp_path / "v.ome.zarr", SMALL, scale=[2.0, 4.0, 8.0], units=unit)
    assert ZarrVolume(path).meta.spacing_zyx == pytest.approx((2.0 * um, 4.0 * um, 8.0 * um))


@pytest.mark.parametrize("units", [["micrometer", "micrometer", "parsec"], "furlong", 3])
def test_an_unknown_unit_is_refused_naming_the_known_ones(tmp_path: Path, units):
    path = image(tmp_path / "v.ome.zarr", SMALL, units=units)
    with pytest.raises(FmcInputError, match="not a length unit fmc reads") as error:
        ZarrVolume(path)
    assert "micrometer" in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("scale,message", [
    ([0.0, 1.0, 1.0], "positive and finite"), ([-2.0, 1.0, 1.0], "positive and finite"),
    ([1.0, float("nan"), 1.0], "positive and finite"), ([1.0, 1.0, float("inf")], "positive"),
    ([1.0, 1.0], "2 entries for 3 axes"), ([1.0, 1.0, 1.0, 1.0], "4 entries for 3 axes"),
    ([1.0, "a", 1.0], "not a number"), ([True, 1.0, 1.0], "not a number"),
    ("1 1 1", "not a list of numbers")])
def test_bad_scales_are_refused_in_one_line(tmp_path: Path, scale, message):
    path = image(tmp_path / "v.ome.zarr", SMALL, scale=scale)
    with pytest.raises(FmcInputError, match=message) as error:
        ZarrVolume(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def _dataset(**changes):
    return [{"axes": ["z", "y", "x"], "datasets": [{"path": "0", **changes}]}]


@pytest.mark.parametrize("multiscales,message", [
    ({"datasets": []}, "not a list of objects"), (["image"], "not a list of objects"),
    ([{"axes": ["z", "y", "x"]}], "'datasets' is missing or empty"),
    ([{"datasets": []}], "'datasets' is missing or empty"),
    ([{"datasets": "0"}], "'datasets' is missing or empty"),
    ([{"datasets": [{}]}], "has no path"), ([{"datasets": [{"path": 0}]}], "has no path"),
    ([{"datasets": [{"path": "1"}]}], "dataset path '1' is not in the store"),
    (_dataset(coordinateTransformations="scale"), "is not a list of objects"),
    (_dataset(coordinateTransformations=[[1, 1, 1]]), "is not a list of objects"),
    (_dataset(coordinateTransformations=[{"type": "scale"}]), "not a list of numbers"),
    (_dataset(coordinateTransformations=[{"type": "scale", "scale": [1, 1, 1]}] * 2),
     "2 scale transformations"),
    ([{"axes": "zyx", "datasets": [{"path": "0"}]}], "'axes' is a str, not a list"),
    ([{"axes": [{"type": "space"}] * 3, "datasets": [{"path": "0"}]}], "has no name"),
])
def test_malformed_multiscales_are_one_line_refusals(tmp_path: Path, multiscales, message):
    path = image(tmp_path / "v.ome.zarr", SMALL, multiscales=multiscales)
    with pytest.raises(FmcInputError, match=message) as error:
        ZarrVolume(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_dataset_path_naming_a_group_is_refused(tmp_path: Path):
    path = image(tmp_path / "v.ome.zarr", SMALL, multiscales=[{"datasets": [{"path": "g"}]}])
    zarr.open_group(str(path), mode="a").create_group("g")
    with pytest.raises(FmcInputError, match="is a group, not an array"):
        ZarrVolume(path)


@pytest.mark.parametrize("dtype,what", [(bool, "bool"), (np.complex64, "complex64"),
                                        ("<U3", "<U3"), ([("a", "<i4"), ("b", "<f4")], "a")])
def test_arrays_without_intensities_are_refused(tmp_path: Path, dtype, what):
    path = image(tmp_path / "v.ome.zarr", np.zeros((8, 16, 12), dtype))
    with pytest.raises(FmcInputError, match="unsupported data type") as error:
        ZarrVolume(path)
    assert what in str(error.value) and "integer or float intensities" in str(error.value)


def test_a_bad_voxel_size_is_never_written(tmp_path: Path):
    for spacing in [(-1.0, 0.5, 0.5), (0.0, 1.0, 1.0), (float("nan"), 1.0, 1.0)]:
        with pytest.raises(FmcInputError, match="not three positive finite numbers"):
            write_zarr_slabs(tmp_path / "a.ome.zarr", [SMALL], SMALL.shape, SMALL.dtype,
                             VolumeMeta(spacing_zyx=spacing))
    assert list(tmp_path.iterdir()) == []


def test_malformed_fmc_keys_are_ignored(tmp_path: Path):
    path = image(tmp_path / "v.ome.zarr", SMALL, scale=[2.0, 1.0, 1.0])
    zarr.open_group(str(path), mode="a").attrs["fmc"] = {"original": ["a", "b"], "study": [1]}
    volume = ZarrVolume(path)
    assert volume.meta.original == {} and volume.meta.spacing_zyx == (2.0, 1.0, 1.0)
