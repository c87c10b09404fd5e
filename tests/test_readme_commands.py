"""The README is executed: every ``python -m fmc.*`` and ``make`` command in README.md's code
blocks runs here as written, through bash, from a user's folder outside the checkout.

The only additions are tiny sizes, given the one documented way (README, "Commands as
written"): ``FMC_OVERRIDES_<VERB>`` environment variables whose overrides fmc appends to that
command's line. A command marked ``[compose only: why]`` needs what this machine lacks (a GPU,
SLURM, napari) or names folders of the reader's own; its config is composed as Hydra will
(fmc/core/command_line.py, a sweep with its first values), which checks every key it names.
The user's folder holds ``data/fmc_train`` (challenge pairs of studies 1 and 3) and
``data/my_views`` (their views), the folders the README's commands name; the embedded dataset
lives in ``$FMC_DATA``
(tests/conftest.py). Commands run in pipeline order (prepare, train, report, predict, challenge,
evaluate, ...), each after those it needs. The commands that docs/*.md tell a user to type are
checked by composition (they are benchmark protocols of minutes to hours).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fmc.core.cli import CONFIG_DIR
from fmc.core.command_line import check_command_line
from fmc.core.errors import FmcConfigError
from tests.conftest import REPO, TINY_DATA
from tests.wandb_records import offline_runs

COMMAND = re.compile(r"^(?:xvfb-run -a )?(?:python -m (fmc\.\w+)|make (\w[\w-]*))")
COMPOSE_ONLY = re.compile(r"\[compose only: ([^\]]+)\]")
# The tiny sizes, per command. The logger stays the user's default: W&B, offline.
TINY = {
    "FMC_OVERRIDES_TRAIN": "model=unet3d model.features=4 model.depth=2 'data.patch_size=[16,32,32]' "
                           "data.batch_size=1 data.epoch_steps=1 trainer.max_steps=2 "
                           "trainer.num_sanity_val_steps=0 trainer.enable_progress_bar=false",
    "FMC_OVERRIDES_PREDICT": "progress=false",
}
ORDER = ("fmc.prepare", "fmc.train", "fmc.report", "fmc.predict", "fmc.challenge",
         "fmc.evaluate", "fmc.view", "fmc.export", "fmc.registry", "make")


@dataclass
class Command:
    line: str              # as written (continuations joined)
    module: str            # fmc.<verb>, or "make"
    target: str | None     # the make target
    compose_only: str | None
    source: str            # file:line


def commands_in(path: Path) -> list[Command]:
    """The ``python -m fmc.*`` and ``make`` commands of a markdown file's code blocks."""
    found, inside, pending, start = [], False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        if not pending:
            start = number
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip() + " "
            continue
        text, pending = pending.strip(), ""
        match = COMMAND.match(text)
        if not match:
            continue
        marker = COMPOSE_ONLY.search(text)
        found.append(Command(text, match.group(1) or "make", match.group(2),
                             marker.group(1) if marker else None, f"{path.name}:{start}"))
    return found


def without_comment(line: str) -> str:
    """The command without its trailing ``# ...`` comment (a ``#`` after a space, unquoted)."""
    quote = None
    for index, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and index and line[index - 1] == " ":
            return line[:index].rstrip()
        elif char == "#" and quote is None and index == 0:
            return ""
    return line


def user_folder(root: Path) -> Path:
    """A user's folder with challenge pairs of studies 1 and 3 and a folder of their views."""
    from fmc.simulation.synth import write_pair

    raw = root / "data" / "fmc_train"
    index = 0
    for study in (1, 3):
        for _ in range(3):
            for content in ("nucleus", "membrane"):
                write_pair(raw, study, content, index, **TINY_DATA)
            index += 1
    views = root / "data" / "my_views"
    views.mkdir(parents=True)
    for view in raw.glob("*_angle.tif"):
        shutil.copy(view, views / view.name)
    return root


