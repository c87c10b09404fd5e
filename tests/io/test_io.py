"""fmc.io.tiff: metadata in every flavour, round trips, lazy reading, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fmc.core.errors import FmcInputError
from fmc.io import tiff as fio
from fmc.io.metadata import VolumeMeta, to_json
from fmc.io.tiff import TiffVolume, read_volume, write_volume

ARRAY = (np.arange(9 * 40 * 50) % 4099).reshape(9, 40, 50).astype(np.uint16)
SPACING = (1.01, 0.388, 0.388)


def test_round_trip_keeps_array_metadata_and_extra_keys(tmp_path: Path) -> None:
    meta = VolumeMeta(study=5, content="nucleus", spacing_zyx=SPACING,
                      original={"channel": "Nucleus", "microscope": "mesoSPIM", "angle": 90})
    path = write_volume(tmp_path / "a.tif", ARRAY, meta)
    array, read = read_volume(path)
    np.testing.assert_array_equal(array, ARRAY)
    assert (read.study, read.content, read.dtype, read.shape) == (5, "nucleus", "uint16",
                                                                 ARRAY.shape)
    assert read.spacing_zyx == pytest.approx(SPACING)
    assert read.original["microscope"] == "mesoSPIM" and read.original["angle"] == 90
    # A second round trip changes nothing: what fmc writes, fmc reads back identically.
    write_volume(tmp_path / "b.tif", array, read)
    again = read_volume(tmp_path / "b.tif")[1]
    assert again == read


def test_written_file_speaks_to_imagej_and_the_challenge_reader(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "a.tif", ARRAY,
                        VolumeMeta(study=3, content="membrane", spacing_zyx=SPACING))
    with tifffile.TiffFile(path) as tif:
        # The organisers' reader: shaped metadata, else ImageJ metadata (plus 'shape').
        keys = (tif.shaped_metadata or [None])[0] or tif.imagej_metadata
        assert keys["channel"] == "membrane" and int(keys["study"]) == 3
        assert keys["physical_size_x"] == pytest.approx(0.388)
        assert keys["physical_size_z"] == pytest.approx(1.01)
        # Fiji: an ImageJ hyperstack with Z spacing, unit and resolution tags.
        assert tif.is_imagej and tif.imagej_metadata["spacing"] == pytest.approx(1.01)
        assert tif.imagej_metadata["unit"] == "um"
        page = tif.pages.first
        numerator, denominator = page.tags["XResolution"].value
        assert numerator / denominator == pytest.approx(1 / 0.388, rel=1e-6)
        assert page.is_tiled and len(tif.pages) == ARRAY.shape[0]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int32])
def test_round_trip_dtypes(tmp_path: Path, dtype) -> None:
    array = ARRAY.astype(dtype)
    write_volume(tmp_path / "a.tif", array, VolumeMeta(study=1, spacing_zyx=SPACING))
    read, meta = read_volume(tmp_path / "a.tif")
    assert read.dtype == array.dtype and meta.study == 1
    np.testing.assert_array_equal(read, array)
    assert meta.spacing_zyx == pytest.approx(SPACING)


def write_challenge_style(path: Path) -> None:
    """As the organisers' template writes: shaped JSON keys, resolution, BigTIFF, 128 tiles."""
    tifffile.imwrite(path, ARRAY, bigtiff=True, resolution=(1 / 0.195, 1 / 0.195), tile=(128, 128),
                     metadata={"channel": "nucleus", "study": "2", "physical_size_x": 0.195,
                               "physical_size_y": 0.195, "physical_size_z": 1.0, "unit": "um",
                               "axes": "ZYX", "spacing": 1.0})


def write_imagej_style(path: Path) -> None:
    """As Fiji writes: hyperstack description (spacing, unit) + resolution tags, no study."""
    tifffile.imwrite(path, ARRAY, imagej=True, resolution=(1 / 0.195, 1 / 0.195),
                     metadata={"spacing": 1.0, "unit": "micron", "axes": "ZYX"})


def write_ome_style(path: Path) -> None:
    """OME-TIFF with PhysicalSize* in nanometres for Z, micrometres for XY."""
    tifffile.imwrite(path, ARRAY, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.195, "PhysicalSizeY": 0.195, "PhysicalSizeZ": 1000.0,
        "PhysicalSizeZUnit": "nm"})


def write_key_value_style(path: Path) -> None:
    """RWTH-GE's parser reads key=value lines from the ImageDescription tag."""
    tifffile.imwrite(path, ARRAY, description="study=2\nchannel=NUCLEUS\nphysical_size_x=0.195\n"
                     "physical_size_y=0.195\nphysical_size_z=1.0", metadata=None)


