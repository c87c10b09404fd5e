"""Shared fixtures: tiny volumes, and two ways to run an fmc command.

:func:`run_command` starts ``python -m fmc.<verb>`` in a subprocess, as a user does (seconds of
start-up each): for what only the real command line does (argv rewriting, exit codes, Hydra's
run and sweep folders, multirun, environment read at import, killed processes).
:func:`run_in_process` calls the same ``main`` on a composed config in this process: for
everything else a command does.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import write_volume

REPO = Path(__file__).resolve().parent.parent


# A training run small enough for a test: a 4-feature net on 16×32×32 patches, two steps.
# A tiny UNet3D (depth 2: 16-voxel patch sides suffice); the default network, BasicUNet, has
# four fixed downsamplings and its own short runs (tests/models/test_networks.py).
TINY_RUN = ["study=1", "content=nucleus", "logger=csv", "model=unet3d",
            "model.features=4", "model.depth=2", "data.patch_size=[16,32,32]",
            "data.batch_size=1", "data.epoch_steps=1", "trainer.accelerator=cpu",
            "trainer.max_steps=2",
            "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
            "trainer.num_sanity_val_steps=0"]


@pytest.fixture(autouse=True, scope="session")
def embedded_data_folder(tmp_path_factory):
    """``FMC_DATA`` for the whole session, in every test and the commands they start: the
    embedded dataset goes to one temporary folder (made at most once per session), never to
    the user's cache (``~/.cache/fmc/data``, the default) or the checkout."""
    folder = tmp_path_factory.mktemp("fmc_data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FMC_DATA", str(folder))
        yield folder


def run_command(module: str, *overrides: str, cwd: Path | None = None,
                env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m <module> <overrides>`` in a subprocess and capture its output."""
    environment = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    environment.pop("FMC_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd or REPO,
                          env=environment, capture_output=True, text=True, timeout=timeout)


@dataclass
class InProcessResult:
    """What :func:`run_in_process` saw: the fields of a ``CompletedProcess`` the tests read."""

    returncode: int
    stdout: str
    stderr: str
    value: Any = None  # what ``main`` returned (fmc.train: the best val/n_ssim)


# Hydra's job logging (conf/hydra/default.yaml): INFO and up, on stdout, in this format.
_LOG_FORMAT = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s", "%H:%M:%S")


def run_in_process(module: str, *overrides: str, cwd: Path | None = None,
                   run_dir: Path | None = None, env: dict | None = None) -> InProcessResult:
    """``python -m <module> <overrides>`` without a new interpreter: ``<module>.main(cfg)``.

    The config is composed from conf/ with Hydra's compose API (``fmc.train`` first rewrites
    its overrides as its ``__main__`` does: ``profile=auto`` and the study facts), and ``main``
    -- the real ``hydra.main`` + ``report_user_errors`` entry -- runs on it: a user error is
    ``SystemExit(2)`` and its one line on stderr. Log records reach stdout as Hydra's console
    handler sends them; ``FMC_VERBOSE`` is unset and ``WANDB_MODE=offline``, as with
    :func:`run_command`. Any other exception propagates (a subprocess would print a traceback).

    No Hydra run folder exists here: code that asks for one gets the current folder, so
    ``run_dir`` (created) replaces ``hydra.run.dir=...``; ``cwd`` is where the command runs
    (default: the current folder). Both, and ``env``, hold only during the call; ``env``
    works for variables read while the command runs, not at import time. Hydra options
    (``--multirun``, ``--cfg``) and ``hydra.*`` overrides need :func:`run_command`.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fmc.core.cli import CONFIG_DIR

    if any(item.startswith("-") or item.lstrip("+~").startswith("hydra") for item in overrides):
        raise ValueError(f"{overrides}: Hydra options and hydra.* overrides need run_command")
    if cwd is not None and run_dir is not None:
        raise ValueError("give cwd or run_dir, not both")
    overrides = list(overrides)
    if module == "fmc.train":
        from fmc.training.profile import with_profile, with_study_facts

        overrides = with_study_facts(with_profile([module, *overrides]))[1:]
    main = importlib.import_module(module).main
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=module.rsplit(".", 1)[-1], overrides=overrides)

    stdout, stderr = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stdout)
    handler.setFormatter(_LOG_FORMAT)
    root = logging.getLogger()
    root_level = root.level
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    returncode, value = 0, None
    try:
        os.environ.pop("FMC_VERBOSE", None)
        os.environ.update({"WANDB_MODE": "offline", **(env or {})})
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        if cwd is not None or run_dir is not None:
            os.chdir(cwd if cwd is not None else run_dir)
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                value = main(cfg)
            except SystemExit as stop:
                returncode = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
    finally:
        root.removeHandler(handler)
        root.setLevel(root_level)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        # Shown by pytest when the test fails.
        sys.stdout.write(stdout.getvalue())
        sys.stderr.write(stderr.getvalue())
    return InProcessResult(returncode, stdout.getvalue(), stderr.getvalue(), value)


def assert_user_error(result: subprocess.CompletedProcess | InProcessResult, *fragments: str) -> None:
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


def assert_imagej_readable(path: Path, spacing_zyx) -> None:
    """What ImageJ 1.x's own TIFF reader needs to open a volume with its voxel size: strips, not
    tiles; one page per plane; an ImageJ description with the plane count, the Z step and the
    unit; X/Y resolution in pixels per µm; 16-bit unsigned or 32-bit float samples. (Checked
    against ImageJ itself by tests/io/test_imagej.py when ImageJ is installed.)"""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = tif.pages
        assert not tif.is_bigtiff and tif.is_imagej, path
        assert all(not page.is_tiled for page in pages), "ImageJ's reader cannot read tiles"
        meta = tif.imagej_metadata
        assert meta["images"] == len(pages) and meta.get("slices", 1) == len(pages)
        assert meta["spacing"] == pytest.approx(spacing_zyx[0]) and meta["unit"] in ("um", "micron")
        x_resolution = pages[0].tags["XResolution"].value
        assert x_resolution[0] / x_resolution[1] == pytest.approx(1 / spacing_zyx[2], rel=1e-5)
        assert pages[0].dtype in (np.uint16, np.float32)


def export_package(source: Path, output: Path) -> Path:
    """``python -m fmc.registry input=SOURCE output=OUTPUT`` in-process: the package written."""
    result = run_in_process("fmc.registry", f"input={source}", f"output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.value


def trained_looking_checkpoint(path: Path, seed: int = 0, **hparams) -> Path:
    """A checkpoint whose network is not the identity (random weights everywhere, from ``seed``)."""
    import lightning as L

    from fmc.models.module import FusionModule

    torch.manual_seed(seed)
    model = FusionModule(**{"features": 4, "depth": 2, "residual": True, "norm": "group",
                            "patch_size": [16, 32, 32], "study": 1, "content": "nucleus",
                            **hparams})
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path, weights_only=False)
    return path
