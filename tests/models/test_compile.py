"""model.compile=true trains through torch.compile; checkpoints keep the plain weights and load
without compiling; fmc.predict compile=true gives fmc's numbers (on the CPU, a small net)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fmc.io.tiff import read_volume
from tests.conftest import TINY_RUN, run_in_process


@pytest.mark.slow  # a compiled fit and a compiled prediction: about a minute on 2 cores
def test_a_compiled_run_saves_plain_weights_and_predicts_the_same(h5_root: Path,
                                                                  raw_and_h5, tmp_path: Path):
    from fmc.models.checkpoint import load_fusion_module, read_checkpoint

    run_dir = tmp_path / "run"
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}", "model.compile=true",
                            run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    [checkpoint] = sorted((run_dir / "checkpoints").glob("last*.ckpt"))
    state = read_checkpoint(checkpoint)["state_dict"]
    assert not any("_orig_mod" in key for key in state)
    model = load_fusion_module(checkpoint)
    assert model.hparams.compile is False and not model.compiled

    view = sorted(raw_and_h5[0].glob("*_angle.tif"))[0]
    outputs = {}
    for compiled in ("false", "true"):
        out = tmp_path / f"compile_{compiled}"
        result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={view}",
                                f"output={out}", f"compile={compiled}", "progress=false")
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[compiled] = read_volume(out / view.name)[0]
    np.testing.assert_allclose(outputs["true"], outputs["false"], atol=1e-4)


def test_compile_network_wraps_without_new_children():
    """torch.compile on the CPU (a small net; its first call builds C++ kernels, ~13 s)."""
    from fmc.models.module import FusionModule

    module = FusionModule(features=4, depth=2, norm="group")
    keys = set(module.state_dict())
    module.compile_network()
    assert module.compiled and set(module.state_dict()) == keys
    inputs = torch.rand(1, 2, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(module(inputs), module.net(inputs), atol=1e-5, rtol=1e-4)
