"""The registries of named choices (fmc.core.named_choices): names, parameters from the builder's
signature, one-line refusals, and a network and a loss from a package outside fmc (Python entry
points of groups ``fmc.networks`` and ``fmc.losses``) that train and predict."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fmc.core.errors import FmcConfigError
from fmc.core.named_choices import Registry
from tests.conftest import TINY_RUN, assert_user_error, run_command


def make_registry(group: str | None = None) -> Registry:
    registry = Registry("thing", "model.thing", "conf/thing.yaml", group=group,
                        arguments_key="model.thing_kwargs", arguments_where="conf/{name}.yaml")

    @registry.register("plain")
    def plain(in_channels: int, width: int = 3) -> tuple:
        return in_channels, width

    def fixed_depth(depth: int) -> None:
        if depth != 2:
            raise ValueError(f"model.depth={depth}: fixed takes depth 2")

    registry.register("fixed", lambda depth=2: depth, check=fixed_depth)
    return registry


def write_outside_package(folder: Path, groups: dict[str, dict[str, str]], source: str = "",
                          name: str = "fmc_outside") -> Path:
    """An installed-looking package in ``folder``: ``<name>/__init__.py`` holding ``source``
    and a dist-info folder whose entry_points.txt declares ``groups``."""
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(textwrap.dedent(source))
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items()) + "\n"
        for group, points in groups.items()))
    return folder


def test_an_unknown_name_lists_the_valid_ones_and_the_file():
    registry = make_registry()
    assert registry.names() == ("plain", "fixed") and "plain" in registry
    with pytest.raises(FmcConfigError, match=r"^model.thing=other: choose one of plain, fixed "
                                             r"\(conf/thing.yaml\)$"):
        registry.get("other")


def test_parameters_come_from_the_signature_and_unknown_arguments_are_one_line():
    registry = make_registry()
    assert list(registry.parameters("plain")) == ["in_channels", "width"]
    assert registry.parameters("plain")["width"].default == 3
    registry.check_arguments("plain", {"width": 4})
    with pytest.raises(FmcConfigError, match=r"^model.thing_kwargs.depth: thing plain does not "
                                             r"take it here; it takes in_channels, width "
                                             r"\(conf/plain.yaml\)$"):
        registry.check_arguments("plain", {"depth": 4})
    with pytest.raises(FmcConfigError, match="model.thing_kwargs.in_channels"):
        registry.check_arguments("plain", {"in_channels": 4}, reserved=("in_channels",))


def test_a_rule_between_settings_runs_with_the_settings_it_names():
    registry = make_registry()
    registry.check("fixed", {"depth": 2, "features": 8})
    with pytest.raises(FmcConfigError, match=r"^model.depth=3: fixed takes depth 2 "
                                             r"\(conf/fixed.yaml\)$"):
        registry.check("fixed", {"depth": 3, "features": 8})
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("plain", print)


def test_entry_points_join_the_names_and_a_broken_one_is_one_line(tmp_path, monkeypatch):
    group = "fmc.test_things"
    write_outside_package(tmp_path, {group: {"doubled": "fmc_outside_ok:doubled",
                                             "broken": "fmc_outside_missing:build"}},
                          source="""
                          def doubled(width: int = 1) -> int:
                              return 2 * width

                          def _positive(width: int = 1) -> None:
                              if width < 1:
                                  raise ValueError(f"model.thing_kwargs.width={width}: give >= 1")

                          doubled.check = _positive
                          """, name="fmc_outside_ok")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = make_registry(group)
    assert registry.names() == ("plain", "fixed", "doubled", "broken")  # nothing loaded yet
    assert registry.get("doubled")(width=3) == 6 and list(registry.parameters("doubled")) == ["width"]
    assert registry.origin("doubled") == "entry point fmc_outside_ok:doubled"
    assert registry.origin("plain") == "fmc"
    with pytest.raises(FmcConfigError, match="width=0: give >= 1"):
        registry.check("doubled", {"width": 0})
    with pytest.raises(FmcConfigError) as caught:
        registry.get("broken")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        "model.thing=broken: the entry point broken = fmc_outside_missing:build (group "
        "fmc.test_things) failed to load (ModuleNotFoundError")
    with pytest.raises(FmcConfigError, match="choose one of plain, fixed, doubled, broken "
                                             r"\(conf/thing.yaml; or an entry point of group "
                                             r"fmc.test_things\)"):
        registry.get("absent")

    # The zoo's architecture file carries fmc's code only: an outside network is refused.
    from types import SimpleNamespace

    from fmc.inference import zoo_architecture
    from fmc.models import networks

    monkeypatch.setattr(networks, "NETWORKS", registry)
    with pytest.raises(FmcConfigError, match=r"^format=bioimageio: network doubled comes from "
                                             r"outside fmc \(entry point fmc_outside_ok:doubled\)"):
        zoo_architecture.check_packable(SimpleNamespace(hparams={"network": "doubled"}))
    zoo_architecture.check_packable(SimpleNamespace(hparams={"network": "plain"}))


def test_fmc_registers_its_networks_and_losses():
    from fmc.models.losses import LOSSES
    from fmc.models.networks import NETWORK_SETTINGS, NETWORKS
    from fmc.training.config_checks import training_choices

    assert NETWORKS.names()[:3] == ("unet3d", "monai_basicunet", "monai_segresnet")
    assert LOSSES.names()[:3] == ("ssim_l1", "nssim_l1", "l1")
    assert set(NETWORKS.parameters("unet3d")) == set(NETWORK_SETTINGS)
    assert list(LOSSES.parameters("nssim_l1")) == ["eps", "data_range", "crop_border"]
    choices = training_choices()
    assert choices["model.network"][0] == NETWORKS.names()
    assert choices["loss.name"][0] == LOSSES.names()


def test_optimizers_and_schedules_are_built_by_name():
    import torch

    from fmc.models.optimizers import OPTIMIZERS, SCHEDULERS, build_optimization
    from fmc.training.config_checks import training_choices

    assert OPTIMIZERS.names()[:3] == ("radam", "adam", "adamw")
    assert SCHEDULERS.names()[:3] == ("none", "cosine", "plateau")
    assert training_choices()["model.scheduler"][0] == SCHEDULERS.names()
    weights = [torch.nn.Parameter(torch.zeros(2))]
    asked = []

    def total_steps() -> int:
        asked.append(True)
        return 7

    plain = build_optimization(weights, "adamw", 1e-3, 0.01, "none", total_steps)
    assert isinstance(plain, torch.optim.AdamW) and plain.defaults["weight_decay"] == 0.01
    assert not asked  # only a schedule that names total_steps asks for it
    cosine = build_optimization(weights, "adam", 1e-3, 0.0, "cosine", total_steps)
    assert cosine["lr_scheduler"]["scheduler"].T_max == 7 and asked
    plateau = build_optimization(weights, "radam", 1e-3, 0.0, "plateau", total_steps)
    assert plateau["lr_scheduler"]["monitor"] == "val/n_ssim"
    with pytest.raises(FmcConfigError, match="model.optimizer=sgd: choose one of radam, adam"):
        build_optimization(weights, "sgd", 1e-3, 0.0, "none", total_steps)


# ----------------------------------------------------------------------------------------------
# A network and a loss from outside fmc: train with them, predict with the checkpoint
# ----------------------------------------------------------------------------------------------
OUTSIDE_SOURCE = """
import torch
from torch import nn