@pytest.mark.parametrize("writer,study,content", [
    (write_challenge_style, 2, "nucleus"), (write_imagej_style, None, None),
    (write_ome_style, None, None), (write_key_value_style, 2, "nucleus")])
def test_every_metadata_flavour_is_read(tmp_path: Path, writer, study, content) -> None:
    path = tmp_path / "v.tif"
    writer(path)
    array, meta = read_volume(path)
    np.testing.assert_array_equal(array, ARRAY)
    assert (meta.study, meta.content) == (study, content)
    assert meta.spacing_zyx == pytest.approx((1.0, 0.195, 0.195))
    # ...and survives a round trip through fmc's writer.
    write_volume(tmp_path / "copy.tif", array, meta)
    assert read_volume(tmp_path / "copy.tif")[1].spacing_zyx == pytest.approx(meta.spacing_zyx)


def test_unknown_metadata_is_none_not_a_guess(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "v.tif", ARRAY, metadata={"study": "abc", "channel": "actin"})
    _, meta = read_volume(tmp_path / "v.tif")
    assert meta.study is None and meta.content is None and meta.spacing_zyx is None
    assert meta.original["study"] == "abc"


def test_singleton_axes_are_squeezed(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "v.tif", ARRAY[None, :, None], imagej=True,
                     metadata={"axes": "TZCYX"})
    array, meta = read_volume(tmp_path / "v.tif")
    assert array.shape == ARRAY.shape == meta.shape
    with TiffVolume(tmp_path / "v.tif") as volume:
        np.testing.assert_array_equal(volume[2:5], ARRAY[2:5])


def test_lazy_volume_reads_slabs(tmp_path: Path) -> None:
    write_volume(tmp_path / "a.tif", ARRAY, VolumeMeta(study=4))
    with TiffVolume(tmp_path / "a.tif") as volume:
        assert volume.shape == ARRAY.shape and volume.meta.study == 4
        np.testing.assert_array_equal(volume[3:7], ARRAY[3:7])
        np.testing.assert_array_equal(volume[4], ARRAY[4])
        np.testing.assert_array_equal(volume[:], ARRAY)


def test_bigtiff_above_threshold(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fio, "BIGTIFF_THRESHOLD", 1000)
    write_volume(tmp_path / "big.tif", ARRAY, VolumeMeta(spacing_zyx=SPACING))
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
    np.testing.assert_array_equal(read_volume(tmp_path / "big.tif")[0], ARRAY)


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError):
        write_volume(tmp_path / "a.tif", ARRAY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make,message", [
    (lambda p: tifffile.imwrite(p, ARRAY[0]), "2D image"),
    (lambda p: tifffile.imwrite(p, np.zeros((2, 3, 16, 16), np.uint16), imagej=True,
                                metadata={"axes": "TZYX"}), "4 non-singleton axes"),
    (lambda p: p.write_text("not an image"), "not a readable TIFF"),
    (lambda p: p.write_bytes(b""), "not a readable TIFF"),
])
def test_bad_files_raise_naming_file_and_problem(tmp_path: Path, make, message) -> None:
    path = tmp_path / "bad.tif"
    make(path)
    for reader in (read_volume, TiffVolume):
        with pytest.raises(FmcInputError, match=message) as error:
            reader(path)
        assert str(path) in str(error.value)


def test_truncated_file(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "a.tif", ARRAY, VolumeMeta(), tile=None)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FmcInputError, match="truncated|corrupt") as error:
        read_volume(path)
    assert str(path) in str(error.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FmcInputError, match="no such file"):
        read_volume(tmp_path / "nope.tif")


def test_meta_json_is_serialisable() -> None:
    meta = VolumeMeta(study=1, content="nucleus", spacing_zyx=SPACING, original={"a": 1})
    assert json.loads(to_json(meta))["spacing_zyx"] == list(SPACING)


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    import os

    path = write_volume(tmp_path / "a.tif", ARRAY)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


PLANES = (np.arange(20 * 16 * 16) % 500).reshape(20, 16, 16).astype(np.uint16)


@pytest.mark.parametrize("dtype,what", [(bool, "bool (a mask"), (np.complex64, "complex64")])
def test_data_without_intensities_is_refused(tmp_path: Path, dtype, what) -> None:
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, PLANES.astype(dtype))
    for reader in (read_volume, TiffVolume):
        with pytest.raises(FmcInputError, match="unsupported data type") as error:
            reader(path)
        assert what in str(error.value) and str(path) in str(error.value)


