"""Nothing the user owns is changed: inputs, checkpoints and files fmc did not write.

Each test runs the command as a user types it (in-process, :func:`tests.conftest.run_in_process`)
with an output that would replace something, and asserts the refusal (exit 2, one line) and that
every file under the tmp folder has the bytes it had before (:func:`tree_hashes`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import write_volume
from tests.conftest import assert_user_error, run_in_process, save_tiny_checkpoint

PREDICT = ["patch=[16,32,32]", "batch_size=1", "progress=false"]


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (links not followed), by relative path."""
    hashes = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            if path.is_symlink():
                hashes[str(path.relative_to(folder))] = "link->" + os.readlink(path)
            else:
                hashes[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@pytest.fixture
def views(tmp_path: Path) -> Path:
    """Two 16×32×32 views of study 1 with their metadata."""
    folder = tmp_path / "views"
    rng = np.random.default_rng(3)
    for name in ("image_1_nucleus_angle.tif", "image_2_nucleus_angle.tif"):
        volume = rng.gamma(2.0, 200.0, (16, 32, 32)).astype(np.uint16)
        write_volume(folder / name, volume, VolumeMeta(study=1, content="nucleus",
                                                       spacing_zyx=(3.0, 0.585, 0.585)))
    return folder


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_tiny_checkpoint(tmp_path / "models" / "tiny.ckpt")


def test_predict_never_writes_over_its_inputs(tmp_path: Path, views: Path, checkpoint: Path):
    before = tree_hashes(tmp_path)
    link = tmp_path / "link_to_views"
    link.symlink_to(views)
    before = tree_hashes(tmp_path)
    spellings = [views, tmp_path / "views" / ".." / "views", link]
    for output in spellings:
        result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={views}",
                                f"output={output}", *PREDICT)
        assert_user_error(result, "would replace the input", "give another output")
    # One file as input, its own folder as output.
    single = views / "image_1_nucleus_angle.tif"
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={single}",
                            f"output={views}", *PREDICT)
    assert_user_error(result, f"output={views / single.name}", "would replace the input")
    assert tree_hashes(tmp_path) == before


def test_predict_replaces_its_own_outputs_and_nothing_else(tmp_path: Path, views: Path,
                                                           checkpoint: Path):
    output = tmp_path / "predictions"
    first = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={views}",
                           f"output={output}", *PREDICT)
    assert first.returncode == 0, first.stderr
    again = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={views}",
                           f"output={output}", *PREDICT)
    assert again.returncode == 0, again.stderr  # its own earlier predictions: replaced
    # A file of the same name that fmc did not write (here: a copy of a view) is the user's.
    (output / "image_2_nucleus_angle.tif").write_bytes(
        (views / "image_2_nucleus_angle.tif").read_bytes())
    before = tree_hashes(tmp_path)
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={views}",
                            f"output={output}", *PREDICT)
    assert_user_error(result, "image_2_nucleus_angle.tif", "a file fmc did not write is there")
    assert tree_hashes(tmp_path) == before


def test_challenge_never_writes_over_its_cases(tmp_path: Path, views: Path, checkpoint: Path):
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "models.yaml").write_text(
        f"models:\n  - {{study: 1, content: nucleus, ckpt: {checkpoint}}}\n")
    before = tree_hashes(tmp_path)
    result = run_in_process("fmc.challenge", f"input={views}", f"output={views}/.",
                            f"registry={registry}", *PREDICT)
    assert_user_error(result, "would replace the input")
    assert tree_hashes(tmp_path) == before


def test_predict_into_an_ome_zarr_input_is_refused(tmp_path: Path, views: Path,
                                                   checkpoint: Path):
    pytest.importorskip("zarr")
    from fmc.io.tiff import read_volume
    from fmc.io.zarr_volume import write_zarr_slabs

    volume, meta = read_volume(views / "image_1_nucleus_angle.tif")
    store = write_zarr_slabs(tmp_path / "stores" / "image_1_nucleus_angle.ome.zarr", [volume],
                             volume.shape, volume.dtype, meta)
    before = tree_hashes(tmp_path)
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={store}",
                            f"output={store.parent}", "output_format=ome-zarr", *PREDICT)
    assert_user_error(result, "would replace the input")
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={store}",
                            f"output={store}", *PREDICT)
    assert_user_error(result, "is an input")
    assert tree_hashes(tmp_path) == before