class TinyNet(nn.Module):
    required_divisor = 1

    def __init__(self, in_channels: int, out_channels: int, residual: bool, width: int) -> None:
        super().__init__()
        self.in_channels, self.residual = in_channels, residual
        self.body = nn.Sequential(nn.Conv3d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv3d(width, out_channels, 3, padding=1))

    def forward(self, x):
        out = self.body(x)
        return out + x[:, :1] if self.residual else out


def build_tiny_net(in_channels: int, out_channels: int, residual: bool = True,
                   width: int = 3) -> TinyNet:
    return TinyNet(in_channels, out_channels, residual, width)


def _width_rule(width: int = 3) -> None:
    if width < 1:
        raise ValueError(f"model.network_kwargs.width={width}: give 1 or more")


build_tiny_net.check = _width_rule


class TinyL2(nn.Module):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, prediction, target, input_view=None):
        loss = self.scale * ((prediction.float() - target.float()) ** 2).mean()
        return loss, {"l2": loss.detach()}
"""


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> dict[str, str]:
    """The environment of a command that has the outside package installed (on PYTHONPATH)."""
    folder = write_outside_package(
        tmp_path_factory.mktemp("site"),
        {"fmc.networks": {"tiny_net": "fmc_outside:build_tiny_net"},
         "fmc.losses": {"tiny_l2": "fmc_outside:TinyL2"}}, OUTSIDE_SOURCE)
    return {"PYTHONPATH": str(folder)}


def test_an_outside_network_and_loss_train_and_predict(h5_root: Path, tmp_path: Path,
                                                       outside: dict[str, str]):
    from fmc.simulation.synth import write_pair

    tiny = [a for a in TINY_RUN if not a.startswith("model=")]
    run = tmp_path / "run"
    result = run_command("fmc.train", *tiny, "model=unet3d", "model.network=tiny_net",
                         "+model.network_kwargs.width=2", "loss=l1", "loss.name=tiny_l2",
                         "+loss.kwargs.scale=2.0", f"data.root={h5_root}",
                         f"hydra.run.dir={run}", cwd=tmp_path, env=outside)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = run / "checkpoints" / "last.ckpt"
    import torch

    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["network"] == "tiny_net" and hparams["network_kwargs"] == {"width": 2}
    assert hparams["loss"] == "tiny_l2"

    raw = tmp_path / "raw"
    write_pair(raw, 1, "nucleus", 0, shape=(16, 32, 32), scale=3.0)
    predicted = run_command("fmc.predict", f"ckpt={checkpoint}", f"input={raw}",
                            f"output={tmp_path / 'pred'}", "progress=false", cwd=tmp_path,
                            env=outside)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert (tmp_path / "pred" / "image_0_nucleus_angle.tif").is_file()
    # Without the package the checkpoint's network is unknown: one line, exit 2.
    missing = run_command("fmc.predict", f"ckpt={checkpoint}", f"input={raw}",
                          f"output={tmp_path / 'none'}", "progress=false", cwd=tmp_path,
                          env={"PYTHONPATH": ""})
    assert_user_error(missing, "model.network=tiny_net: choose one of unet3d",
                      "entry point of group fmc.networks")
    assert not (tmp_path / "none").exists()


def test_an_outside_network_rule_and_arguments_are_checked_with_the_config(
        tmp_path: Path, outside: dict[str, str]):
    tiny = [a for a in TINY_RUN if not a.startswith("model=")]
    result = run_command("fmc.train", *tiny, "model.network=tiny_net",
                         "+model.network_kwargs.width=0", "logger=none", cwd=tmp_path,
                         env=outside)
    assert_user_error(result, "model.network_kwargs.width=0: give 1 or more "
                              "(conf/model/tiny_net.yaml)")
    result = run_command("fmc.train", *tiny, "model.network=tiny_net",
                         "+model.network_kwargs.depth=0", "logger=none", cwd=tmp_path,
                         env=outside)
    assert_user_error(result, "model.network_kwargs.depth: network tiny_net does not take it")

