"""``python -m fmc.train``: configs, a CPU fit, resume, sweeps, and bad inputs.

Fits and bad inputs call the command's ``main`` in-process (``run_in_process``); the real command
line runs where only it can: ``--cfg job`` and ``profile=auto``, the exit-2 contract, multirun,
joblib, DDP, and the smoke run of every experiment."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fmc.core.cli import CONFIG_DIR
from tests.conftest import TINY_RUN, assert_user_error, run_command, run_in_process
from tests.wandb_records import offline_runs


def compose_train(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("experiment", sorted(p.stem for p in Path(CONFIG_DIR, "experiment")
                                              .glob("*.yaml")))
def test_every_experiment_composes_and_builds(experiment):
    from fmc.training.builders import build_module
    from fmc.training.config_checks import check_config

    cfg = compose_train(f"experiment={experiment}", "study=3", "content=membrane")
    check_config(cfg)
    module = build_module(cfg, {})
    assert module.in_channels == len(cfg.channels.list)
    output = module(torch.zeros(1, module.in_channels, *[2 * 2 ** cfg.model.depth] * 3))
    assert output.shape[1] == 1


def test_rwth_ge_is_the_seed_network():
    from fmc.models.unet3d import UNet3D
    from fmc.training.builders import build_module

    cfg = compose_train("experiment=rwth_ge")
    module = build_module(cfg, {})
    assert isinstance(module.net, UNet3D)
    assert sum(p.numel() for p in module.parameters()) == 1_981_145
    assert list(cfg.data.patch_size) == [64, 256, 256] and cfg.loss.name == "ssim_l1"
    assert cfg.model.optimizer == "radam" and cfg.model.lr == 0.001
    assert not cfg.model.residual and cfg.trainer.gradient_clip_val is None
    default = compose_train()
    assert default.model.residual and default.trainer.gradient_clip_val == 1.0


def test_profiles_are_configuration():
    cpu = compose_train("profile=cpu")
    assert cpu.model.features == 8 and list(cpu.data.patch_size) == [16, 64, 64]
    assert cpu.data.batch_size == 2 and cpu.data.num_workers == 0  # workers: slower on 2 cores
    gpu = compose_train("profile=gpu")
    assert gpu.model.features == 16 and list(gpu.data.patch_size) == [64, 256, 256]
    assert gpu.data.num_workers == 4  # loading overlaps the GPU step (docs/benchmarks.md)
    # An experiment keeps its network and batch; a key on the command line wins.
    seed = compose_train("profile=cpu", "experiment=rwth_ge")
    assert seed.model.features == 16 and seed.data.batch_size == 1
    assert list(seed.data.patch_size) == [16, 64, 64]
    assert compose_train("profile=cpu", "model.features=12").model.features == 12


def test_auto_profile_is_decided_on_the_command_line():
    from fmc.training.profile import with_profile

    def no_gpu():
        return False

    def gpu():
        return True

    assert with_profile(["fmc.train", "study=1"], no_gpu) == ["fmc.train", "study=1", "profile=cpu"]
    # Overrides stay one run after Hydra's options, whatever order the user wrote.
    assert with_profile(["fmc.train", "study=1", "--cfg", "job", "seed=2"], no_gpu) == \
        ["fmc.train", "--cfg", "job", "study=1", "seed=2", "profile=cpu"]
    assert with_profile(["fmc.train", "--info", "x=1"], gpu) == ["fmc.train", "--info", "x=1",
                                                                "profile=gpu"]
    assert with_profile(["fmc.train", "profile=auto"], gpu) == ["fmc.train", "profile=gpu"]
    assert with_profile(["fmc.train", "trainer=cpu"], gpu)[-1] == "profile=cpu"
    assert with_profile(["fmc.train", "profile=gpu"], no_gpu) == ["fmc.train", "profile=gpu"]
    assert with_profile(["fmc.train", "profile=cpu,gpu"], gpu) == ["fmc.train", "profile=cpu,gpu"]


def test_cfg_job_prints_the_network_that_trains():
    result = run_command("fmc.train", "trainer=cpu", "--cfg", "job")  # options after overrides
    assert result.returncode == 0, result.stderr
    assert "features: 8" in result.stdout and "- 16\n  - 64\n  - 64" in result.stdout


# One bad value per enumerated key: one line naming the key, the valid values and where.
BAD_CHOICES = [("model.optimizer=sgd", "model.optimizer=sgd: choose one of radam, adam, adamw"),
               ("model.scheduler=step", "model.scheduler=step: choose one of none, cosine"),
               ("model.norm=layer", "model.norm=layer: choose one of instance, group"),
               ("model.out_activation=gelu", "model.out_activation=gelu: choose one of none"),
               ("model.confidence=net", "model.confidence=net: choose one of none, head"),
               ("model.fallback=always", "model.fallback=always: choose one of none, difference"),
               ("loss.name=l2", "loss.name=l2: choose one of ssim_l1, nssim_l1, l1"),
               ("logger.name=tensorboard", "logger.name=tensorboard: choose one of wandb, csv"),
               ("callbacks.checkpoint.monitor=val/loss",
                "callbacks.checkpoint.monitor=val/loss: choose one of val/volume_n_ssim"),
               ("test_volumes=maybe", "test_volumes=maybe: choose one of auto, true, false"),
               ("+loss.kwargs.window=box", "loss.kwargs.window=box: choose one of gaussian"),
               ("+loss.kwargs.ssim_wieght=1", "loss.kwargs.ssim_wieght: loss ssim_l1 does not"),
               ("channels.list=[raw_image,dapi]", "channels.list=['raw_image', 'dapi']: the first"),
               ("channels.list=[surface_distance]", "the first must be raw_image"),
               ("+model.dropout=0.1", "model.dropout: FusionModule takes no such argument"),
               ("model.tta=[y,w]", "model.tta axis 'w': use z, y or x, e.g. model.tta=[y,x]"),
               ("model.tta=5", "model.tta=5: give a list of axes, e.g. model.tta=[y,x]")]


@pytest.mark.parametrize(("override", "message"), BAD_CHOICES,
                         ids=[o.split("=")[0] for o, _ in BAD_CHOICES])
def test_every_enumerated_key_is_checked_before_training(override, message):
    from fmc.core.errors import FmcConfigError
    from fmc.training.config_checks import check_config

    cfg = compose_train("profile=cpu", override)
    with pytest.raises(FmcConfigError) as caught:
        check_config(cfg)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("overrides, expected", [
    ((), ((1, 2), ((1, 2),))),                                   # study 1: light along Z
    (("data.flip_axes=[Y]",), ((1,), ())),                        # one axis: no plane to turn
    (("data.flip_axes=[Z,Y,X]", "data.rot90_planes=YX"), ((0, 1, 2), ((1, 2),))),
    (("data.rot90_planes=[]",), ((1, 2), ())),
    (("data.flip_axes=lateral",), ((1, 2), ((1, 2),))),          # study 1's light is along Z
    (("data.augment=false", "data.flip_axes=[Y,X]"), ((), ())),
])
def test_flip_axes_and_rot90_planes_are_config_keys(h5_root: Path, overrides, expected):
    from fmc.training.builders import build_datamodule

    cfg = compose_train("study=1", "content=nucleus", "data.patch_size=[8,16,16]", *overrides)
    datamodule = build_datamodule(cfg, h5_root)
    datamodule.setup("fit")
    assert datamodule.augmentation_axes() == expected
    flips, planes = expected
    assert datamodule.datasets["train"].flip_axes == flips
    assert datamodule.datasets["train"].rot90_planes == planes


def test_every_model_key_reaches_the_module():
    """conf/model's keys are FusionModule arguments: adding one is one YAML line and one
    argument, and its value lands in the checkpoint's hyperparameters."""
    from fmc.training.builders import build_module

    cfg = compose_train("profile=cpu", "model=unet3d", "model.confidence_weight=0.25", "model.depth=2")
    module = build_module(cfg, {})
    for key, value in cfg.model.items():
        assert module.hparams[key] == value, key


