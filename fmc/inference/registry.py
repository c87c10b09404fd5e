"""Pick a checkpoint per volume from its metadata (``python -m fmc.predict ckpt=auto registry=DIR``).

A registry is a folder: either one with a ``models.yaml``::

    models:
      - {study: 1, content: nucleus, ckpt: study1_nucleus.ckpt}   # paths relative to the folder
      - {study: 3, content: membrane, ckpt: runs/s3m/checkpoints/last.ckpt}

or a training sweep's output folder, searched for ``checkpoints/`` folders: each run contributes
its best checkpoint (highest ``nssim`` in the file name, else ``last.ckpt``), and its study and
content are read from the checkpoint itself (loaded as data, ``weights_only=True``).

Choice for a volume (never a crash while the registry holds a model):

1. a model of the volume's study and content;
2. the volume's study is missing, unknown or has no model for its content: the model of the same
   content whose study is nearest by shape and spacing (logged);
3. no model for the content (or the content is unknown): the nearest model of any content (logged).

"Nearest" compares the volume's ZYX shape and spacing with each study's typical recording
(:data:`fmc.core.studies.STUDIES`) as a sum of absolute log ratios.

A registry may hold several models of one study and content (a sweep over ``seed=0,1,2``, or
several ``models.yaml`` entries): the choice is then all of them, and prediction averages them
(:class:`fmc.inference.ensemble.ModelEnsemble`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.studies import STUDIES, parse_content, parse_study
from fmc.io.metadata import VolumeMeta
from fmc.models.checkpoint import best_checkpoint_in

log = logging.getLogger(__name__)

MANIFEST = "models.yaml"


@dataclass(frozen=True)
class RegistryEntry:
    """One model of a registry."""

    ckpt: Path
    study: int | None
    content: str | None

    def describe(self) -> str:
        """``study 3 membrane (path)``."""
        return f"study {self.study} {self.content} ({self.ckpt})"


@dataclass(frozen=True)
class Choice:
    """The models chosen for a volume (one, or several of one study and content) and why."""

    entries: tuple[RegistryEntry, ...]
    reason: str

    @property
    def checkpoints(self) -> tuple[Path, ...]:
        """The chosen checkpoints, in registry order."""
        return tuple(e.ckpt for e in self.entries)

    def describe(self) -> str:
        """``study 3 membrane (path)``, or ``study 3 membrane, 3 models averaged (a, b, c)``."""
        first = self.entries[0]
        if len(self.entries) == 1:
            return first.describe()
        return (f"study {first.study} {first.content}, {len(self.entries)} models averaged ("
                + ", ".join(str(e.ckpt) for e in self.entries) + ")")


def checkpoint_facts(path: Path) -> tuple[int | None, str | None]:
    """Study and content stored in a checkpoint's hyper-parameters (loaded as data only)."""
    from fmc.models.checkpoint import read_checkpoint

    hparams = read_checkpoint(path)["hyper_parameters"]
    return parse_study(hparams.get("study")), parse_content(hparams.get("content"))


