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
