"""MONAI networks by config (model=monai_basicunet | monai_segresnet): the same recipe and
interface as UNet3D, an identity start, weights-only checkpoints, a short fmc.train run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmc.core.errors import FmcConfigError
from tests.conftest import run_in_process

pytest.importorskip("monai")

MONAI_MODELS = ["monai_basicunet", "monai_segresnet"]


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fmc.core.cli import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=["profile=cpu", *overrides])


@pytest.mark.parametrize("model", MONAI_MODELS)
def test_a_monai_network_starts_as_the_identity_and_reloads_weights_only(model, tmp_path: Path):
    import lightning as L

    from fmc.models.checkpoint import load_fusion_module
    from fmc.training.builders import build_module
    from fmc.training.config_checks import check_config

    cfg = compose(f"model={model}", "model.features=4")
    check_config(cfg)
    module = build_module(cfg, {"study": 1, "content": "nucleus"}).eval()
    assert module.hparams.network == model and module.net.required_divisor == 2 ** cfg.model.depth
    tile = torch.rand(1, 2, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(tile), tile[:, :1])  # residual: the view, untrained
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        expected = module(tile)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt", weights_only=False)
    reloaded = load_fusion_module(tmp_path / "m.ckpt")  # weights_only=True inside
    with torch.no_grad():
        torch.testing.assert_close(reloaded(tile), expected)


def test_a_network_that_cannot_take_the_depth_is_one_line():
    from fmc.training.config_checks import check_config

    with pytest.raises(FmcConfigError, match="monai_basicunet has 4 fixed downsamplings"):
        check_config(compose("model=monai_basicunet", "model.depth=3"))
    with pytest.raises(FmcConfigError, match="model.network=resnet: choose one of unet3d"):
        check_config(compose("model.network=resnet"))


@pytest.mark.parametrize("network", [["model=monai_segresnet", "model.depth=2"],
                                     []], ids=["segresnet", "default_basicunet"])
def test_fmc_train_runs_a_monai_network(h5_root: Path, tmp_path: Path, network: list[str]):
    result = run_in_process("fmc.train", *network, "study=1", "content=nucleus",
                            f"data.root={h5_root}", "logger=none", "model.features=4",
                            "data.patch_size=[16,32,32]", "data.epoch_steps=2",
                            "trainer.max_steps=2", "trainer.enable_progress_bar=false",
                            "trainer.num_sanity_val_steps=0", run_dir=tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    if not network:  # the default network is BasicUNet
        from fmc.models.checkpoint import load_fusion_module

        model = load_fusion_module(tmp_path / "run" / "checkpoints" / "last.ckpt")
        assert model.hparams.network == "monai_basicunet" and model.hparams.depth == 4
