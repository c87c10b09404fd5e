"""Pick a checkpoint per volume from its metadata (``python -m fmc.predict ckpt=auto registry=DIR``).

A registry is a folder: either one with a ``models.yaml``::

    models:
      - {study: 1, content: nucleus, ckpt: study1_nucleus.ckpt}   # paths relative to the folder
      - {study: 3, content: membrane, ckpt: runs/s3m/checkpoints/last.ckpt}

or a training sweep's output folder, searched for ``checkpoints/`` folders: each run contributes
the checkpoint it selected (:func:`fmc.models.checkpoint.selected_checkpoint`), and its study and
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

A ``models.yaml`` entry may carry the checkpoint's ``sha256`` (a model package's entries all do,
:mod:`fmc.inference.packages`). Such a checkpoint is copied, and hashed while copied, into a
private folder of this process (``fmc-verified-*`` under ``$TMPDIR``, mode 0700, files created
exclusively, removed when the registry is dropped or the process ends); the registry loads that
copy, so the bytes that were hashed are the bytes that are loaded, whatever happens to the file
afterwards. In a model package every entry must be a relative path inside the package folder
(no absolute path, no ``..``, no link leading out), and must carry a ``sha256``; a folder of the
user's own may also name checkpoints elsewhere, with or without a ``sha256``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.studies import STUDIES, parse_content, parse_study
from fmc.io.metadata import VolumeMeta
from fmc.models.checkpoint import CHECKPOINTS_FOLDER, selected_checkpoint

log = logging.getLogger(__name__)

MANIFEST = "models.yaml"
MANIFEST_MAX_BYTES = 1 << 20  # a models.yaml is a short list: anything larger is refused
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RegistryEntry:
    """One model of a registry."""

    ckpt: Path  # the file to load: the checkpoint itself, or its verified private copy
    study: int | None
    content: str | None
    origin: Path | None = None  # where a verified copy was taken from (shown in messages)

    @property
    def shown(self) -> Path:
        """The checkpoint as the registry names it (not its private copy)."""
        return self.origin or self.ckpt

    def describe(self) -> str:
        """``study 3 membrane (path)``."""
        return f"study {self.study} {self.content} ({self.shown})"


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
                + ", ".join(str(e.shown) for e in self.entries) + ")")


def checkpoint_facts(path: Path) -> tuple[int | None, str | None]:
    """Study and content stored in a checkpoint's hyper-parameters (loaded as data only)."""
    from fmc.models.checkpoint import read_checkpoint

    hparams = read_checkpoint(path)["hyper_parameters"]
    return parse_study(hparams.get("study")), parse_content(hparams.get("content"))


