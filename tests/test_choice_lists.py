"""The lists of named choices come from the registries: docs/choices.md and --help."""

from pathlib import Path

import pytest

from fmc.models.networks import NETWORKS
from fmc.reporting.choice_lists import choices_markdown, choices_text, registries
from tests.conftest import run_command

ROOT = Path(__file__).resolve().parents[1]


def test_docs_choices_is_what_the_registries_hold():
    assert (ROOT / "docs" / "choices.md").read_text() == choices_markdown(), (
        "docs/choices.md is out of date: run `make choices`")


def test_every_registry_is_listed_with_a_description_for_each_name():
    found = registries()
    assert set(found) == {"model.network", "loss.name", "model.optimizer", "model.scheduler",
                          "model.fallback", "model.averaging", "channels.list", "logger.name", "weighting",
                          "output_format"}
    text = choices_markdown()
    for key, registry in found.items():
        assert f"`{key}`" in text and registry.group in text
        for name in registry.names():
            row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
            assert row.split("|")[2].strip(), f"{key}={name} has no description"


def test_a_registered_name_shows_up_in_help_and_docs_at_once():
    NETWORKS.register("tiny_test_net", lambda in_channels, out_channels: None)
    try:
        assert "tiny_test_net" in choices_text("train")
        assert "| `tiny_test_net` |" in choices_markdown(["model.network"])
    finally:
        NETWORKS.unregister("tiny_test_net")


@pytest.mark.parametrize("command, shown", [
    ("train", ["model.network: unet3d", "logger.name: wandb, csv, none"]),
    ("predict", ["weighting: gaussian, constant, roof", "fallback: auto, none, difference",
                 "output_format: tiff, ome-zarr"]),
])
def test_help_ends_with_the_named_choices(command: str, shown: list[str], tmp_path: Path):
    result = run_command(f"fmc.{command}", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "== Named choices" in result.stdout
    for fragment in shown:
        assert fragment in result.stdout
    assert list(tmp_path.iterdir()) == []  # --help makes no run folder
