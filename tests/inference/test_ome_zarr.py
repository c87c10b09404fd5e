"""fmc.predict reads OME-Zarr views and writes OME-Zarr predictions (output_format=ome-zarr)
equal to the TIFF path's; fmc.evaluate scores them as it scores TIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmc.io.tiff import read_volume
from fmc.simulation.synth import write_pair
from tests.conftest import run_in_process, trained_looking_checkpoint

pytest.importorskip("zarr")


def test_ome_zarr_in_and_out_equal_the_tiff_path(tmp_path: Path):
    from fmc.io.zarr_volume import ZarrVolume, write_zarr_slabs

    checkpoint = trained_looking_checkpoint(tmp_path / "m.ckpt")
    raw = tmp_path / "raw"
    write_pair(raw, 1, "nucleus", 0, shape=(24, 48, 48), scale=3.0)
    view, meta = read_volume(raw / "image_0_nucleus_angle.tif")
    zarr_in = tmp_path / "zin"
    zarr_in.mkdir()
    write_zarr_slabs(zarr_in / "image_0_nucleus_angle.ome.zarr", [view], view.shape, view.dtype,
                     meta)
    runs = {"tif": (raw / "image_0_nucleus_angle.tif", "tiff"),
            "zarr_in": (zarr_in, "tiff"), "zarr_out": (raw, "ome-zarr")}
    for name, (source, output_format) in runs.items():
        result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={source}",
                                f"output={tmp_path / name}", f"output_format={output_format}",
                                "progress=false")
        assert result.returncode == 0, result.stderr[-2000:]
    reference, reference_meta = read_volume(tmp_path / "tif" / "image_0_nucleus_angle.tif")
    assert np.abs(reference - view.astype(np.float32) / view.max()).max() > 1e-3  # not identity
    from_zarr, from_zarr_meta = read_volume(tmp_path / "zarr_in" / "image_0_nucleus_angle.tif")
    np.testing.assert_array_equal(from_zarr, reference)
    assert from_zarr_meta.spacing_zyx == reference_meta.spacing_zyx
    written = ZarrVolume(tmp_path / "zarr_out" / "image_0_nucleus_angle.ome.zarr")
    np.testing.assert_array_equal(written.read(), reference)
    assert written.meta.spacing_zyx == pytest.approx(reference_meta.spacing_zyx)
    # fmc.evaluate finds and scores the OME-Zarr prediction as it does the TIFF one.
    scores = {}
    for name in ("tif", "zarr_out"):
        result = run_in_process("fmc.evaluate", f"input={raw}", f"prediction={tmp_path / name}",
                                f"output={tmp_path / ('scores_' + name)}")
        assert result.returncode == 0, result.stderr[-2000:]
        scores[name] = (tmp_path / f"scores_{name}" / "per_image.csv").read_text()
    assert scores["tif"] == scores["zarr_out"]
