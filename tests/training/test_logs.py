"""What a person reads from a training sweep (fmc/core/logs.py): each line once, in fmc's format,
without other packages' chatter, in a bounded number of lines; everything with verbose=true.

The real command in a subprocess: Hydra's logging, Lightning's handlers and W&B's terminal
output exist only there.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import TINY_RUN, run_command

# What the default output must not hold: Lightning lines (its own "INFO: " handler and its
# loggers' INFO), its litlogger tip and model summary, W&B's header, notice and history/summary
# block, alembic's plugin set-up (pulled in through optuna), Lightning's pytree deprecation.
NOISE = ("INFO: ", "lightning.", "GPU available", "Seed set to", "Tip:", "litlogger",
         "Trainable params", "Total params", "Params", "wandb: ", "anonymous setting",
         "Run history", "Run summary", "alembic", "setup plugin", "LeafSpec")
# This sweep's output measured 25 lines as counted here (148, with 31 messages repeated within a
# job, before fmc/core/logs.py); the bound leaves room for a warning or two.
MAX_LINES = 32
# fmc's log format (conf/hydra/default.yaml) and Lightning's own handler's ("INFO: ..."): a
# message printed by both is the same message.
_PREFIX = re.compile(r"^(\[\d\d:\d\d:\d\d\]\[[\w.]+\]\[[A-Z]+\] |[A-Z]+: )")
_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BAR = re.compile(r"\|[^|]*\| *\d+/(\d+|\?) \[")
# Where Hydra starts the next job of a sweep: "[HH:MM:SS][HYDRA] \t#1 : seed=2 ...".
_JOB = re.compile(r"\[HYDRA\]\s+#\d+ : ")


def shown_lines(output: str) -> list[str]:
    """The lines a person reads in a captured output. Not counted: blank lines, and the
    progress bars' drawings (tqdm, as Lightning and fmc draw them): a carriage return starts a
    redraw, so only the text after a line's last one is kept; terminal escapes (a bar moving
    the cursor) are removed; what is left of a bar is a line holding its meter
    ("desc: 50%|#####     | 1/2 [..."), dropped."""
    lines = [_ESCAPE.sub("", line.rsplit("\r", 1)[-1]).rstrip() for line in output.split("\n")]
    return [line for line in lines if line and not _BAR.search(line)]


def repeated_messages(lines: list[str]) -> list[str]:
    """Messages printed twice within one job of the sweep (prefix removed: the same record
    through two handlers, or the same thing said twice). Lines that each job says once, such
    as the network it trains, are not repeats."""
    repeated, seen = [], set()
    for line in lines:
        if _JOB.search(line):
            seen = set()
        message = _PREFIX.sub("", line)
        if message in seen:
            repeated.append(line)
        seen.add(message)
    return repeated


def test_a_two_run_sweep_prints_each_line_once_and_no_chatter(h5_root: Path, tmp_path: Path):
    overrides = [a for a in TINY_RUN if not a.startswith(("logger=", "trainer.enable_progress_bar"))]
    result = run_command("fmc.train", "--multirun", *overrides, "logger=wandb", "seed=1,2",
                         f"data.root={h5_root}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                         cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    lines = shown_lines(output)
    assert not repeated_messages(lines), output
    assert [line for line in lines if any(noise in line for noise in NOISE)] == [], output
    assert len(lines) <= MAX_LINES, output
    # What a person needs is there: the network, the scores, where each W&B run went.
    assert sum("network: unet3d" in line for line in lines) == 2, output
    assert sum("W&B offline run: wandb sync " in line for line in lines) == 2, output
    assert sum("test: predicting and scoring 1 whole volume" in line for line in lines) == 2


def test_verbose_shows_lightning_once_in_fmcs_format(h5_root: Path, tmp_path: Path):
    # Lightning's lines only: no whole-volume validation, calibration or test volumes.
    result = run_command("fmc.train", *TINY_RUN, f"data.root={h5_root}", "verbose=true",
                         "callbacks.checkpoint.monitor=val/n_ssim", "model.fallback=none",
                         "test_volumes=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    lines = shown_lines(output)
    gpu = [line for line in lines if "GPU available" in line]
    assert len(gpu) == 1 and "[lightning.pytorch.utilities.rank_zero][INFO] GPU available" in gpu[0]
    assert any("[lightning.fabric.utilities.seed][INFO] Seed set to" in line for line in lines)
    assert not repeated_messages(lines), output
    assert "Trainable params" in output  # Lightning's model summary
