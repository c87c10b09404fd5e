"""Tests of the synthetic pair generator (fmc.simulation.synth, .specimen, .lightsheet;
fmc.core.studies)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from fmc.core.errors import FmcConfigError
from fmc.core.studies import STUDIES, get_profile
from fmc.evaluation.metrics import ssim_against
from fmc.io.tiff import read_volume
from fmc.simulation.lightsheet import OpticsParams
from fmc.simulation.specimen import render_specimen
from fmc.simulation.synth import (
    GENERATOR_VERSION,
    VERSION_FILE,
    SynthSettings,
    ensure_default_dataset,
    generate_pair,
    input_weight,
    pair_paths,
    pair_rng,
    resolve_geometry,
    write_pair,
)
from tests.conftest import run_in_process

ROOT = Path(__file__).resolve().parents[2]
# Tiny but holding a few cells: demo spacing (scale 3), 24×48×48 voxels = 72×28×28 µm for S1.
TINY = dict(shape=(24, 48, 48), scale=3.0)
FILL = SynthSettings(field_of_view="fill")


def _near_far(shape, axes):
    near, far = [slice(None)] * 3, [slice(None)] * 3
    for axis in axes:
        near[axis] = slice(0, shape[axis] // 2)
        far[axis] = slice(shape[axis] // 2, None)
    return tuple(near), tuple(far)


def test_files_readable_with_challenge_metadata(tmp_path):
    angle, fused = write_pair(tmp_path, 3, "membrane", 7, seed=1, **TINY)
    assert angle.name == "image_7_membrane_angle.tif"
    assert fused.name == "image_7_membrane_fused.tif"
    for path in (angle, fused):
        volume, meta = read_volume(path)
        assert volume.shape == (24, 48, 48) and volume.dtype == np.uint16
        assert meta.study == 3 and meta.content == "membrane"
        assert meta.spacing_zyx == pytest.approx((3.0, 1.17, 1.17))
        for key in ("channel", "study", "physical_size_x", "physical_size_y", "physical_size_z"):
            assert key in meta.original
        # A camera offset, no saturation, no negative wrap-around.
        assert 50 < volume.min() and volume.max() < 60000


def test_same_seed_gives_byte_identical_files(tmp_path):
    first = write_pair(tmp_path / "a", 1, "nucleus", 0, seed=5, **TINY)
    second = write_pair(tmp_path / "b", 1, "nucleus", 0, seed=5, **TINY)
    other = write_pair(tmp_path / "c", 1, "nucleus", 0, seed=6, **TINY)
    for a, b, c in zip(first, second, other, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("study", [1, 4])
def test_far_half_is_worse_and_near_half_is_the_input(study):
    geometry = dict(shape=(32, 64, 64), scale=3.0)
    # The specimen fills the volume: near and far halves are the specimen's.
    view, fused, meta = generate_pair(study, "nucleus", 0, seed=2, settings=FILL, **geometry)
    axes = get_profile(study).degradation_axis_indices
    near, far = _near_far(view.shape, axes)
    ssim_near = ssim_against(fused[near], [view[near]])[0]
    ssim_far = ssim_against(fused[far], [view[far]])[0]
    assert ssim_far < ssim_near - 0.1
    # Attenuation: on the far half the view holds less signal (above the offset) than the
    # fusion, which takes it from the opposite view there; on the near half they agree.
    from fmc.simulation.synth import study_params

    offset = study_params(study)[1].offset_adu  # study 4 has another camera

    def signal(volume, region):
        return (volume[region].astype(float) - offset).sum()

    assert signal(view, far) < 0.9 * signal(fused, far)
    assert signal(view, near) == pytest.approx(signal(fused, near), rel=0.1)
    # Where the input's blending weight is 1 the target holds the input's own counts.
    weight = np.broadcast_to(input_weight(study, "nucleus", 0, seed=2, settings=FILL, **geometry),
                             view.shape)
    assert (weight == 1).mean() > 0.2
    np.testing.assert_array_equal(fused[weight == 1], view[weight == 1])
    assert not np.array_equal(fused[weight == 0], view[weight == 0])


def test_nucleus_and_membrane_structures_differ():
    shape, spacing = resolve_geometry(1, (32, 96, 96), 3.0)
    survives, edges = {}, {}
    for content in ("nucleus", "membrane"):
        specimen = render_specimen(shape, spacing, content, pair_rng(0, 1, content, 0))
        values = specimen.fluorescence[specimen.tissue > 0.5]
        bright = specimen.fluorescence > 0.5 * np.percentile(values, 99)
        # Blobs survive a lateral 5×5 opening; thin sheets do not.
        opened = ndimage.binary_opening(bright, structure=np.ones((1, 5, 5), bool))
        survives[content] = opened.sum() / bright.sum()
        # Thin sheets: many bright voxels have a dim lateral neighbour.
        boundary = bright & ~np.roll(bright, 1, axis=2) | bright & ~np.roll(bright, 1, axis=1)
        edges[content] = boundary.sum() / bright.sum()
    assert survives["membrane"] < 0.5 * survives["nucleus"]
    assert edges["membrane"] > 1.5 * edges["nucleus"]


def test_clean_target_mode_is_easier():
    view, fused, _ = generate_pair(1, "nucleus", 0, seed=0, **TINY)
    _, clean, meta = generate_pair(1, "nucleus", 0, seed=0, settings=SynthSettings(target="clean"),
                                   **TINY)
    assert meta.original["target_mode"] == "clean"
    assert not np.array_equal(clean, fused)


def test_too_small_and_unknown_values_raise():
    with pytest.raises(FmcConfigError, match="too small"):
        generate_pair(1, "nucleus", 0, shape=(8, 16, 16), settings=FILL)
    # Inside a specimen of the study's size, any volume is a valid field of view.
    assert generate_pair(1, "nucleus", 0, shape=(8, 16, 16), scale=3.0)[0].shape == (8, 16, 16)
    with pytest.raises(FmcConfigError, match="valid studies are 1, 2, 3, 4, 5"):
        get_profile(9)
    with pytest.raises(FmcConfigError, match="nucleus, membrane"):
        generate_pair(1, "cytoplasm", 0, **TINY)
    assert set(STUDIES) == {1, 2, 3, 4, 5}


def test_default_dataset_is_created_once(tmp_path, caplog):
    root = tmp_path / "synthetic"
    with caplog.at_level(logging.INFO, logger="fmc.synth"):
        assert ensure_default_dataset(root, images_per_combo=1) == root
    assert sum("no data root given" in r.getMessage() for r in caplog.records) == 1
    files = sorted(p.name for p in root.glob("*.tif"))
    assert len(files) == 20  # 5 studies × 2 contents × (angle, fused)
    studies = {read_volume(root / f)[1].study for f in files}
    assert studies == {1, 2, 3, 4, 5}
    stamp = (root / files[0]).stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fmc.synth"):
        ensure_default_dataset(root, images_per_combo=1)
    assert not caplog.records and (root / files[0]).stat().st_mtime_ns == stamp
    # A dataset of another generator version is rebuilt.
    (root / VERSION_FILE).write_text("1\n")
    with caplog.at_level(logging.INFO, logger="fmc.synth"):
        ensure_default_dataset(root, images_per_combo=1)
    assert any("no data root given" in r.getMessage() for r in caplog.records)
    assert (root / VERSION_FILE).read_text().strip() == str(GENERATOR_VERSION)


def test_studies_have_their_own_specimen_and_optics_and_overrides_win():
    from omegaconf import OmegaConf

    from fmc.simulation.synth import study_params
    from fmc.simulation.synth_command import SynthCommandSettings

    specimen, optics = study_params(3)
    assert optics.attenuation_length_um == STUDIES[3].synthetic_optics["attenuation_length_um"]
    assert specimen.cell_diameter_um == STUDIES[3].synthetic_specimen["cell_diameter_um"]
    assert study_params(1)[1] == OpticsParams()  # study 1 keeps the defaults
    assert len({study_params(s)[1] for s in STUDIES}) == len(STUDIES)  # all differ
    # A command-line value changes that one field of the study's own parameters.
    from fmc.core.cli import CONFIG_DIR

    synth = OmegaConf.load(Path(CONFIG_DIR) / "synth.yaml")  # its defaults, as the command has them
    settings = SynthCommandSettings.from_config(OmegaConf.merge(
        synth, {"output": "unused", "study": 3, "optics": {"photons": 100}})).simulation()
    assert settings.optics.photons == 100
    assert settings.optics.attenuation_length_um == optics.attenuation_length_um
    assert settings.specimen is None  # the study's own
    # Different optics give different pairs from the same seed.
    first = generate_pair(3, "nucleus", 0, **TINY)[0]
    brighter = generate_pair(3, "nucleus", 0, settings=settings, **TINY)[0]
    assert not np.array_equal(first, brighter)


def _cli(*args, cwd):
    """The real command line, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "fmc.synth", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_cli_writes_pairs(tmp_path):
    result = run_in_process("fmc.synth", f"output={tmp_path / 'o'}", "study=2", "content=nucleus",
                            "n=2", "start=3", "shape=[24,48,48]", "scale=3", "seed=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for index in (3, 4):
        for path in pair_paths(tmp_path / "o", index, "nucleus"):
            assert path.exists()


def test_the_command_line_exits_2_with_one_line(tmp_path):
    """fmc.synth's exit-2 contract through the real command line (the cases below: in-process)."""
    result = _cli(f"output={tmp_path / 'o'}", "study=9", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("fmc.synth: error: ") and result.stderr.count("\n") == 1
    assert "valid studies are 1, 2, 3, 4, 5" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("args, message", [
    (["study=9"], "valid studies are 1, 2, 3, 4, 5"),
    (["content=cytoplasm"], "valid contents are nucleus, membrane"),
    (["shape=[8,8,8]", "field_of_view=fill"], "too small"),
    (["field_of_view=outside"], "field_of_view='outside': choose one of inside, fill"),
])
def test_cli_bad_input_exits_2_without_traceback(tmp_path, args, message):
    result = run_in_process("fmc.synth", f"output={tmp_path / 'o'}", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_small_volume_is_the_middle_of_a_specimen_of_the_studys_size():
    """field_of_view=inside: a volume smaller than the study's specimen is the centred crop of
    the pair simulated at the specimen's extent, so even a small recording holds many cells."""
    from fmc.simulation.synth import simulation_box

    profile = get_profile(1)
    shape, spacing = resolve_geometry(1, (24, 48, 48), 3.0)
    box, crop = simulation_box(1, shape, spacing)
    assert box == profile.demo_shape  # the demo volume is the specimen's whole extent
    assert [c.stop - c.start for c in crop] == [24, 48, 48]
    small, small_fused, _ = generate_pair(1, "nucleus", 0, seed=4, **TINY)
    whole, whole_fused, _ = generate_pair(1, "nucleus", 0, seed=4)
    np.testing.assert_array_equal(small, whole[crop])
    np.testing.assert_array_equal(small_fused, whole_fused[crop])
    # At the demo size (or larger) nothing changes, and "fill" keeps the old behaviour.
    assert simulation_box(1, profile.demo_shape, resolve_geometry(1)[1])[0] == profile.demo_shape
    assert simulation_box(1, shape, spacing, "fill")[0] == shape
    with pytest.raises(FmcConfigError, match="field_of_view"):
        simulation_box(1, shape, spacing, "outside")