class ModelRegistry:
    """The models of a registry folder; :meth:`choose` picks one per volume."""

    def __init__(self, entries: list[RegistryEntry], source: Path, scratch=None):
        if not entries:
            raise FmcInputError(f"registry={source}: no model found (expected a {MANIFEST} or "
                                "training runs with checkpoints/ folders)")
        self.entries = entries
        self.source = source
        self.scratch = scratch  # the private folder of the verified copies (kept while in use)

    @classmethod
    def from_folder(cls, folder: str | Path, package: bool = False) -> ModelRegistry:
        """Read ``models.yaml`` if present, else scan the folder's training runs.

        ``package``: the folder is an unpacked model package (every entry relative, inside
        it, with a ``sha256``); a package without a ``models.yaml`` is refused.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FmcInputError(f"registry={folder}: no such folder")
        manifest = folder / MANIFEST
        if manifest.is_file() or package:
            scratch = tempfile.TemporaryDirectory(prefix="fmc-verified-")
            try:
                return cls(_read_manifest(manifest, package, Path(scratch.name)), folder, scratch)
            except BaseException:
                scratch.cleanup()
                raise
        entries = []
        for checkpoints in sorted(p for p in folder.rglob(CHECKPOINTS_FOLDER) if p.is_dir()):
            best = selected_checkpoint(checkpoints.parent)
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


def parse_manifest(text: str, where: str) -> list[dict]:
    """The entries of a ``models.yaml`` text, each a mapping with a ``ckpt`` string; ``where``
    names the file in messages. Plain data only: a YAML tag (``!!python/object``) is refused.

    Raises
    ------
    FmcConfigError
        Invalid YAML, a tag, not a mapping with a non-empty ``models:`` list, an entry without
        a ``ckpt`` path, or a ``sha256`` that is not 64 hex digits.
    """
    try:
        document = yaml.safe_load(text) or {}
    except yaml.constructor.ConstructorError as error:
        raise FmcConfigError(f"{where}: holds a YAML tag fmc does not read ({error.problem}); "
                             f"{MANIFEST} is plain data") from None
    except yaml.YAMLError as error:
        raise FmcConfigError(f"{where}: not valid YAML ({str(error).splitlines()[0]})") from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, list) or not models:
        raise FmcConfigError(f"{where}: expected a 'models:' list of {{study, content, ckpt}}")
    for number, item in enumerate(models, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("ckpt"), str) \
                or not item["ckpt"].strip():
            raise FmcConfigError(f"{where}: models entry {number} needs a 'ckpt' path")
        digest = item.get("sha256")
        if digest is not None and not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            raise FmcConfigError(f"{where}: models entry {number}: its sha256 is not 64 hex "
                                 "digits")
    return models


def package_path(text: str, where: str, number: int) -> PurePosixPath:
    """A package entry's ``ckpt`` as a relative path that stays inside the package folder.

    Raises
    ------
    FmcInputError
        An absolute path or one with ``..`` (the message never says whether it exists).
    """
    path = PurePosixPath(text.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", text) \
            or path == PurePosixPath("."):
        raise FmcInputError(f"{where}: models entry {number}: refused: in a model package "
                            "each ckpt is a relative path inside the package folder (no absolute "
                            "path, no '..', no link leading out of it)")
    return path


def _read_manifest(manifest: Path, package: bool = False,
                   scratch: Path | None = None) -> list[RegistryEntry]:
    folder = manifest.parent
    try:
        if manifest.stat().st_size > MANIFEST_MAX_BYTES:
            raise FmcConfigError(f"{manifest}: larger than {MANIFEST_MAX_BYTES} bytes: not a "
                                 f"{MANIFEST}")
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        what = "it is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else \
            (error.strerror or str(error))
        raise FmcInputError(f"{manifest}: cannot read it ({what})") from None
    entries, copies = [], {}
    for number, item in enumerate(parse_manifest(text, str(manifest)), start=1):
        digest = item.get("sha256")
        if package:
            relative = package_path(item["ckpt"], str(manifest), number)
            path = folder / relative
            if not is_within(path, folder):  # a link leading out: the same refusal
                package_path("..", str(manifest), number)
            if not digest:
                raise FmcInputError(f"{manifest}: models entry {number} ({relative}) has no "
                                    "sha256: every checkpoint of a model package carries one "
                                    "(python -m fmc.registry export writes them)")
        else:
            path = Path(item["ckpt"])
            path = path if path.is_absolute() else folder / path
        if not path.is_file():
            raise FmcInputError(f"{manifest}: models entry {number}: {path} does not exist")
        origin = None
        if digest:
            key = (os.path.realpath(path), digest)
            if key not in copies:
                copies[key] = verified_copy(path, digest, scratch / f"{number:02d}-{path.name}")
            path, origin = copies[key], path
        study, content = parse_study(item.get("study")), parse_content(item.get("content"))
        if item.get("study") is None or item.get("content") is None:
            stored_study, stored_content = checkpoint_facts(path)
            study = study if study is not None else stored_study
            content = content if content is not None else stored_content
        entries.append(RegistryEntry(path, study, content, origin))
    return entries


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_within(path: Path, folder: Path) -> bool:
    """True when ``path``, its links resolved, lies inside ``folder`` (resolved too)."""
    return Path(os.path.realpath(folder)) in Path(os.path.realpath(path)).parents


def verified_copy(path: Path, expected: str, copy: Path) -> Path:
    """Copy ``path`` to the new file ``copy`` (created exclusively, owner only), hashing the
    bytes as they are copied; the copy is returned only if their sha256 is ``expected``.

    Raises
    ------
    FmcInputError
        The sha256 differs (the copy is removed), or the copy cannot be written.
    """
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        with open(path, "rb") as source, os.fdopen(os.open(copy, flags, 0o600), "wb") as target:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                target.write(block)
    except OSError as error:
        copy.unlink(missing_ok=True)
        raise FmcInputError(f"{path.name}: cannot copy it to check its sha256 in {copy.parent} "
                            f"({error.strerror or error}; TMPDIR sets where)") from None
    if digest.hexdigest() != expected:
        copy.unlink(missing_ok=True)
        raise FmcInputError(f"{path.name}: its sha256 differs from {MANIFEST}'s: the model "
                            "package was changed after export; refusing it")
    return copy


def export_registry(source: str | Path, destination: str | Path,
                    registry: ModelRegistry | None = None) -> Path:
    """Copy a registry's chosen checkpoints into ``destination`` with a ``models.yaml``.

    Used to ship the models of a sweep (best checkpoint per run only) inside a container.
    ``registry``: ``source`` already opened. Returns the written manifest.
    """
    import shutil

    registry = registry or ModelRegistry.from_folder(source)
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
