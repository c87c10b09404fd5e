"""Shared fixtures: tiny volumes and a helper that runs fmc commands as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import write_volume

REPO = Path(__file__).resolve().parent.parent


# A training run small enough for a test: a 4-feature net on 16×32×32 patches, two steps.
TINY_RUN = ["study=1", "content=nucleus", "logger=csv",
            "model.features=4", "model.depth=2", "data.patch_size=[16,32,32]",
            "data.batch_size=1", "data.epoch_steps=1", "trainer.accelerator=cpu",
            "trainer.max_steps=2",
            "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
            "trainer.num_sanity_val_steps=0"]


def run_command(module: str, *overrides: str, cwd: Path | None = None,
                env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m <module> <overrides>`` in a subprocess and capture its output."""
    environment = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    environment.pop("FMC_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd or REPO,
                          env=environment, capture_output=True, text=True, timeout=timeout)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user error: exit code 2, each fragment in stderr, no traceback anywhere."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def make_pair(rng: np.random.Generator, shape=(16, 32, 32), noise=40.0):
    """A (view, fused) pair of uint16 volumes: the view is a dimmer, noisier copy."""
    fused = rng.gamma(2.0, 200.0, shape).astype(np.uint16)
    view = (fused * 0.7 + rng.normal(0, noise, shape)).clip(0, 65535).astype(np.uint16)
    return view, fused


@pytest.fixture
def raw_folder(tmp_path: Path) -> Path:
    """Three FMC-layout pairs (studies 1-3, nucleus and membrane) of 16×32×32 voxels."""
    rng = np.random.default_rng(7)
    folder = tmp_path / "raw"
    for index, (study, content) in enumerate([(1, "nucleus"), (1, "membrane"), (3, "nucleus")]):
        view, fused = make_pair(rng)
        meta = VolumeMeta(study=study, content=content, spacing_zyx=(1.0, 0.195, 0.195))
        write_volume(folder / f"image_{index}_{content}_angle.tif", view, meta)
        write_volume(folder / f"image_{index}_{content}_fused.tif", fused, meta)
    return folder


def save_tiny_checkpoint(path: Path, **hparams) -> Path:
    """An untrained residual FusionModule (the identity) saved as a Lightning checkpoint."""
    import lightning as L

    from fmc.models.module import FusionModule

    settings = dict(features=4, depth=2, residual=True, patch_size=[16, 32, 32], study=1,
                    content="nucleus", spacing_zyx=[3.0, 0.585, 0.585])
    model = FusionModule(**{**settings, **hparams})
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path, weights_only=False)
    return path


def fused_as_predictions(raw: Path, folder: Path) -> Path:
    """Copy each ground truth under its view's name: a perfect set of predictions."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for fused in raw.glob("*_fused.tif"):
        shutil.copy(fused, folder / fused.name.replace("_fused", "_angle"))
    return folder


# Tiny synthetic pairs for training tests (study 1 geometry at 3× coarser voxels).
TINY_DATA = dict(shape=(24, 48, 48), scale=3.0)


@pytest.fixture(scope="module")
def raw_and_h5(tmp_path_factory) -> tuple[Path, Path]:
    """Three tiny study-1 nucleus TIFF pairs and their prepared H5 files with split lists
    (1 train, 1 val, 1 test): ``(raw folder, H5 folder)``."""
    from fmc.preprocessing.conversion import convert_folder
    from fmc.preprocessing.splits import write_lists
    from fmc.simulation.synth import write_pair

    raw = tmp_path_factory.mktemp("raw")
    for index in range(3):
        write_pair(raw, 1, "nucleus", index, **TINY_DATA)
    root = tmp_path_factory.mktemp("h5")
    convert_folder(raw, root, progress=False)
    write_lists(root)
    return raw, root


@pytest.fixture(scope="module")
def h5_root(raw_and_h5) -> Path:
    """The H5 folder of :func:`raw_and_h5`."""
    return raw_and_h5[1]
