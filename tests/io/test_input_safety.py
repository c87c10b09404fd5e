"""Inputs read as they are meant, or refused in one line, through the commands users run.

Each fault of an input (OME-Zarr axes in another order, unknown axes or units, bad scales,
malformed multiscales, data that are no intensities, a TIFF holding fewer planes than it
declares, a TIFF that grows while it is read) goes through a real command in this process
(``tests/conftest.py::run_in_process``): exit 2, one line ``fmc.<command>: error: <file>:
<problem>`` on stderr, no traceback, no output, the input unchanged. The readers' own cases are
in ``test_zarr.py`` and ``test_io.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import TiffVolume, read_volume, write_volume
from tests.conftest import assert_user_error, run_in_process, save_tiny_checkpoint

zarr = pytest.importorskip("zarr")

SHAPE = (8, 16, 16)
VIEW = np.random.default_rng(3).gamma(2.0, 200.0, SHAPE).astype(np.uint16)
META = VolumeMeta(study=1, content="nucleus", spacing_zyx=(3.0, 0.585, 0.585))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def digest(path: Path) -> str:
    """A hash of a file, or of every file under a folder (an OME-Zarr store)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    hashed = hashlib.sha256()
    for file in files:
        hashed.update(str(file.relative_to(path.parent)).encode() + file.read_bytes())
    return hashed.hexdigest()


def ome_zarr(path: Path, data: np.ndarray, axes="zyx", scale=(3.0, 0.585, 0.585),
             units="micrometer", multiscales=None) -> Path:
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("0", data=data)
    root.attrs["multiscales"] = multiscales if multiscales is not None else [{
        "version": "0.4", "axes": [{"name": a, "type": "space", "unit": units} for a in axes],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": list(scale)}]}]}]
    return path


def tiff_declaring_more(path: Path) -> Path:
    """An ImageJ hyperstack whose metadata declare 9 planes, holding 8 (a stack cut short)."""
    tifffile.imwrite(path, VIEW, imagej=True, metadata={"axes": "ZYX"})
    data = path.read_bytes()
    path.write_bytes(data.replace(b"images=8\nslices=8", b"images=9\nslices=9"))
    return path


# name -> (make the input in a folder, fragments of the one line)
FAULTS: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "zarr_unknown_axis": (lambda d: ome_zarr(d / "v.ome.zarr", VIEW, axes="zyq"),
                          ("['q'], which fmc does not know",)),
    "zarr_axes_miscounted": (lambda d: ome_zarr(d / "v.ome.zarr", VIEW[None], axes="zyx"),
                             ("declares 3 axes ['z', 'y', 'x'] for an array of 4 dimensions",)),
    "zarr_unit_parsec": (lambda d: ome_zarr(d / "v.ome.zarr", VIEW, units="parsec"),
                         ("unit 'parsec', not a length unit", "micrometer")),
    "zarr_negative_scale": (lambda d: ome_zarr(d / "v.ome.zarr", VIEW, scale=(-3, 0.5, 0.5)),
                            ("scale of axis 'z' is -3; a voxel size must be positive",)),
    "zarr_short_scale": (lambda d: ome_zarr(d / "v.ome.zarr", VIEW, scale=(0.5, 0.5)),
                         ("2 entries for 3 axes",)),
    "zarr_empty_datasets": (lambda d: ome_zarr(d / "v.ome.zarr", VIEW, multiscales=[
        {"axes": ["z", "y", "x"], "datasets": []}]), ("malformed OME-NGFF multiscales",)),
    "zarr_missing_path": (lambda d: ome_zarr(d / "v.ome.zarr", VIEW, multiscales=[
        {"datasets": [{"path": "s0"}]}]), ("dataset path 's0' is not in the store",)),
    "zarr_bool": (lambda d: ome_zarr(d / "v.ome.zarr", VIEW > 300),
                  ("unsupported data type bool",)),
    "tiff_bool": (lambda d: (tifffile.imwrite(d / "v.tif", VIEW > 300), d / "v.tif")[1],
                  ("unsupported data type bool",)),
    "tiff_complex": (lambda d: (tifffile.imwrite(d / "v.tif", VIEW.astype(np.complex64)),
                                d / "v.tif")[1], ("unsupported data type complex64",)),
    "tiff_incomplete_imagej": (lambda d: tiff_declaring_more(d / "v.tif"),
                               ("incomplete: holds 8 of 9 planes",)),
}


def assert_refused(result, source: Path, *fragments: str) -> None:
    assert_user_error(result, *fragments)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fmc.predict: error: "), result.stderr
    assert str(source) in lines[0]


@pytest.mark.parametrize("fault", FAULTS)
def test_predict_refuses_a_faulty_input_in_one_line(checkpoint: Path, tmp_path: Path, fault):
    folder = tmp_path / "in"
    folder.mkdir()
    make, fragments = FAULTS[fault]
    source = make(folder)
    before = digest(source)
    out = tmp_path / "out"
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={source}",
                            f"output={out}", "progress=false")
    assert_refused(result, source, *fragments)
    assert not out.exists() and digest(source) == before


