"""LazyVolume: numpy's indexing on a volume read plane range by plane range, reading only the
planes a key asks for."""

from __future__ import annotations

import numpy as np
import pytest

from fmc.io.lazy_array import LazyVolume


def counted(volume: np.ndarray):
    reads: list[tuple[int, int]] = []

    def read(z0: int, z1: int) -> np.ndarray:
        reads.append((z0, z1))
        return volume[z0:z1].copy()

    return LazyVolume(read, volume.shape, volume.dtype), reads


VOLUME = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
KEYS = [0, -1, 3, slice(None), slice(1, 4), slice(None, None, 2), slice(5, 1, -2), (2, 1),
        (2, slice(None), 3), (slice(1, 3), 2), (Ellipsis, 1), (1, Ellipsis), (Ellipsis,),
        ([4, 0, 4],), (np.array([True, False, True, False, False, True]),), (slice(2, 2),),
        (slice(None), slice(None), slice(None, None, -1)), (1, None), ()]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_every_key_reads_what_numpy_reads(key):
    lazy, _ = counted(VOLUME)
    np.testing.assert_array_equal(lazy[key], VOLUME[key])


def test_a_plane_reads_one_plane():
    lazy, reads = counted(VOLUME)
    assert lazy[3, 1:3].shape == (2, 4)
    assert lazy[1:3].shape == (2, 5, 4)
    assert reads == [(3, 4), (1, 3)]
    assert lazy.shape == (6, 5, 4) and lazy.ndim == 3 and lazy.dtype == np.float32
    assert lazy.size == VOLUME.size and len(lazy) == 6
    np.testing.assert_array_equal(np.asarray(lazy), VOLUME)


def test_out_of_range_planes_are_index_errors():
    lazy, _ = counted(VOLUME)
    with pytest.raises(IndexError):
        lazy[6]
    with pytest.raises(IndexError):
        lazy[-7]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float16, np.float32,
                                   np.float64])
def test_intensity_types_pass(dtype):
    from fmc.io.lazy_array import check_intensity_dtype

    assert check_intensity_dtype(dtype, "v.tif") == np.dtype(dtype)


@pytest.mark.parametrize("dtype", [bool, np.complex128, object, "U4", "S2", "V8",
                                   [("a", "<i4")], "datetime64[s]", "not a dtype"])
def test_other_types_are_one_line_refusals(dtype):
    from fmc.core.errors import FmcInputError
    from fmc.io.lazy_array import check_intensity_dtype

    with pytest.raises(FmcInputError, match=r"^v\.tif: unsupported data type .*; fmc needs "
                       "integer or float intensities$"):
        check_intensity_dtype(dtype, "v.tif")


def test_a_file_stamp_changes_with_the_file(tmp_path):
    from fmc.core.errors import FmcInputError
    from fmc.io.lazy_array import check_unchanged, file_stamp

    path = tmp_path / "a.bin"
    path.write_bytes(b"1234")
    stamp = file_stamp(path)
    check_unchanged(path, stamp)
    replacement = tmp_path / "b.bin"
    replacement.write_bytes(b"1234")
    replacement.replace(path)  # same size, another file: a new inode
    with pytest.raises(FmcInputError, match="changed while it was read"):
        check_unchanged(path, stamp)
    path.unlink()
    with pytest.raises(FmcInputError, match="changed while it was read"):
        check_unchanged(path, stamp)
