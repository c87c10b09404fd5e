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
    assert_user_error(result, "format=tflite: choose one of torchscript, onnx")
    result = run_in_process("fmc.export", f"ckpt={checkpoint}", "patch=[16,30,32]",
                            f"output={tmp_path / 'm.pt'}")
    assert_user_error(result, "multiple of 4")
    assert not (tmp_path / "m.pt").exists()
