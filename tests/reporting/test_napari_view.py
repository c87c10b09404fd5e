"""python -m fmc.view: view, prediction and fusion as napari layers in µm. The files and layers
are tested without napari; a real window is rendered and saved under Xvfb where napari is
installed (slow)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmc.reporting.napari_view import resolve_files, view_layers
from tests.conftest import assert_user_error, run_in_process

HAVE_NAPARI = importlib.util.find_spec("napari") is not None


def test_the_fusion_beside_the_view_is_found(raw_folder: Path, tmp_path: Path):
    view = raw_folder / "image_0_nucleus_angle.tif"
    files = resolve_files(view, None, "auto")
    assert files == {"view": view, "target": raw_folder / "image_0_nucleus_fused.tif"}
    alone = tmp_path / "image_0_nucleus_angle.tif"
    shutil.copy(view, alone)
    assert resolve_files(alone, view, "auto") == {"view": alone, "prediction": view}


def test_layers_are_named_by_role_and_keep_the_voxel_size(raw_folder: Path, h5_root: Path):
    view = raw_folder / "image_0_nucleus_angle.tif"
    layers = view_layers(resolve_files(view, sorted(h5_root.glob("*_angle.h5"))[0], "auto"))
    names = [layer.attributes["name"] for layer in layers]
    assert names[0] == "view: image_0_nucleus_angle"
    assert names[-1] == "target: image_0_nucleus_fused"
    assert any(name.startswith("prediction: ") and name.endswith("surface_distance")
               for name in names)  # an H5 brings each stored channel
    assert layers[0].attributes["scale"] == pytest.approx((1.0, 0.195, 0.195))
    assert layers[0].data[4].shape == (32, 32)


def test_bad_requests_are_one_line(raw_folder: Path, tmp_path: Path):
    result = run_in_process("fmc.view", f"view={tmp_path / 'missing.tif'}")
    assert_user_error(result, "view=", "no such file")
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    result = run_in_process("fmc.view", f"view={raw_folder / 'image_0_nucleus_angle.tif'}",
                            f"prediction={notes}")
    assert_user_error(result, "prediction=", "not a TIFF, OME-Zarr or H5 volume")


@pytest.mark.parametrize("setting,message", [
    ("ndisplay=4", "ndisplay=4: choose 2 or 3 (conf/view.yaml)"),
    ("ndisplay=abc", "ndisplay=abc: choose 2 or 3 (conf/view.yaml)"),
    ("ndisplay=2.5", "ndisplay=2.5: choose 2 or 3 (conf/view.yaml)"),
    ("grid=maybe", "grid=maybe: give true or false (conf/view.yaml)"),
])
def test_a_bad_setting_is_one_line_before_any_file_is_read(tmp_path: Path, setting, message):
    # ViewSettings reads conf/view.yaml's keys first: the view need not exist for this answer.
    result = run_in_process("fmc.view", f"view={tmp_path / 'x.tif'}", setting)
    assert_user_error(result, message)
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def test_the_settings_are_read_once_from_the_config(tmp_path: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fmc.core.cli import CONFIG_DIR
    from fmc.reporting.napari_view import ViewSettings

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        defaults = compose(config_name="view", overrides=["view=a.tif"])
        changed = compose(config_name="view", overrides=["view=a.tif", "target=b.tif",
                                                         "ndisplay=3", "grid=false",
                                                         "screenshot=s.png"])
    assert ViewSettings.from_config(defaults) == ViewSettings(
        view=Path("a.tif"), prediction=None, target="auto", ndisplay=2, grid=True,
        screenshot=None)
    settings = ViewSettings.from_config(changed)
    assert settings.target == Path("b.tif") and settings.ndisplay == 3
    assert settings.grid is False and settings.screenshot == Path("s.png")


@pytest.mark.skipif(HAVE_NAPARI, reason="napari is installed")
def test_without_napari_the_command_says_how_to_install_it(raw_folder: Path):
    result = run_in_process("fmc.view", f"view={raw_folder / 'image_0_nucleus_angle.tif'}")
    assert_user_error(result, "pip install 'napari[all]'")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_NAPARI or shutil.which("xvfb-run") is None,
                    reason="needs napari (pip install 'napari[pyqt5]') and xvfb-run")
@pytest.mark.parametrize("ndisplay", [2, 3])
def test_a_real_napari_window_shows_three_volumes_side_by_side(raw_folder: Path, tmp_path: Path,
                                                               ndisplay: int):
    from PIL import Image

    view = raw_folder / "image_0_nucleus_angle.tif"
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1920x1200x24", sys.executable, "-m", "fmc.view",
         f"view={view}", f"prediction={raw_folder / 'image_1_membrane_angle.tif'}",
         f"ndisplay={ndisplay}", f"screenshot={shot}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert image.shape[1] > 1000
    thirds = np.array_split(image, 3, axis=1)  # one column per layer: each shows its volume
    assert all(third.std() > 5 for third in thirds), [third.std() for third in thirds]