def test_predict_refuses_a_tiff_that_grows_while_it_is_read(checkpoint: Path, tmp_path: Path,
                                                            monkeypatch):
    """A stack another program is still writing: it holds 8 planes when fmc opens it, and
    gains pages between fmc's reads. Before, it was predicted as an 8-plane volume."""
    source = tmp_path / "in" / "growing.tif"
    source.parent.mkdir()
    tifffile.imwrite(source, VIEW, metadata=None, photometric="minisblack")
    read = TiffVolume.__getitem__
    grown: list[bytes] = []

    def another_program_appends(volume, key):
        if not grown:  # the writer adds 4 planes after fmc opened the file
            for plane in VIEW[:4]:
                tifffile.imwrite(source, plane, append=True, metadata=None,
                                 photometric="minisblack")
            grown.append(source.read_bytes())
        return read(volume, key)

    monkeypatch.setattr(TiffVolume, "__getitem__", another_program_appends)
    out = tmp_path / "out"
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={source}",
                            f"output={out}", "progress=false")
    assert_refused(result, source, "changed while it was read (is another program still "
                   "writing it?); try again when it is complete")
    assert grown and source.read_bytes() == grown[0]  # fmc wrote nothing into it
    assert not out.exists() or not any(out.iterdir())  # no prediction, no .part


@pytest.mark.parametrize("axes", ["xyz", "yxz"])
def test_predict_reads_zarr_axes_in_their_declared_order(checkpoint: Path, tmp_path: Path,
                                                         axes: str):
    """A store whose axes are x, y, z is the same view as the ZYX TIFF: same prediction,
    same voxel size."""
    write_volume(tmp_path / "tif" / "v.tif", VIEW, META)
    stored = np.ascontiguousarray(VIEW.transpose(["zyx".index(a) for a in axes]))
    size = dict(zip("zyx", META.spacing_zyx, strict=True))
    source = ome_zarr(tmp_path / "zarr" / "v.ome.zarr", stored, axes,
                      scale=[size[a] for a in axes])
    before = digest(source)
    for name in ("tif", "zarr"):
        result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={tmp_path / name}",
                                f"output={tmp_path / (name + '_out')}", "progress=false")
        assert result.returncode == 0, result.stderr[-2000:]
    reference, reference_meta = read_volume(tmp_path / "tif_out" / "v.tif")
    predicted, meta = read_volume(tmp_path / "zarr_out" / "v.tif")
    assert predicted.shape == SHAPE
    np.testing.assert_array_equal(predicted, reference)
    assert meta.spacing_zyx == pytest.approx(reference_meta.spacing_zyx)
    assert digest(source) == before


def test_prepare_names_a_tiff_without_intensities(tmp_path: Path):
    raw = tmp_path / "raw"
    write_volume(raw / "image_0_nucleus_fused.tif", VIEW, META)
    tifffile.imwrite(raw / "image_0_nucleus_angle.tif", VIEW > 300)
    before = digest(raw / "image_0_nucleus_angle.tif")
    result = run_in_process("fmc.prepare", f"input={raw}", f"output={tmp_path / 'h5'}")
    assert_user_error(result, "1 of 2 file(s) failed")
    assert "image_0_nucleus_angle.tif: unsupported data type bool" in result.stdout + \
        result.stderr
    assert not list((tmp_path / "h5").rglob("image_0_nucleus_angle*.h5"))
    assert digest(raw / "image_0_nucleus_angle.tif") == before


def test_evaluate_refuses_an_incomplete_prediction(tmp_path: Path):
    raw, pred = tmp_path / "raw", tmp_path / "pred"
    write_volume(raw / "image_0_nucleus_angle.tif", VIEW, META)
    write_volume(raw / "image_0_nucleus_fused.tif", VIEW, META)
    source = tiff_declaring_more(pred.mkdir() or pred / "image_0_nucleus_angle.tif")
    before = digest(source)
    result = run_in_process("fmc.evaluate", f"input={raw}", f"prediction={pred}",
                            f"output={tmp_path / 'scores'}")
    assert_user_error(result, "incomplete: holds 8 of 9 planes")
    assert len(result.stderr.strip().splitlines()) == 1 and str(source) in result.stderr
    assert not (tmp_path / "scores" / "per_image.csv").exists() and digest(source) == before