def test_other_integer_and_float_types_are_read(tmp_path: Path) -> None:
    for dtype in (np.int8, np.float16, np.uint32):
        tifffile.imwrite(tmp_path / "v.tif", PLANES.astype(dtype))
        assert read_volume(tmp_path / "v.tif")[0].dtype == dtype


def declare_more_planes(path: Path, old: bytes, new: bytes) -> None:
    """Rewrite the plane count in a file's metadata (same length): the file then holds fewer
    planes than it declares, as one cut short at a page boundary does."""
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))


@pytest.mark.parametrize("flavour", ["imagej", "ome", "shaped"])
def test_fewer_planes_than_the_metadata_declare_is_incomplete(tmp_path: Path, flavour) -> None:
    path = tmp_path / "v.tif"
    if flavour == "imagej":
        tifffile.imwrite(path, PLANES[:13], imagej=True, metadata={"axes": "ZYX"})
        declare_more_planes(path, b"images=13\nslices=13", b"images=20\nslices=20")
    elif flavour == "ome":
        tifffile.imwrite(path, PLANES[:13], ome=True, metadata={"axes": "ZYX"})
        declare_more_planes(path, b'SizeZ="13"', b'SizeZ="20"')
    else:
        tifffile.imwrite(path, PLANES[:13], metadata={"axes": "ZYX"})
        declare_more_planes(path, b"[13, 16, 16]", b"[20, 16, 16]")
    for reader in (read_volume, TiffVolume):
        with pytest.raises(FmcInputError, match="incomplete: holds 13 of 20 planes") as error:
            reader(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def append_pages(path: Path, planes: np.ndarray) -> None:
    """What a program still writing the stack does: add pages at the end of the file."""
    for plane in planes:
        tifffile.imwrite(path, plane, append=True, metadata=None, photometric="minisblack")


def growing(tmp_path: Path) -> Path:
    """The first 13 planes of a 20-plane stack, written page by page without metadata (as a
    program writes while it acquires): a valid 13-plane TIFF as long as nothing is added."""
    path = tmp_path / "growing.tif"
    tifffile.imwrite(path, PLANES[:13], metadata=None, photometric="minisblack")
    return path


def test_a_file_that_grows_while_it_is_read_is_refused(tmp_path: Path) -> None:
    path = growing(tmp_path)
    with TiffVolume(path) as volume:  # unchanged: read as the 13-plane volume it is
        np.testing.assert_array_equal(volume[:], PLANES[:13])
    volume = TiffVolume(path)
    np.testing.assert_array_equal(volume[0:4], PLANES[:4])
    append_pages(path, PLANES[13:])
    with pytest.raises(FmcInputError, match="changed while it was read") as error:
        volume[4:13]
    assert str(error.value) == (f"{path}: changed while it was read (is another program still "
                                "writing it?); try again when it is complete")
    with pytest.raises(FmcInputError, match="changed while it was read"):
        volume.close()
    volume.close()  # closed once: no second report
    with TiffVolume(path) as volume:  # complete now: read whole
        assert volume.shape == PLANES.shape


def test_a_change_after_the_last_read_is_reported_on_close(tmp_path: Path) -> None:
    path = growing(tmp_path)
    with pytest.raises(FmcInputError, match="changed while it was read"):
        with TiffVolume(path) as volume:
            volume[:]
            append_pages(path, PLANES[13:14])
    # ... but an error already on its way is not replaced by it.
    with pytest.raises(KeyError):
        with TiffVolume(path) as volume:
            append_pages(path, PLANES[14:15])
            raise KeyError("first")


def test_read_volume_refuses_a_file_that_grows_during_the_read(tmp_path: Path,
                                                               monkeypatch) -> None:
    path = growing(tmp_path)
    original = tifffile.TiffPageSeries.asarray

    def read_then_grow(series, *args, **kwargs):
        data = original(series, *args, **kwargs)
        append_pages(path, PLANES[13:])
        return data

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", read_then_grow)
    with pytest.raises(FmcInputError, match="changed while it was read"):
        read_volume(path)


def test_a_bad_voxel_size_is_never_written(tmp_path: Path) -> None:
    for spacing in [(-1.0, 0.5, 0.5), (0.0, 1.0, 1.0), (1.0, float("inf"), 1.0)]:
        with pytest.raises(FmcInputError, match="not three positive finite numbers"):
            write_volume(tmp_path / "a.tif", PLANES, VolumeMeta(spacing_zyx=spacing))
        with pytest.raises(FmcInputError, match="not three positive finite numbers"):
            fio.write_volume_slabs(tmp_path / "b.tif", [PLANES], PLANES.shape, PLANES.dtype,
                                   VolumeMeta(spacing_zyx=spacing))
    assert list(tmp_path.iterdir()) == []