def run_as_written(line: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """``line`` through bash in ``cwd``, with this interpreter as ``python`` on the PATH."""
    environment = {**os.environ, **TINY, "WANDB_MODE": "offline",
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    environment.pop("FMC_VERBOSE", None)
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=timeout)


def compose_as_written(line: str, cwd: Path) -> None:
    """Compose the command's config as Hydra will (a sweep with its first values), in bash's
    words for the line: every key, group option and override it names must exist."""
    words = subprocess.run(["bash", "-c", f'for w in {line.removeprefix("xvfb-run -a ")}; '
                            'do printf "%s\\0" "$w"; done'], cwd=cwd, capture_output=True,
                           text=True, check=True).stdout.split("\0")[:-1]
    assert words[:2] == ["python", "-m"], words
    module = words[2]
    check_command_line(CONFIG_DIR, module.split(".")[-1], module, [module, *words[3:]])


def readme_plan() -> list[Command]:
    commands = commands_in(REPO / "README.md")
    return sorted(commands, key=lambda c: ORDER.index(c.module) if c.module in ORDER else len(ORDER))


def test_the_readme_has_commands_and_every_one_is_planned():
    commands = commands_in(REPO / "README.md")
    modules = {c.module for c in commands}
    assert {"fmc.train", "fmc.predict", "fmc.evaluate", "fmc.prepare", "fmc.report", "make"} <= modules
    unknown = [c.source for c in commands if c.module not in ORDER]
    assert unknown == [], f"a new command needs its place in ORDER: {unknown}"
    sweep = [c for c in commands if "--multirun study=1,2,3,4,5 content=nucleus,membrane" in c.line]
    assert sweep and sweep[0].compose_only is None  # the ten models run for real


def test_every_readme_command_runs_as_written(tmp_path: Path):
    """Every ``python -m fmc.*`` command; the ``make`` targets: the next test."""
    folder = user_folder(tmp_path / "user")
    failures = []
    for command in readme_plan():
        line = without_comment(command.line)
        if command.module == "make":
            continue
        if command.compose_only:
            compose_as_written(line, folder)
            continue
        start = time.perf_counter()
        result = run_as_written(line, folder)
        print(f"{time.perf_counter() - start:6.1f} s  {command.source}: {line}")
        if result.returncode != 0:
            failures.append(f"{command.source}: {command.line}\n{result.stdout[-1500:]}"
                            f"\n{result.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
    # What the commands were for: the ten models, predictions, scores, a report.
    sweeps = sorted((folder / "outputs" / "train" / "multirun").iterdir())
    ten = [s for s in sweeps if len([p for p in s.iterdir() if (p / "metrics.json").is_file()]) == 10]
    assert ten
    # The W&B runs table of the ten models, read back from the offline run files: ten distinct
    # names (study and content), one group (the sweep), job type train, the sort columns.
    runs = offline_runs(ten[0])
    assert len(runs) == 10 and all(run.finished for run in runs)
    assert {run.name for run in runs} == {f"study{s}-{c}-raw_distance-ssim_l1-unet3d-seed1337"
                                          for s in range(1, 6) for c in ("nucleus", "membrane")}
    assert {run.group for run in runs} == {ten[0].name}
    assert {run.job_type for run in runs} == {"train"}
    for run in runs:
        study, content = run.name.split("-")[:2]
        assert {f"study:{study.removeprefix('study')}", f"content:{content}", "network:unet3d",
                "experiment:none", "profile:cpu"} <= set(run.tags), run.tags
        assert {"best/val_n_ssim", "steps", "seconds"} <= set(run.summary), sorted(run.summary)
        assert "val/volume" in {key.split("/count")[0] for key in run.logged_keys}
    assert len(list((folder / "outputs" / "predictions").glob("*_angle.tif"))) == 12
    assert (folder / "outputs" / "eval").is_dir()
    assert list(folder.glob("outputs/train/multirun/*/report.md"))
    assert list(folder.glob("outputs/train/multirun/*/report.html"))


@pytest.mark.slow  # make demo: two pooled-study models, their test volumes and the report
def test_the_readme_make_targets_run(tmp_path: Path):
    targets = [c.target for c in commands_in(REPO / "README.md") if c.module == "make"]
    assert targets == ["demo", "test"]
    # make test is the suite this test runs in; CI runs it (.ci/run).
    assert "make test" in (REPO / ".ci" / "run").read_text()
    result = run_as_written(f"make -C {REPO} demo", tmp_path, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo finished" in result.stdout


@pytest.mark.parametrize("doc", sorted(p.name for p in (REPO / "docs").glob("*.md")))
def test_the_docs_commands_compose(doc: str, tmp_path: Path):
    commands = [c for c in commands_in(REPO / "docs" / doc) if c.module.startswith("fmc.")]
    for command in commands:
        try:
            compose_as_written(without_comment(command.line), tmp_path)
        except FmcConfigError as error:
            raise AssertionError(f"{command.source}: {command.line}: {error}") from None