class ModelRegistry:
    """The models of a registry folder; :meth:`choose` picks one per volume."""

    def __init__(self, entries: list[RegistryEntry], source: Path):
        if not entries:
            raise FmcInputError(f"registry={source}: no model found (expected a {MANIFEST} or "
                                "training runs with checkpoints/ folders)")
        self.entries = entries
        self.source = source

    @classmethod
    def from_folder(cls, folder: str | Path) -> ModelRegistry:
        """Read ``models.yaml`` if present, else scan the folder's training runs."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FmcInputError(f"registry={folder}: no such folder")
        manifest = folder / MANIFEST
        if manifest.is_file():
            return cls(_read_manifest(manifest), folder)
        entries = []
        for checkpoints in sorted(p for p in folder.rglob("checkpoints") if p.is_dir()):
            best = best_checkpoint_in(checkpoints)
            if best is None:
                continue
            study, content = checkpoint_facts(best)
            entries.append(RegistryEntry(best, study, content))
        return cls(entries, folder)

    def choose(self, meta: VolumeMeta, shape) -> Choice:
        """The model for a volume of ``shape`` with metadata ``meta`` (see the module text)."""
        study, content = meta.study, meta.content
        exact = [e for e in self.entries if e.study == study and e.content == content]
        if study is not None and content is not None and exact:
            return Choice(tuple(exact), f"study {study} {content}")
        same_content = [e for e in self.entries if content is not None and e.content == content]
        pool = same_content or self.entries
        nearest = min(pool, key=lambda e: (_distance(e.study, shape, meta.spacing_zyx), str(e.ckpt)))
        if study is None:
            why = "no study in the metadata"
        elif study not in STUDIES:
            why = f"unknown study {study}"
        else:
            why = f"no model for study {study} {content or '(content unknown)'}"
        if same_content:
            reason = f"{why}: nearest study by shape and spacing with a {content} model"
        elif content is None:
            reason = f"{why}, no content in the metadata: nearest model by shape and spacing"
        else:
            reason = f"{why}, no {content} model at all: nearest model by shape and spacing"
        return Choice(self.alike(nearest), reason)

    def alike(self, entry: RegistryEntry) -> tuple[RegistryEntry, ...]:
        """Every entry of ``entry``'s study and content (the models averaged with it)."""
        return tuple(e for e in self.entries if (e.study, e.content) == (entry.study, entry.content))


def _distance(study: int | None, shape, spacing_zyx) -> float:
    """How far a volume is from a study's typical recording (sum of |log ratios|)."""
    if study not in STUDIES:
        return math.inf
    profile = STUDIES[study]
    total = sum(abs(math.log(max(int(n), 1) / t)) for n, t in zip(shape, profile.typical_shape,
                                                                   strict=True))
    if spacing_zyx is not None:
        total += sum(abs(math.log(float(s) / t)) for s, t in zip(spacing_zyx, profile.spacing_zyx,
                                                                strict=True))
    return total


def _read_manifest(manifest: Path) -> list[RegistryEntry]:
    try:
        document = yaml.safe_load(manifest.read_text()) or {}
    except yaml.YAMLError as error:
        raise FmcConfigError(f"{manifest}: not valid YAML ({str(error).splitlines()[0]})") from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, list) or not models:
        raise FmcConfigError(f"{manifest}: expected a 'models:' list of {{study, content, ckpt}}")
    entries = []
    for number, item in enumerate(models, start=1):
        if not isinstance(item, dict) or "ckpt" not in item:
            raise FmcConfigError(f"{manifest}: models entry {number} needs a 'ckpt' path")
        path = Path(str(item["ckpt"]))
        path = path if path.is_absolute() else manifest.parent / path
        if not path.is_file():
            raise FmcInputError(f"{manifest}: models entry {number}: {path} does not exist")
        study, content = parse_study(item.get("study")), parse_content(item.get("content"))
        if item.get("study") is None or item.get("content") is None:
            stored_study, stored_content = checkpoint_facts(path)
            study = study if study is not None else stored_study
            content = content if content is not None else stored_content
        entries.append(RegistryEntry(path, study, content))
    return entries


def export_registry(source: str | Path, destination: str | Path) -> Path:
    """Copy a registry's chosen checkpoints into ``destination`` with a ``models.yaml``.

    Used to ship the models of a sweep (best checkpoint per run only) inside a container.
    Returns the written manifest.
    """
    import shutil

    registry = ModelRegistry.from_folder(source)
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    lines = ["# written by fmc.inference.registry.export_registry from " + str(Path(source).resolve()),
             "models:"]
    for number, entry in enumerate(registry.entries):
        name = f"model{number:02d}_study{entry.study}_{entry.content}.ckpt"
        shutil.copy2(entry.ckpt, destination / name)
        study = "null" if entry.study is None else entry.study
        content = "null" if entry.content is None else entry.content
        lines.append(f"  - {{study: {study}, content: {content}, ckpt: {name}}}")
    manifest = destination / MANIFEST
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