def test_export_never_writes_over_the_checkpoint_or_a_foreign_file(tmp_path: Path,
                                                                   checkpoint: Path):
    foreign = tmp_path / "models" / "mine.pt"
    foreign.write_bytes(b"the user's own file")
    before = tree_hashes(tmp_path)
    refused = [(checkpoint, "would replace the input"),
               (checkpoint.parent / ".." / "models" / checkpoint.name, "would replace the input"),
               (foreign, "a file fmc did not write is there"), (tmp_path / "models", "a folder")]
    for out, message in refused:
        assert_user_error(run_in_process("fmc.export", f"ckpt={checkpoint}",
                                         "format=torchscript", f"output={out}"), message)
    assert tree_hashes(tmp_path) == before


def test_a_failed_export_leaves_the_earlier_one(tmp_path: Path, checkpoint: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "export" / "tiny.pt"
    first = run_in_process("fmc.export", f"ckpt={checkpoint}", "format=torchscript", f"output={out}")
    assert first.returncode == 0, first.stderr
    again = run_in_process("fmc.export", f"ckpt={checkpoint}", "format=torchscript", f"output={out}")
    assert again.returncode == 0, again.stderr  # fmc's own earlier export: replaced
    before = tree_hashes(tmp_path)
    monkeypatch.setattr("fmc.inference.export.TOLERANCE", -1.0)  # every check fails
    failed = run_in_process("fmc.export", f"ckpt={checkpoint}", "format=torchscript", f"output={out}")
    assert_user_error(failed, "differs from the checkpoint", "nothing written")
    assert tree_hashes(tmp_path) == before
    assert not list(out.parent.glob(".*.part"))


def test_synth_and_prepare_never_replace_a_file_they_did_not_write(tmp_path: Path,
                                                                   raw_folder: Path):
    # fmc.synth's names are the challenge's: pointed at a folder of real recordings it must not
    # regenerate them. Its own earlier pairs it may write again.
    own = tmp_path / "synthetic"
    args = ["study=2", "content=nucleus", "n=1", "shape=[24,48,48]", "scale=3"]
    assert run_in_process("fmc.synth", *args, f"output={own}").returncode == 0
    assert run_in_process("fmc.synth", *args, f"output={own}").returncode == 0
    real = tmp_path / "recordings"
    real.mkdir()
    (real / "image_0_nucleus_angle.tif").write_bytes(
        (raw_folder / "image_0_nucleus_angle.tif").read_bytes())
    before = tree_hashes(tmp_path)
    result = run_in_process("fmc.synth", *args, f"output={real}")
    assert_user_error(result, "image_0_nucleus_angle.tif: a file fmc did not write is there")
    assert tree_hashes(tmp_path) == before
    # fmc.prepare: an H5 of the same name that fmc did not write is reported and kept.
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    foreign = prepared / "image_0_nucleus_angle.h5"
    foreign.write_bytes(b"someone else's HDF5")
    result = run_in_process("fmc.prepare", f"input={raw_folder}", f"output={prepared}",
                            "progress=false")
    assert_user_error(result, "1 of 6 file(s) failed")
    assert "a file fmc did not write is there" in result.stdout
    assert foreign.read_bytes() == b"someone else's HDF5"


def test_a_tiff_unit_that_is_no_length_is_not_read_as_um(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture):
    import tifffile

    from fmc.io.tiff import read_volume

    volume = np.ones((4, 8, 8), np.uint16)
    for unit, expected in (("parsec", None), ("pixel", None), ("um", (2.0, 0.5, 0.5)),
                           ("nm", (0.002, 0.0005, 0.0005))):
        path = tmp_path / f"{unit}.tif"
        tifffile.imwrite(path, volume, imagej=True, resolution=(2.0, 2.0),
                         metadata={"spacing": 2.0, "unit": unit, "axes": "ZYX"})
        _, meta = read_volume(path)
        assert meta.spacing_zyx == (pytest.approx(expected) if expected else None), unit
    assert "unit 'parsec' is not a length unit fmc reads" in caplog.text


def test_a_folder_given_as_checkpoint_points_to_the_registry(tmp_path: Path, views: Path):
    result = run_in_process("fmc.predict", f"ckpt={tmp_path}", f"input={views}",
                            f"output={tmp_path / 'out'}", *PREDICT)
    assert_user_error(result, f"ckpt={tmp_path}: a folder", f"ckpt=auto registry={tmp_path}")
