"""``python -m fmc.challenge`` on temporary folders (no Docker), and the container build script.

The command's ``main`` runs in-process (``run_in_process``); one call runs the real command line
for its exit-2 contract."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fmc.io.tiff import read_volume
from fmc.simulation.synth import write_pair
from tests.conftest import REPO, assert_user_error, run_command, run_in_process, save_tiny_checkpoint


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    """A challenge-like input folder (one view, no fused file) and a registry."""
    root = tmp_path_factory.mktemp("challenge")
    angle, _ = write_pair(root / "pairs", 1, "membrane", 0, shape=(20, 40, 44), scale=3.0)
    inputs = root / "input"
    inputs.mkdir()
    (inputs / "image_7.tif").write_bytes(angle.read_bytes())
    registry = root / "registry"
    save_tiny_checkpoint(registry / "nucleus.ckpt")
    (registry / "models.yaml").write_text("models:\n  - {study: 1, content: nucleus, ckpt: nucleus.ckpt}\n")
    return root


def test_challenge_writes_the_same_names_with_the_input_metadata(case: Path, tmp_path: Path):
    out = tmp_path / "output" / "images" / "fused-fluorescence-lightsheet-3D-microscopy"
    result = run_in_process("fmc.challenge", f"input={case / 'input'}", f"output={out}",
                            f"registry={case / 'registry'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == ["image_7.tif"]
    prediction, meta = read_volume(out / "image_7.tif")
    view, view_meta = read_volume(case / "input" / "image_7.tif")
    # Membrane volume, nucleus model only: the registry falls back instead of crashing.
    assert "no membrane model" in result.stdout + result.stderr
    assert prediction.shape == view.shape and prediction.dtype == np.uint16
    assert (meta.study, meta.content, meta.spacing_zyx) == (1, "membrane", view_meta.spacing_zyx)
    assert np.abs(prediction.astype(int) - view.astype(int)).max() <= 1  # identity model
    with tifffile.TiffFile(out / "image_7.tif") as tif:  # the challenge template's tiles
        assert tif.pages[0].is_tiled


def test_a_failing_case_is_written_as_its_input(case: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    save_tiny_checkpoint(registry / "odd.ckpt", channels=["raw_image", "depth_map"])
    (registry / "models.yaml").write_text("models:\n  - {study: 1, content: nucleus, ckpt: odd.ckpt}\n")
    out = tmp_path / "out"
    result = run_in_process("fmc.challenge", f"input={case / 'input'}", f"output={out}",
                            f"registry={registry}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "written as their input" in result.stdout
    written, _ = read_volume(out / "image_7.tif")
    view, _ = read_volume(case / "input" / "image_7.tif")
    np.testing.assert_array_equal(written, view)
    # With on_error=fail the same case is an error.
    result = run_in_process("fmc.challenge", f"input={case / 'input'}", f"output={tmp_path / 'o2'}",
                            f"registry={registry}", "on_error=fail")
    assert_user_error(result, "depth_map")


def test_challenge_without_models_or_input_is_a_clear_error(case: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    # The real command line (its Hydra log folder is FMC_LOG_DIR): the exit-2 contract.
    result = run_command("fmc.challenge", f"input={case / 'input'}", f"output={tmp_path / 'o'}",
                         f"registry={empty}", env={"FMC_LOG_DIR": str(tmp_path / "log")})
    assert_user_error(result, "no model found")
    result = run_in_process("fmc.challenge", f"input={empty}", f"output={tmp_path / 'o'}",
                            f"registry={case / 'registry'}")
    assert_user_error(result, "no .tif/.tiff file")


def test_build_script_prepares_the_context_and_saves_the_image(case: Path, tmp_path: Path):
    """The build script with a stand-in ``docker`` that records what it is asked to do."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "docker.log"
    fake = bin_dir / "docker"
    fake.write_text(f"""#!/usr/bin/env bash
echo "$@" >> {record}
if [[ $1 == build ]]; then
    context="${{@: -1}}"
    ls "$context" >> {record}; cat "$context/models/models.yaml" >> {record}
    ls "$context/models" >> {record}
fi
if [[ $1 == save ]]; then echo image-bytes; fi
""")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "build_container.sh"),
                             str(case / "registry"), "fmc-test"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    log = record.read_text()
    assert "build --tag fmc-test" in log and "run --rm --network none" in log
    assert "Dockerfile" in log and "fmc" in log and "conf" in log
    assert "study: 1, content: nucleus" in log and "model00_study1_nucleus.ckpt" in log
    assert (tmp_path / "fmc-test.tar.gz").stat().st_size > 0


def test_dockerfile_runs_as_a_non_root_user_without_network_needs():
    text = (REPO / "Dockerfile").read_text()
    assert "FROM pytorch/pytorch" in text and "cuda" in text
    assert "\nUSER user" in text and 'ENTRYPOINT ["python", "-m", "fmc.challenge"]' in text
    assert "WANDB_MODE=disabled" in text


# ----------------------------------------------------------------------------------------------
# The shared per-file loop (fmc.inference.runner.predict_files) and its on_error option, in-process
# ----------------------------------------------------------------------------------------------
class _FailingPicker:
    """Stands in for a ModelPicker whose every model choice fails."""

    def pick(self, path):
        raise RuntimeError(f"no model for {path.name}")


def test_on_error_identity_writes_the_input_and_lists_unreadable_files(case: Path, tmp_path: Path):
    from fmc.inference.predict_settings import default_settings
    from fmc.inference.runner import predict_files

    broken = tmp_path / "image_8.tif"
    broken.write_bytes(b"not a tiff")
    files = [case / "input" / "image_7.tif", broken]
    out = tmp_path / "out"
    out.mkdir()
    result = predict_files(files, _FailingPicker(), out, default_settings(), on_error="identity")
    assert result.written == [out / "image_7.tif"] and result.predicted == 0
    assert (result.as_input, result.missing) == (["image_7.tif"], ["image_8.tif"])
    np.testing.assert_array_equal(read_volume(out / "image_7.tif")[0],
                                  read_volume(files[0])[0])
    with pytest.raises(RuntimeError, match="no model for image_7.tif"):
        predict_files(files, _FailingPicker(), tmp_path / "o2", default_settings(), on_error="fail")


def test_bad_on_error_is_a_one_line_config_error():
    from fmc.core.errors import FmcConfigError
    from fmc.inference.runner import check_on_error

    with pytest.raises(FmcConfigError) as caught:
        check_on_error("skip")
    assert str(caught.value) == "on_error='skip': choose one of identity, fail"