def test_a_bad_choice_is_one_line_and_exit_2():
    result = run_command("fmc.train", "model.optimizer=sgd", "logger=none")
    assert_user_error(result, "model.optimizer=sgd: choose one of radam, adam, adamw")


def test_fit_writes_self_contained_checkpoints_and_resumes(h5_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}", run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2
    hparams = checkpoint["hyper_parameters"]
    assert hparams["channels"] == ["raw_image", "surface_distance"]
    assert hparams["patch_size"] == [16, 32, 32] and hparams["study"] == 1
    assert hparams["content"] == "nucleus" and hparams["spacing_zyx"] is not None
    from fmc.models.module import FusionModule

    model = FusionModule.load_from_checkpoint(last, map_location="cpu", weights_only=True)
    assert model.net.depth == 2
    metrics = (run_dir / "csv").rglob("metrics.csv")
    header = next(metrics).read_text().splitlines()[0]
    for name in ("train/loss_step", "val/loss", "val/n_ssim"):
        assert name in header
    # metrics.json: what reports read, with or without W&B.
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["study"] == 1 and summary["content"] == "nucleus" and summary["global_step"] == 2
    assert summary["channels"] == "raw_distance" and summary["loss"] == "ssim_l1"
    assert isinstance(summary["best/val_n_ssim"], float) and "final/val_n_ssim" in summary
    # Resume from last.ckpt: the step count continues.
    resumed = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}", "ckpt=last",
                             "trainer.max_steps=4", run_dir=run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4


