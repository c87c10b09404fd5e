"""python -m fmc.export: TorchScript and ONNX copies of a checkpoint's tile function, equal to
fmc's within 1e-4 on tiles of any allowed size, with a card naming the inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import assert_user_error, run_command, run_in_process, trained_looking_checkpoint


@pytest.fixture(scope="module", params=["none", "head"])
def checkpoint(request, tmp_path_factory) -> Path:
    return trained_looking_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt",
                                      confidence=request.param)


def fmc_output(checkpoint: Path, tile: torch.Tensor) -> np.ndarray:
    from fmc.models.checkpoint import load_fusion_module

    with torch.no_grad():
        return load_fusion_module(checkpoint)(tile).numpy()


def a_tile(shape) -> torch.Tensor:
    values = torch.rand((1, 2, *shape), generator=torch.Generator().manual_seed(3))
    values[:, 1] = values[:, 1] * 2 - 1
    return values


def test_torchscript_equals_fmc_on_other_tile_sizes(checkpoint: Path, tmp_path: Path):
    result = run_in_process("fmc.export", f"ckpt={checkpoint}", "format=torchscript",
                            f"output={tmp_path / 'model.pt'}")
    assert result.returncode == 0, result.stderr[-2000:]
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    for shape in [(16, 32, 32), (8, 20, 44)]:
        tile = a_tile(shape)
        expected = fmc_output(checkpoint, tile)
        assert np.abs(expected - tile[:, :1].numpy()).max() > 1e-2  # not the identity
        with torch.no_grad():
            np.testing.assert_allclose(scripted(tile).numpy(), expected, atol=1e-4)
    card = (tmp_path / "model.pt.md").read_text()
    assert "channel 1: surface_distance — tanh(d / 50.0 µm)" in card
    facts = json.loads((tmp_path / "model.pt.json").read_text())
    assert facts["channels"] == ["raw_image", "surface_distance"] and facts["divisor"] == 4


def test_onnx_equals_fmc_on_other_tile_sizes(checkpoint: Path, tmp_path: Path):
    onnxruntime = pytest.importorskip("onnxruntime")
    result = run_in_process("fmc.export", f"ckpt={checkpoint}", "format=onnx",
                            f"output={tmp_path / 'model.onnx'}")
    assert result.returncode == 0, result.stderr[-2000:]
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    for shape in [(16, 32, 32), (8, 20, 44)]:
        tile = a_tile(shape)
        output = session.run(None, {"input": tile.numpy()})[0]
        np.testing.assert_allclose(output, fmc_output(checkpoint, tile), atol=1e-4)


def test_bad_requests_are_one_line(tmp_path: Path, checkpoint: Path):
    result = run_command("fmc.export", f"ckpt={checkpoint}", "format=tflite",
                         f"output={tmp_path / 'm.x'}")
    assert_user_error(result, "format=tflite: choose one of torchscript, onnx, bioimageio "
                              "(conf/export.yaml)")
    result = run_in_process("fmc.export", f"ckpt={checkpoint}", "patch=[16,30,32]",
                            f"output={tmp_path / 'm.pt'}")
    assert_user_error(result, "multiple of 4")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("setting,message", [
    ("format=zip", "format=zip: choose one of torchscript, onnx, bioimageio (conf/export.yaml)"),
    ("patch=abc", "patch=abc: give 3 whole numbers >= 1, e.g. [16, 32, 32] (conf/export.yaml)"),
    ("patch=[16,32]", "patch=[16, 32]: give 3 whole numbers >= 1"),
])
def test_a_bad_setting_is_one_line_before_the_checkpoint_is_read(tmp_path: Path, setting,
                                                                 message):
    # ExportSettings reads conf/export.yaml's keys first: the checkpoint need not exist.
    result = run_in_process("fmc.export", f"ckpt={tmp_path / 'none.ckpt'}", setting,
                            f"output={tmp_path / 'm.pt'}")
    assert_user_error(result, message)
    assert list(tmp_path.iterdir()) == []


def test_the_settings_are_read_once_from_the_config():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fmc.core.cli import CONFIG_DIR
    from fmc.inference.export_settings import ExportSettings

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        defaults = compose(config_name="export", overrides=["ckpt=m.ckpt", "output=m.zip"])
        changed = compose(config_name="export", overrides=[
            "ckpt=m.ckpt", "output=m.zip", "format=bioimageio", "patch=[8,16,16]",
            "sample=a_angle.h5", "zoo.name=nuclei", "zoo.authors=Ada Lovelace"])
    assert ExportSettings.from_config(defaults) == ExportSettings(
        ckpt=Path("m.ckpt"), format="torchscript", output=Path("m.zip"), patch=None,
        sample=None, zoo={"name": None, "authors": ("fmc",), "license": "MIT"})
    settings = ExportSettings.from_config(changed)
    assert settings.format == "bioimageio" and settings.patch == (8, 16, 16)
    assert settings.sample == Path("a_angle.h5")
    assert settings.zoo == {"name": "nuclei", "authors": ("Ada Lovelace",), "license": "MIT"}
