"""Run predictions over a list of files with one checkpoint or a registry (predict, challenge).

Checkpoints are loaded (and so validated) before the first volume is predicted: a bad checkpoint
stops the run before any output is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.inference.network_input import open_volume
from fmc.inference.prediction import PredictSettings, device_for, load_model, predict_file
from fmc.inference.registry import ModelRegistry
from fmc.io.metadata import describe

log = logging.getLogger(__name__)


class ModelPicker:
    """One checkpoint for every file, or a registry's choice per file (models loaded once)."""

    def __init__(self, device: str, ckpt: str | None = None, registry: ModelRegistry | None = None):
        self.device = device
        self.registry = registry
        self.models = {}
        paths = [Path(ckpt)] if registry is None else [e.ckpt for e in registry.entries]
        for path in paths:
            self.models[path] = load_model(path, device)

    @classmethod
    def from_config(cls, ckpt: str, registry: str | None, device: str) -> ModelPicker:
        """From fmc.predict's ``ckpt``/``registry``/``device`` keys."""
        device = device_for(device)
        if ckpt == "auto":
            if not registry:
                raise FmcConfigError("ckpt=auto needs registry=DIR (a folder with models.yaml, "
                                     "or a training sweep's output folder)")
            return cls(device, registry=ModelRegistry.from_folder(registry))
        return cls(device, ckpt=ckpt)

    def pick(self, path: Path):
        """The model for ``path`` (logging why, with a registry)."""
        if self.registry is None:
            return next(iter(self.models.values()))
        opened = open_volume(path)
        try:
            choice = self.registry.choose(opened.meta, opened.volume.shape)
            log.info("%s (%s): model %s — %s", path.name, describe(opened.meta),
                     choice.entry.describe(), choice.reason)
        finally:
            opened.close()
        return self.models[choice.entry.ckpt]


def check_inputs(files: Sequence[Path], output: Path) -> None:
    """Open every input once (shape, metadata) before anything is written.

    Raises :class:`FmcInputError` naming every unreadable, 2D or 4D volume (not only the
    first, so that one run lists all there is to fix), or two inputs that would write the same
    output name.
    """
    names: dict[str, Path] = {}
    problems: list[str] = []
    for path in files:
        try:
            opened = open_volume(path)
        except FmcInputError as error:
            problems.append(str(error))
            continue
        opened.close()
        if opened.output_name in names:
            raise FmcInputError(f"{path} and {names[opened.output_name]} would both write "
                                f"{output / opened.output_name}")
        names[opened.output_name] = path
    if len(problems) == 1:
        raise FmcInputError(problems[0])
    if problems:
        for problem in problems:
            log.error("%s", problem)
        raise FmcInputError(f"{len(problems)} of {len(files)} input(s) cannot be predicted: "
                            + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))


def predict_files(files: Sequence[Path], picker: ModelPicker, output: Path,
                  settings: PredictSettings) -> list[Path]:
    """Predict every file into ``output`` (see :func:`check_inputs`); returns the written paths."""
    written = []
    for path in files:
        started = time.perf_counter()
        model = picker.pick(path)
        result = predict_file(model, path, output, settings)
        log.info("wrote %s in %.1f s", result, time.perf_counter() - started)
        written.append(result)
    return written
