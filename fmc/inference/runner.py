"""Run predictions over a list of files with checkpoints or a registry (predict, challenge).

Checkpoints are loaded (and so validated) before the first volume is predicted: a bad checkpoint
stops the run before any output is written. :func:`predict_files` is the one per-file loop of
both commands; what a failing file does is its ``on_error`` option (fmc.predict stops,
fmc.challenge writes the input in its place).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import remove_stale_parts, writable_folder
from fmc.core.naming import H5_SUFFIXES, OUTPUT_MARK, TIFF_SUFFIXES, is_ground_truth, is_zarr
from fmc.core.protected import refuse_overwriting, same_location
from fmc.inference.ensemble import ModelEnsemble, load_models
from fmc.inference.network_input import open_volume
from fmc.inference.predict_settings import PredictSettings, device_for
from fmc.inference.prediction import output_name, predict_file, safe_name
from fmc.inference.registry import ModelRegistry
from fmc.io.metadata import describe

log = logging.getLogger(__name__)
# What predict_files does with a file that fails: write the input in its place, or stop.
ON_ERROR = ("identity", "fail")


class ModelPicker:
    """One model (or ensemble) for every file, or a registry's choice per file.

    Each checkpoint is loaded once, before the first file; a registry's several models of one
    study and content are averaged (:class:`fmc.inference.ensemble.ModelEnsemble`).
    """

    def __init__(self, device: str, ckpt: str | Path | Sequence[str | Path] | None = None,
                 registry: ModelRegistry | None = None):
        self.device = device
        self.registry = registry
        self.models = {}
        if registry is None:
            paths = tuple(Path(p) for p in checkpoint_list(ckpt))
            self.models[paths] = load_models(paths, device)
            return
        loaded = {e.ckpt: load_models([e.ckpt], device) for e in registry.entries}
        for entry in registry.entries:
            group = tuple(e.ckpt for e in registry.alike(entry))
            if group not in self.models:
                self.models[group] = (loaded[group[0]] if len(group) == 1 else
                                      ModelEnsemble([loaded[p] for p in group], group).eval())

    @classmethod
    def from_config(cls, ckpt, registry: str | None, device: str) -> ModelPicker:
        """From fmc.predict's ``ckpt`` (a path, a list of paths, or ``auto``), ``registry`` and
        ``device`` keys."""
        device = device_for(device)
        if isinstance(ckpt, str) and ckpt == "auto":
            if not registry:
                raise FmcConfigError("ckpt=auto needs registry=DIR (a folder with models.yaml, "
                                     "a training sweep's output folder, a model package .zip "
                                     "or its URL)")
            from fmc.inference.packages import open_registry

            return cls(device, registry=open_registry(registry))
        return cls(device, ckpt=ckpt)

    def pick(self, path: Path):
        """The model for ``path`` (logging why, with a registry)."""
        if self.registry is None:
            return next(iter(self.models.values()))
        opened = open_volume(path)
        try:
            choice = self.registry.choose(opened.meta, opened.volume.shape)
            log.info("%s (%s): model %s — %s", path.name, describe(opened.meta),
                     choice.describe(), choice.reason)
        finally:
            opened.close()
        return self.models[choice.checkpoints]


def checkpoint_list(ckpt) -> list[str]:
    """``ckpt=`` as a list of paths: one path, or a list (``ckpt=[a.ckpt,b.ckpt]``) averaged.

    Raises
    ------
    FmcConfigError
        If it holds ``auto`` inside a list, or not paths (an empty list:
        :func:`fmc.inference.ensemble.load_models` refuses it).
    """
    from omegaconf import ListConfig

    values = list(ckpt) if isinstance(ckpt, (list, tuple, ListConfig)) else [ckpt]
    if any(not isinstance(v, (str, Path)) or not str(v) or str(v) == "auto" for v in values):
        raise FmcConfigError(f"ckpt={values if len(values) != 1 else values[0]!r}: give a "
                             "checkpoint path, a list of them to average ([a.ckpt,b.ckpt]), or "
                             "auto with registry=")
    return [str(v) for v in values]


def input_files(path: str | Path) -> list[Path]:
    """The volumes named by ``input=``.

    A TIFF, H5 or (OME-)zarr volume; a folder (its TIFFs except ``*_fused`` ground truths, or,
    when it holds no TIFF, its H5 files, else its zarr images, fused ones skipped); or a split
    list (``.csv``/``.txt``, the angle column).
    """
    path = Path(path)
    if is_zarr(path) and path.is_dir():
        return [path]
    if path.is_file():
        if path.suffix.lower() in (".csv", ".txt"):
            from fmc.preprocessing.splits import read_list

            files = [angle for angle, _ in read_list(path)]
            if not files:
                raise FmcInputError(f"input={path}: the list names no file")
            return files
        if path.suffix.lower() not in TIFF_SUFFIXES + H5_SUFFIXES:
            raise FmcInputError(f"input={path}: expected a .tif/.tiff or .h5 file, a folder or a "
                                "split list (.csv)")
        return [path]
    if not path.is_dir():
        raise FmcInputError(f"input={path}: no such file or folder")
    for suffixes in (TIFF_SUFFIXES, H5_SUFFIXES):
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file()
                       and not is_ground_truth(p.name) and not p.name.startswith("."))
        if files:
            return files
    stores = sorted(p for p in path.iterdir() if is_zarr(p.name) and p.is_dir()
                    and not is_ground_truth(p.name) and not p.name.startswith("."))
    if stores:
        return stores
    raise FmcInputError(f"input={path}: no .tif/.tiff (or .h5, .ome.zarr) volume to predict")


def check_output_folder(folder: str | Path) -> Path:
    """Create ``folder``, prove it writable, and clear what killed runs left in it.

    A run killed while writing leaves only a hidden ``.<name>.<pid>-<random>.part`` file (never
    a file under the final name); those of processes that are gone are removed here.
    """
    folder = writable_folder(folder, "output")
    for stale in remove_stale_parts(folder):
        log.info("removed %s, left by a killed run", stale.name)
    return folder


def check_inputs(files: Sequence[Path], output: Path, output_format: str = "tiff") -> None:
    """Open every input once (shape, metadata) before anything is written.

    Raises :class:`FmcInputError` naming every unreadable, 2D or 4D volume (not only the
    first, so that one run lists all there is to fix), two inputs that would write the same
    output name, or an output that would replace an input or a file fmc did not write
    (:func:`check_targets`).
    """
    names: dict[str, Path] = {}
    problems: list[str] = []
    for path in files:
        try:
            opened = open_volume(path)
            opened.close()  # closing checks that the file did not change meanwhile
        except FmcInputError as error:
            problems.append(str(error))
            continue
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
    check_targets(files, output, list(names), output_format)


def check_targets(files: Sequence[Path], output: Path, names: Sequence[str],
                  output_format: str = "tiff") -> None:
    """Refuse, before any work, an ``output`` whose files would replace an input (the same
    folder, by any spelling) or an existing file that is not an earlier fmc output
    (:mod:`fmc.core.protected`)."""
    if any(same_location(output, path) for path in files):
        raise FmcInputError(f"output={output}: it is an input; give a folder for the predictions")
    for name in names:
        target = output / output_name(safe_name(name), output_format)
        refuse_overwriting(target, files, "output", made_by_fmc=is_fmc_output)


def is_fmc_output(path: Path) -> bool:
    """True when ``path`` is a volume fmc.predict or fmc.challenge wrote (its metadata carry
    :data:`fmc.core.naming.OUTPUT_MARK`); False for anything else, readable or not."""
    from fmc.io.zarr_volume import open_lazy

    try:
        with open_lazy(path) as volume:
            return bool(volume.meta.original.get(OUTPUT_MARK))
    except Exception:  # noqa: BLE001 - unreadable or foreign: not ours to replace
        return False


def check_on_error(value: str) -> str:
    """``value`` if it is one of :data:`ON_ERROR`, else :class:`FmcConfigError` naming them."""
    if value not in ON_ERROR:
        raise FmcConfigError(f"on_error={value!r}: choose one of {', '.join(ON_ERROR)}")
    return value


@dataclass
class PredictedFiles:
    """What :func:`predict_files` wrote.

    Attributes
    ----------
    written : list of Path
        Every output, in input order: the predictions and the inputs written in their place.
    as_input : list of str
        Inputs that failed and were written as themselves (``on_error='identity'``).
    missing : list of str
        Inputs that failed and whose input could not be written either: no output.
    """

    written: list[Path] = field(default_factory=list)
    as_input: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def predicted(self) -> int:
        """How many files were predicted (not written as their input)."""
        return len(self.written) - len(self.as_input)


def write_identity(source: Path, output: Path) -> Path:
    """Copy a TIFF view to ``output`` (a valid TIFF with its metadata, same name), the safe answer."""
    from fmc.io.tiff import read_volume, write_volume

    volume, meta = read_volume(source)
    meta = replace(meta, original={**meta.original, OUTPUT_MARK: "input"})
    return write_volume(output / source.name, volume, meta)


def predict_files(files: Sequence[Path], picker: ModelPicker, output: Path,
                  settings: PredictSettings, on_error: str = "fail") -> PredictedFiles:
    """Predict every file into ``output``, one after the other.

    Parameters
    ----------
    files : sequence of Path
        Inputs (fmc.predict checks them first, :func:`check_inputs`).
    picker : ModelPicker
    output : Path
        Output folder (see :func:`check_output_folder`).
    settings : PredictSettings
    on_error : {'fail', 'identity'}
        A file whose model choice or prediction fails: ``fail`` raises (files before it are
        written); ``identity`` logs it, writes the input in its place (the challenge then
        scores it 0 instead of counting a missing file) and goes on.

    Returns
    -------
    PredictedFiles
    """
    check_on_error(on_error)
    result = PredictedFiles()
    for path in files:
        started = time.perf_counter()
        try:
            written = predict_file(picker.pick(path), path, output, settings)
        except Exception as error:  # noqa: BLE001 - with identity, one bad case must not lose the others
            if on_error == "fail":
                raise
            log.error("%s: prediction failed (%s: %s); writing the input instead", path.name,
                      type(error).__name__, error)
            try:
                written = write_identity(path, output)
            except Exception as second:  # noqa: BLE001 - unreadable input: nothing to write
                log.error("%s: cannot write the input either (%s)", path.name, second)
                result.missing.append(path.name)
                continue
            result.as_input.append(path.name)
        log.info("%s → %s in %.1f s", path.name, written, time.perf_counter() - started)
        result.written.append(written)
    return result
