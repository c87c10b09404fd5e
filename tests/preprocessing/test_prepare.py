"""``python -m fmc.prepare`` and its pieces: H5 layout, resume, lists, bad inputs."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from fmc.io.h5 import COMPLETE_ATTR, FOREGROUND, RAW_IMAGE, is_complete, read_attrs
from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import write_volume
from fmc.preprocessing.channel_specs import CHANNELS
from fmc.preprocessing.splits import read_list, split_counts
from fmc.simulation.synth import write_pair
from tests.conftest import assert_user_error, run_command, run_in_process

TINY = dict(shape=(24, 48, 48), scale=3.0)


@pytest.fixture(scope="module")
def tiff_folder(tmp_path_factory) -> Path:
    """Five tiny synthetic pairs (study 1 nucleus ×3, study 3 membrane ×2)."""
    folder = tmp_path_factory.mktemp("raw")
    for index, (study, content) in enumerate([(1, "nucleus")] * 3 + [(3, "membrane")] * 2):
        write_pair(folder, study, content, index, **TINY)
    return folder


def prepare(*args: str, **kwargs):
    """fmc.prepare's ``main`` in this process (see ``run_in_process``)."""
    return run_in_process("fmc.prepare", "progress=false", *args, **kwargs)


def test_prepare_writes_h5_files_and_lists(tiff_folder: Path, tmp_path: Path):
    out = tmp_path / "h5"
    result = prepare(f"input={tiff_folder}", f"output={out}")
    assert result.returncode == 0, result.stderr
    assert "10 written" in result.stdout
    with h5py.File(out / "image_0_nucleus_angle.h5") as angle:
        assert set(angle["data"]) == {"raw_image", "surface_distance", "light_map"}
        raw = angle[RAW_IMAGE][...]
        assert raw.dtype == np.float32 and raw.shape == (24, 48, 48)
        # Percentile-normalised, not clipped: p2 -> 0, p99.8 -> 1.
        assert np.percentile(raw, 2) == pytest.approx(0, abs=1e-6)
        assert np.percentile(raw, 99.8) == pytest.approx(1, abs=1e-5) and raw.max() > 1
        distance = angle[CHANNELS["surface_distance"].dataset][...]
        assert distance.max() > 0 > distance.min()
        assert angle[CHANNELS["light_map"].dataset][...].min() == 0
        assert angle.attrs[COMPLETE_ATTR]
    attrs = read_attrs(out / "image_0_nucleus_angle.h5")
    assert attrs["study"] == 1 and attrs["content"] == "nucleus" and attrs["kind"] == "angle"
    assert attrs["spacing_zyx"] == pytest.approx([3.0, 0.585, 0.585])
    assert attrs["source"] == "image_0_nucleus_angle.tif" and "fmc_version" in attrs
    with h5py.File(out / "image_0_nucleus_fused.h5") as fused:
        assert set(fused["data"]) == {"raw_image", "foreground"}
        coordinates = fused[FOREGROUND][...]
        image = fused[RAW_IMAGE][...]
        assert coordinates.shape[1] == 3 and len(coordinates) > 100
        threshold = fused.attrs["foreground_threshold"]
        assert np.all(image[tuple(coordinates.T)] >= threshold)
    lists = out / "lists"
    rows = {split: (lists / f"study1_nucleus_{split}.csv").read_text().splitlines()
            for split in ("train", "val", "test")}
    assert sum(len(r) for r in rows.values()) == 3 and all(len(r) == 1 for r in rows.values())
    assert rows["train"][0].count(";") == 1 and rows["train"][0].endswith("_fused.h5")
    all_membrane = sum(len((lists / f"all_membrane_{s}.csv").read_text().splitlines())
                       for s in ("train", "val", "test"))
    assert all_membrane == 2
    for angle, fused in read_list(lists / "study1_nucleus_train.csv"):
        assert angle.exists() and fused.exists()


def test_rerun_skips_complete_files_and_rebuilds_unfinished(tiff_folder: Path, tmp_path: Path):
    out = tmp_path / "h5"
    assert prepare(f"input={tiff_folder}", f"output={out}").returncode == 0
    kept = out / "image_1_nucleus_angle.h5"
    before = kept.stat().st_mtime_ns
    # A killed run: an unfinished final-named file and a leftover temporary of a dead process.
    unfinished = out / "image_0_nucleus_fused.h5"
    with h5py.File(unfinished, "a") as handle:
        del handle.attrs[COMPLETE_ATTR]
    leftover = out / ".image_2_nucleus_angle.h5.999999999.part"
    leftover.write_bytes(b"half")
    result = prepare(f"input={tiff_folder}", f"output={out}")
    assert result.returncode == 0, result.stderr
    assert "1 written, 9 already complete" in result.stdout
    assert is_complete(unfinished) and not leftover.exists()
    assert kept.stat().st_mtime_ns == before


def test_parallel_equals_serial(tiff_folder: Path, tmp_path: Path):
    assert prepare(f"input={tiff_folder}", f"output={tmp_path / 'a'}", "workers=1").returncode == 0
    # Two worker processes: the real command line, not forked from this test process.
    parallel = run_command("fmc.prepare", "progress=false", f"input={tiff_folder}",
                           f"output={tmp_path / 'b'}", "workers=2")
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    for path in sorted((tmp_path / "a").glob("*.h5")):
        with h5py.File(path) as one, h5py.File(tmp_path / "b" / path.name) as two:
            for name in one["data"]:
                np.testing.assert_array_equal(one["data"][name][...], two["data"][name][...])
    for path in sorted((tmp_path / "a" / "lists").glob("*.csv")):
        assert path.read_text() == (tmp_path / "b" / "lists" / path.name).read_text()