def the_sweep_folder(user_folder: Path) -> Path:
    """The one sweep folder a ``--multirun`` started in ``user_folder`` made, where the README
    says: ``outputs/train/multirun/<date>_<time>``."""
    sweeps = list((user_folder / "outputs" / "train" / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def test_multirun_skips_combinations_without_data(h5_root: Path, tmp_path: Path):
    # As a user types it: no hydra.sweep.dir, from a folder of the user's.
    result = run_command("fmc.train", "--multirun", *[a for a in TINY_RUN if "study=" not in a],
                         "study=1,2", f"data.root={h5_root}", "trainer.max_steps=1",
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping study2-nucleus-" in result.stdout + result.stderr
    sweep = the_sweep_folder(tmp_path)
    assert (sweep / "0" / "checkpoints" / "last.ckpt").is_file()
    assert not (sweep / "1" / "checkpoints").exists()
    assert (sweep / "1" / "skipped.txt").read_text().startswith("study2-nucleus-")
    shown = sweep.relative_to(tmp_path)
    assert f"fmc.train: 1 of 2 runs finished, 1 skipped (nothing to train) in {shown}" in result.stdout
    assert f"compare them: python -m fmc.report sweep={shown}" in result.stdout
    assert "resume=true" not in result.stdout


def test_the_unseen_studies_experiment_trains_three_seeds_predicted_as_one(raw_and_h5, tmp_path):
    raw, h5 = raw_and_h5
    result = run_command("fmc.train", "--multirun", "experiment=unseen_studies", *TINY_RUN,
                         f"data.root={h5}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = the_sweep_folder(tmp_path)
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "metrics.json").is_file())
    assert [p.name for p in runs] == ["0", "1", "2"]
    configs = [OmegaConf.load(run / ".hydra" / "config.yaml") for run in runs]
    assert [c.seed for c in configs] == [0, 1, 2]
    assert all(c.data.flip_axes == "lateral" for c in configs)
    # The sweep is a registry whose three study-1 nucleus models are averaged.
    predicted = run_in_process("fmc.predict", "ckpt=auto", f"registry={sweep}",
                               f"input={raw / 'image_0_nucleus_angle.tif'}",
                               f"output={tmp_path / 'pred'}", "progress=false")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "study 1 nucleus, 3 models averaged" in predicted.stdout + predicted.stderr
    assert (tmp_path / "pred" / "image_0_nucleus_angle.tif").is_file()
    assert json.loads((runs[0] / "metrics.json").read_text())["global_step"] == 2


def test_a_resumed_sweep_trains_only_what_did_not_finish(h5_root: Path, tmp_path: Path):
    import shutil

    sweep = tmp_path / "sweep"
    command = ["fmc.train", "--multirun", *TINY_RUN, f"data.root={h5_root}", "seed=1,2,3",
               "resume=true", f"hydra.sweep.dir={sweep}"]
    result = run_command(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    finished = sweep / "0" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    # Killed: job 1 after its last checkpoint, job 2 before any checkpoint.
    (sweep / "1" / "metrics.json").unlink()
    shutil.rmtree(sweep / "2")
    result = run_command(*command)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert finished.stat().st_mtime_ns == stamp and "already finished" in log  # job 0 skipped
    assert "continuing from" in log and str(sweep / "1" / "checkpoints" / "last.ckpt") in log
    assert all((sweep / job / "metrics.json").is_file() for job in ("1", "2"))


@pytest.mark.parametrize("override,message", [
    ("data.train_list=lists/nope.csv", "nope.csv"),
    ("data.patch_size=[16,30,32]", "multiple of 2**model.depth"),
    ("channels.list=[surface_distance]", "the first must be raw_image"),
    ("ckpt=/nonexistent/last.ckpt", "does not exist"),
    ("study=7", "valid studies are 1, 2, 3, 4, 5"),
    ("data.flip_axes=[W]", "unknown axis 'W'"),
    ("data.flip_axes=sideways", "use auto, lateral or axes"),
    ("data.rot90_planes=ZY", "needs equal patch sides"),
])
def test_bad_inputs_stop_before_training(h5_root: Path, tmp_path: Path, override, message):
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}", override,
                            run_dir=tmp_path / "run")
    assert_user_error(result, message)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_two_process_cpu_ddp_fit(h5_root: Path, tmp_path: Path):
    run_dir = tmp_path / "ddp"
    result = run_command("fmc.train", *TINY_RUN, f"data.root={h5_root}", "trainer=ddp_cpu",
                         "trainer.max_steps=2", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                            weights_only=True)
    assert checkpoint["global_step"] == 2


def test_joblib_multirun_runs_two_jobs_in_parallel(h5_root: Path, tmp_path: Path):
    result = run_command("fmc.train", "-m", *TINY_RUN, f"data.root={h5_root}",
                         "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                         "model.features=4,8", "trainer.max_steps=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = the_sweep_folder(tmp_path)
    assert "fmc.train: 2 of 2 runs finished" in result.stdout
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    assert "Joblib" in result.stdout + result.stderr


def test_every_lightning_trainer_argument_is_an_override():
    import inspect

    import lightning as L

    cfg = compose_train()
    set_by_fmc = {"self", "logger", "callbacks", "default_root_dir", "plugins"}
    missing = [name for name in inspect.signature(L.Trainer.__init__).parameters
               if name not in cfg.trainer and name not in set_by_fmc]
    assert missing == []
    assert compose_train("trainer.overfit_batches=2").trainer.overfit_batches == 2


@pytest.mark.parametrize("experiment", sorted(p.stem for p in Path(CONFIG_DIR, "experiment")
                                              .glob("*.yaml")))
def test_every_experiment_smoke_runs(h5_root: Path, tmp_path: Path, experiment: str):
    result = run_command("fmc.train", f"experiment={experiment}", "study=1", "content=nucleus",
                         f"data.root={h5_root}", "logger=none", "trainer.accelerator=cpu",
                         "trainer.max_steps=1", "trainer.enable_progress_bar=false",
                         "trainer.num_sanity_val_steps=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    # On a CPU a named experiment keeps its network (the CPU profile's width where it names
    # none) and only its patch shrinks; the run's config says so, and the log names the profile.
    assert "profile=cpu" in result.stdout + result.stderr
    saved = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml")
    named = OmegaConf.load(Path(CONFIG_DIR, "experiment", f"{experiment}.yaml"))
    cpu = OmegaConf.load(Path(CONFIG_DIR, "profile", "cpu.yaml"))
    assert list(saved.data.patch_size) == [16, 64, 64]
    assert saved.model.features == OmegaConf.select(named, "model.features",
                                                    default=cpu.model.features)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_wandb_offline_run_has_name_group_flat_config_and_panel(h5_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    args = [a for a in TINY_RUN if not a.startswith("logger=")]
    result = run_in_process("fmc.train", *args, "logger=wandb", "logger.log_model=true",
                            f"data.root={h5_root}", run_dir=run_dir, env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # Offline runs keep config and summary in the run's binary log until `wandb sync`. W&B's
    # service process (shared with this test process) may still be writing it: wait for the end.
    record_path = next(runs[0].glob("run-*.wandb"))
    deadline = time.monotonic() + 60
    record = record_path.read_bytes()
    while b"final/val_n_ssim" not in record and time.monotonic() < deadline:
        time.sleep(0.5)
        record = record_path.read_bytes()
    assert b"model.lr" in record and b"data.patch_size" in record  # the flat config
    assert b"study1-nucleus-raw_distance-ssim_l1-unet3d-seed1337" in record  # run name
    assert list((runs[0] / "files" / "media" / "images").rglob("*.png"))  # val/panel
    assert b"best/val_n_ssim" in record and b"final/val_n_ssim" in record  # summary metrics
    assert b"test/n_ssim/study1" in record  # the challenge score of the test volumes
    # logger.log_model: the selected checkpoint as a model artifact, scores as its metadata.
    assert b"model-study1-nucleus-raw_distance-ssim_l1-unet3d-seed1337" in record
    assert b"latest" in record
    # What a runs table shows and sorts by; what a person looks at (tests/wandb_records.py).
    run = offline_runs(run_dir)[0]
    assert (run.name, run.group, run.job_type) == (
        "study1-nucleus-raw_distance-ssim_l1-unet3d-seed1337", "", "train")
    assert {"best/val_n_ssim", "test/n_ssim", "test/n_ssim/worst", "test/gaussian_n_ssim",
            "steps", "seconds"} <= set(run.summary)
    assert run.summary["steps"] == 2
    assert run.summary["val/volume/captions"][0].startswith("step 2: ")
    assert "N_SSIM" in run.summary["val/volume/captions"][0]
    assert run.summary["test/volumes_table/_type"] == "table-file"
    assert run.summary["test/volumes_table/ncols"] == 9
    # The same figure and table in the run folder.
    assert [p.name for p in (run_dir / "validation_images").iterdir()] == ["step000002.png"]
    with (run_dir / "test_volumes.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert len(rows) == run.summary["test/volumes_table/nrows"] >= 1
    assert rows[0]["study"] == "1" and rows[0]["content"] == "nucleus"
    assert float(rows[0]["identity_n_ssim"]) == 0.0
    assert float(rows[0]["gaussian_sigma"]) in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
    assert abs(float(rows[0]["n_ssim"]) - run.summary["test/n_ssim"]) < 1e-5


def test_channels_last_changes_the_layout_not_the_numbers(tmp_path: Path):
    from fmc.models.module import FusionModule
    from tests.conftest import save_tiny_checkpoint

    torch.manual_seed(0)
    plain = FusionModule(features=4, depth=2, norm="group", residual=False)
    fast = FusionModule(features=4, depth=2, norm="group", residual=False, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    first = next(fast.net.parameters())
    assert first.is_contiguous(memory_format=torch.channels_last_3d)
    inputs = torch.rand(2, 2, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fast(inputs), plain(inputs), atol=1e-5, rtol=1e-4)
    # The choice travels with the checkpoint.
    path = save_tiny_checkpoint(tmp_path / "cl.ckpt", channels_last=True)
    loaded = FusionModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert loaded.hparams.channels_last
    assert next(loaded.net.parameters()).is_contiguous(memory_format=torch.channels_last_3d)


def test_weight_averaging_is_validated_saved_predicted_and_resumed(h5_root: Path, tmp_path: Path):
    # model.averaging=ema: the whole-volume validation judges the average, the selected
    # checkpoint holds it (so prediction needs no flag), and a resumed run keeps averaging.
    # model.tta=[x] travels the same way: validation and fmc.predict's tta=auto use its flips.
    from dataclasses import replace

    from fmc.evaluation.volume_scoring import score_h5_pairs, scoring_settings
    from fmc.models.checkpoint import load_fusion_module, selected_checkpoint
    from fmc.models.weight_averaging import AVERAGE_STATE_KEY, TRAINED_WEIGHTS_KEY
    from fmc.preprocessing.splits import read_list

    run_dir = tmp_path / "run"
    averaged = [*TINY_RUN, f"data.root={h5_root}", "model.averaging=ema",
                "+model.averaging_kwargs.decay=0.5", "model.fallback=none", "model.tta=[x]",
                "trainer.max_steps=3", "callbacks.volume_validation.every_n_steps=1",
                "callbacks.volume_validation.every_minutes=null",
                "callbacks.volume_validation.images=false"]
    result = run_in_process("fmc.train", *averaged, run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    best = selected_checkpoint(run_dir)
    saved = torch.load(best, map_location="cpu", weights_only=True)
    name = next(k for k, v in saved["state_dict"].items() if k.startswith("net.")
                and v.is_floating_point() and v.numel() > 1)
    assert not torch.equal(saved["state_dict"][name], saved[TRAINED_WEIGHTS_KEY][name])
    assert saved[AVERAGE_STATE_KEY]["updates"] == saved["global_step"]
    # The score in the checkpoint's name is the averaged weights' score.
    history = json.loads((run_dir / "volume_validation.json").read_text())
    chosen = next(entry for entry in history if entry["step"] == saved["global_step"])
    pairs = read_list(h5_root / "lists" / "study1_nucleus_val.csv", h5_root)
    model = load_fusion_module(best, "cpu")
    assert list(model.hparams.tta) == ["x"]
    scores = score_h5_pairs(model, pairs, scoring_settings(0.5, 4))  # tta=auto: the flips
    assert {s.name: round(s.n_ssim, 5) for s in scores} == {
        k: round(v, 5) for k, v in chosen["volumes"].items()}
    # ... and with the flips: without them the same weights score otherwise.
    unflipped = score_h5_pairs(model, pairs, replace(scoring_settings(0.5, 4), tta=()))
    assert {s.name: round(s.n_ssim, 5) for s in unflipped} != {
        k: round(v, 5) for k, v in chosen["volumes"].items()}
    resumed = run_in_process("fmc.train", *averaged, "ckpt=last", "trainer.max_steps=5",
                             run_dir=run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 5 and last[AVERAGE_STATE_KEY]["updates"] == 5
