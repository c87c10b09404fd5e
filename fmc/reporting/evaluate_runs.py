"""Scoring a run that has no test scores yet, with the real commands.

``python -m fmc.predict`` and ``python -m fmc.evaluate`` run as subprocesses on the run's test
split, with the identity and Gaussian (σ sweep) baselines beside the model; their outputs go to
``<run>/test_predictions`` and ``<run>/test_scores``, each stamped with the checkpoint it came from.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmc.core.errors import FmcInputError
from fmc.core.files import write_text_atomic
from fmc.reporting.runs import PREDICTIONS_DIR, SCORES_DIR, RunReport, read_run_config, run_test_list

log = logging.getLogger("fmc.report")

# Written by this command beside the scores (the checkpoint and list they came from) and the
# predictions (the checkpoint file they came from).
PROVENANCE_FILE = "report_evaluation.json"
# Hydra override values that need no quoting.
_PLAIN_VALUE = re.compile(r"[\w./:+@-]+")
# A log line of an fmc command (conf/hydra/default.yaml's format).
_LOG_LINE = re.compile(r"\[\d\d:\d\d:\d\d\]\[(?P<name>[\w.]+)\]\[(?P<level>INFO|WARNING|ERROR|CRITICAL)\] "
                       r"(?P<message>.*)")


def hydra_override(key: str, value: Any) -> str:
    """``key=value`` for a Hydra command line, quoting values with spaces, commas or quotes."""
    text = str(value)
    if _PLAIN_VALUE.fullmatch(text):
        return f"{key}={text}"
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"{key}='{escaped}'"


def evaluation_commands(run: Path, checkpoint: Path, split_list: Path, raw: Path | None,
                        predict_overrides: Sequence[str] = (),
                        evaluate_overrides: Sequence[str] = ()) -> list[list[str]]:
    """The ``fmc.predict`` and ``fmc.evaluate`` command lines that score ``run`` on its test list.

    Their Hydra folders are the output folders themselves, so each keeps its config and log.
    """
    predictions, scores = run / PREDICTIONS_DIR, run / SCORES_DIR
    predict = [sys.executable, "-m", "fmc.predict", hydra_override("ckpt", checkpoint),
               hydra_override("input", split_list), hydra_override("output", predictions),
               "progress=false", hydra_override("hydra.run.dir", predictions),
               *predict_overrides]
    evaluate = [sys.executable, "-m", "fmc.evaluate",
                *([] if raw is None else [hydra_override("input", raw)]),
                hydra_override("prediction", predictions),
                hydra_override("split_list", split_list), "baseline=[identity,gaussian]",
                "sigma=sweep", hydra_override("output", scores),
                "progress=false", hydra_override("hydra.run.dir", scores), *evaluate_overrides]
    return [predict, evaluate]


def _checkpoint_stamp(checkpoint: Path) -> dict[str, Any]:
    stat = checkpoint.stat()
    return {"checkpoint": str(checkpoint.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}


def _predictions_reusable(predictions: Path, split_list: Path, checkpoint: Path) -> bool:
    # Predictions this command wrote earlier from the same checkpoint file, all present: a run
    # whose evaluation failed after prediction is not predicted again. Anything else (another or
    # a rewritten checkpoint, files missing) is predicted anew.
    from fmc.preprocessing.splits import read_list

    try:
        stamp = json.loads((predictions / PROVENANCE_FILE).read_text(encoding="utf-8"))
        angles = [angle for angle, _ in read_list(split_list)]
    except (OSError, ValueError, FmcInputError):
        return False
    return stamp == _checkpoint_stamp(checkpoint) and bool(angles) and \
        all((predictions / f"{Path(a).stem}.tif").is_file() for a in angles)


def evaluate_run(report: RunReport, raw: Path | None, predict_overrides: Sequence[str] = (),
                 evaluate_overrides: Sequence[str] = ()) -> None:
    """Predict and score ``report``'s test split with the real commands; on failure the run's
    status says why (the sweep's other runs still get reported).
    """
    if report.checkpoint is None:
        report.status = "no checkpoint to evaluate"
        return
    try:
        split_list = run_test_list(read_run_config(report.folder))
    except FmcInputError as error:
        report.status = f"not evaluated: {error}"
        return
    predictions = report.folder / PREDICTIONS_DIR
    predict, evaluate = evaluation_commands(report.folder, report.checkpoint, split_list, raw,
                                            predict_overrides, evaluate_overrides)
    if _predictions_reusable(predictions, split_list, report.checkpoint):
        log.info("%s: reusing the predictions in %s", report.name, predictions)
    elif not _run_step(report, predict):
        return
    else:
        write_text_atomic(predictions / PROVENANCE_FILE,
                          json.dumps(_checkpoint_stamp(report.checkpoint), indent=2) + "\n")
    if _run_step(report, evaluate):
        write_text_atomic(report.folder / SCORES_DIR / PROVENANCE_FILE, json.dumps(
            {"checkpoint": str(report.checkpoint), "split_list": str(split_list),
             "raw": None if raw is None else str(raw)}, indent=2) + "\n")


def _run_step(report: RunReport, command: list[str]) -> bool:
    """Run one command; False (and the run's status set to its error line) when it fails.

    The command's log lines come through as they are written, labelled with the run (a
    prediction takes seconds to minutes a volume); the rest of its output is kept for errors.
    """
    log.info("%s: %s", report.name, " ".join(command[1:]))
    started = time.perf_counter()
    output: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as child:
        for line in child.stdout:
            output.append(line)
            record = _LOG_LINE.match(line.rstrip("\n"))
            if record:
                logging.getLogger(record["name"]).log(logging.getLevelName(record["level"]),
                                                      "%s: %s", report.name, record["message"])
    if child.returncode == 0:
        log.info("%s: %s done in %.0f s", report.name, command[2], time.perf_counter() - started)
        return True
    lines = [line.rstrip("\n") for line in output if line.strip()]
    report.status = f"evaluation failed ({command[2]}): {lines[-1] if lines else '?'}"
    log.warning("%s: %s", report.name, report.status)
    return False


def recorded_checkpoint(scores_dir: Path) -> Path | None:
    """The checkpoint :func:`evaluate_run` recorded beside the scores in ``scores_dir``, or None."""
    path = scores_dir / PROVENANCE_FILE
    try:
        return Path(json.loads(path.read_text(encoding="utf-8"))["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