def test_bad_files_are_reported_and_the_others_go_on(tiff_folder: Path, tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in tiff_folder.glob("image_[01]_*"):
        os.link(path, raw / path.name)
    (raw / "image_5_nucleus_angle.tif").write_text("not a tiff")          # unreadable
    write_volume(raw / "image_5_nucleus_fused.tif", np.ones((24, 48, 48), np.uint16),
                 VolumeMeta(study=1, content="nucleus"))                    # constant
    tifffile.imwrite(raw / "image_6_nucleus_angle.tif", np.zeros((24, 48, 48), np.uint16))
    out = tmp_path / "h5"
    result = prepare(f"input={raw}", f"output={out}")
    assert_user_error(result, "1 of 7 file(s) failed", "image_5_nucleus_angle.tif")
    log = result.stdout + result.stderr
    assert "image_6_nucleus_angle.tif has no partner" in log      # lone file: warned, converted
    assert "no specimen found" in log and "constant volume" in log
    assert is_complete(out / "image_6_nucleus_angle.h5")
    assert is_complete(out / "image_5_nucleus_fused.h5")
    assert not (out / "image_5_nucleus_angle.h5").exists()
    assert is_complete(out / "image_1_nucleus_fused.h5")


@pytest.mark.parametrize("args,message", [
    (["input=/nonexistent/folder"], "input folder does not exist"),
    (["workers=0"], "workers=0: give a whole number >= 1 (conf/prepare.yaml)"),
    (["split.train=0.9"], "must be ≥ 0 and sum to 1"),
    (["split.val=abc"], "split.val=abc: give a finite number >= 0 (conf/prepare.yaml)"),
    (["split.seed=-1"], "split.seed=-1: give a whole number >= 0 (conf/prepare.yaml)"),
    (["max_foreground=0"], "max_foreground=0: give a whole number >= 1"),
    (["working_spacing_um=0"], "working_spacing_um=0: give a finite number > 0"),
    (["compression=zip"], "compression=zip: choose one of lzf, gzip, none (conf/prepare.yaml)"),
    (["overwrite=maybe"], "overwrite=maybe: give true or false (conf/prepare.yaml)"),
    (["progress=maybe"], "progress=maybe: give true or false (conf/prepare.yaml)"),
])
def test_bad_configuration(tiff_folder: Path, tmp_path: Path, args, message):
    # PrepareSettings reads conf/prepare.yaml's keys before any file is converted: nothing is
    # written, not even the output folder.
    base = [f"input={tiff_folder}", f"output={tmp_path / 'h5'}"]
    result = prepare(*base, *args)
    assert_user_error(result, message)
    assert not (tmp_path / "h5").exists()


def test_the_output_cannot_be_the_input(tiff_folder: Path):
    before = sorted(tiff_folder.iterdir())
    result = prepare(f"input={tiff_folder}", f"output={tiff_folder}")
    assert_user_error(result, f"output={tiff_folder} is the input folder: choose another folder")
    assert sorted(tiff_folder.iterdir()) == before


def test_the_settings_are_read_once_from_the_config():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fmc.core.cli import CONFIG_DIR
    from fmc.preprocessing.prepare import PrepareSettings

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=["input=raw", "compression=LZF",
                                                        "split.seed=3"])
    settings = PrepareSettings.from_config(cfg)
    assert settings.input == Path("raw") and settings.output is None
    assert settings.compression == "lzf" and settings.split_seed == 3
    assert settings.split == (0.7, 0.1, 0.2) and settings.workers == 1
    assert settings.overwrite is False and settings.progress is True


def test_empty_folder(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    # The real command line: the exit-2 contract (one line, no traceback) of fmc.prepare.
    result = run_command("fmc.prepare", "progress=false", f"input={tmp_path / 'empty'}",
                         f"output={tmp_path / 'h5'}")
    assert_user_error(result, "no .tif/.tiff file found")


@pytest.mark.parametrize("n,expected", [(1, (1, 0, 0)), (2, (2, 0, 0)), (3, (1, 1, 1)),
                                        (10, (7, 1, 2)), (20, (14, 2, 4)), (101, (71, 10, 20))])
def test_split_counts(n, expected):
    assert split_counts(n, (0.7, 0.1, 0.2)) == expected


def test_hand_written_lists_are_accepted(tiff_folder: Path, tmp_path: Path):
    out = tmp_path / "h5"
    assert prepare(f"input={tiff_folder}", f"output={out}").returncode == 0
    mine = tmp_path / "my_list.csv"
    mine.write_text(f"angle,fused\n{out / 'image_0_nucleus_angle.h5'},"
                    f"{out / 'image_0_nucleus_fused.h5'}\n\n"
                    "image_1_nucleus_angle.h5;image_1_nucleus_fused.h5\n")
    pairs = read_list(mine, root=out)
    assert [p[0].name for p in pairs] == ["image_0_nucleus_angle.h5", "image_1_nucleus_angle.h5"]
    broken = tmp_path / "broken.csv"
    broken.write_text("image_9_nucleus_angle.h5;image_9_nucleus_fused.h5\n")
    with pytest.raises(Exception, match="does not exist"):
        read_list(broken, root=out)
