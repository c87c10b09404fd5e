"""Model packages: a registry's models in one zip that travels, checked by hash wherever it lands.

``python -m fmc.registry export SWEEP_OR_MODELS out=models.zip`` writes::

    models.zip
      models.yaml      models: [{study, content, ckpt, sha256}, ...]
      MODEL_CARD.md    per model: study, content, network, training run, its scores
      model00_study1_nucleus.ckpt ...

``registry=`` of ``fmc.predict`` / ``fmc.challenge`` takes a folder, such a zip, or its URL
(``https://``, ``http://``, ``file://``): a URL is downloaded once into the cache
(``$FMC_CACHE``, else ``~/.cache/fmc``), a zip is unpacked once per content hash, and every
checkpoint's sha256 is compared with ``models.yaml`` each time the registry is opened: a changed
file is refused with one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import yaml

from fmc.core.errors import FmcInputError
from fmc.core.files import atomic_path
from fmc.core.locations import cache_dir, resolve_latest
from fmc.core.naming import METRICS_FILE
from fmc.inference.registry import MANIFEST, ModelRegistry, export_registry

CARD = "MODEL_CARD.md"
URL_SCHEMES = ("http://", "https://", "file://")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_folder() -> Path:
    """Where downloaded and unpacked packages live: fmc's user cache (``$FMC_CACHE``, else
    ``$XDG_CACHE_HOME/fmc`` or ``~/.cache/fmc``; :func:`fmc.core.locations.cache_dir`)."""
    return cache_dir()


def model_card(registry: ModelRegistry, names: list[str]) -> str:
    """Markdown: one section per model, from its checkpoint and, when found, its training run."""
    from fmc.models.checkpoint import read_checkpoint

    lines = ["# fmc model package", "",
             "Models of `fmc` (3D U-Net: one light-sheet view to a multi-view fusion). Predict with",
             "`python -m fmc.predict ckpt=auto registry=models.zip input=... output=...`; each",
             "volume gets the model of its study and content (see `models.yaml`); several models",
             "of one study and content are averaged (an ensemble).", ""]
    for entry, name in zip(registry.entries, names, strict=True):
        hp = read_checkpoint(entry.ckpt)["hyper_parameters"]
        lines += [f"## {name}", "",
                  f"- study {entry.study}, content {entry.content}",
                  f"- inputs: {', '.join(hp.get('channels', []))}; network: UNet3D, "
                  f"{hp.get('features')} features, depth {hp.get('depth')}, norm {hp.get('norm')}",
                  f"- training patch {hp.get('patch_size')}, spacing {hp.get('spacing_zyx')} µm; "
                  f"fallback {hp.get('fallback', 'none')}"]
        lines += run_score_lines(entry.ckpt)
        lines.append("")
    return "\n".join(lines)


def run_score_lines(checkpoint: Path) -> list[str]:
    """Markdown bullets of the scores of the training run that wrote ``checkpoint`` (its
    ``metrics.json``: best validation and test N_SSIM, run name, steps); none when not found."""
    metrics = Path(checkpoint).parent.parent / METRICS_FILE
    if not metrics.is_file():
        return []
    scores = json.loads(metrics.read_text())
    shown = {k: v for k, v in scores.items() if k.startswith(("best/val", "test/n_ssim"))
             and isinstance(v, (int, float))}
    return [*(f"- {key}: {value:+.4f}" for key, value in sorted(shown.items())),
            f"- run: {scores.get('run_name')}, {scores.get('global_step')} steps"]


def export_package(source: str | Path, out: str | Path) -> Path:
    """Write the models of ``source`` (a registry folder or a sweep) as the zip ``out``."""
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise FmcInputError(f"out={out}: a model package is a .zip file")
    registry = ModelRegistry.from_folder(source)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        manifest = export_registry(source, folder)
        document = yaml.safe_load(manifest.read_text())
        for item in document["models"]:
            item["sha256"] = sha256_of(folder / item["ckpt"])
        manifest.write_text(f"# fmc model package, from {Path(source).name}\n"
                            + yaml.safe_dump(document, sort_keys=False))
        (folder / CARD).write_text(model_card(registry, [i["ckpt"] for i in document["models"]]))
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as temporary, zipfile.ZipFile(temporary, "w") as archive:
            for path in sorted(folder.iterdir()):
                # Checkpoints are compressed already: stored, so a reader can stream them.
                kind = zipfile.ZIP_STORED if path.suffix == ".ckpt" else zipfile.ZIP_DEFLATED
                archive.write(path, path.name, compress_type=kind)
    return out


def _download(url: str) -> Path:
    """``url`` as a local zip, downloaded once into the cache."""
    target = cache_folder() / "downloads" / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".zip")
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(target) as temporary:
            with open(temporary, "wb") as handle:
                shutil.copyfileobj(response, handle)
    except OSError as error:
        raise FmcInputError(f"registry={url}: cannot download it ({error})") from None
    return target


def _unpack(archive_path: Path) -> Path:
    """The zip unpacked into the cache, once per content (its sha256)."""
    if not zipfile.is_zipfile(archive_path):
        raise FmcInputError(f"registry={archive_path}: not a zip file (an fmc model package)")
    folder = cache_folder() / "packages" / sha256_of(archive_path)[:16]
    if (folder / MANIFEST).is_file():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(archive_path) as archive:
        names = archive.namelist()
        if MANIFEST not in names or any(Path(n).is_absolute() or ".." in Path(n).parts
                                        for n in names):
            raise FmcInputError(f"registry={archive_path}: not an fmc model package (no "
                                f"{MANIFEST} at its top, or paths outside it)")
        archive.extractall(partial)
    os.replace(partial, folder)
    return folder


def verify_hashes(folder: Path) -> None:
    """Each checkpoint named in ``folder/models.yaml`` with a ``sha256`` must still have it."""
    document = yaml.safe_load((folder / MANIFEST).read_text()) or {}
    for item in document.get("models") or []:
        expected = item.get("sha256") if isinstance(item, dict) else None
        if not expected:
            continue
        path = folder / str(item["ckpt"])
        if not path.is_file() or sha256_of(path) != expected:
            raise FmcInputError(f"{path.name}: its sha256 differs from {MANIFEST}'s: the model "
                                "package was changed after export; refusing it")


def open_registry(spec: str | Path) -> ModelRegistry:
    """A registry from a folder, a model package zip, or a package URL (cached, verified);
    ``last``: the newest fmc.train run or sweep under ./outputs/train."""
    text = str(resolve_latest(spec, "registry")) if not str(spec).startswith(URL_SCHEMES) \
        else str(spec)
    if text.startswith(URL_SCHEMES):
        folder = _unpack(_download(text))
    elif Path(text).is_file():
        folder = _unpack(Path(text))
    else:
        folder = Path(text)
        if (folder / MANIFEST).is_file():
            verify_hashes(folder)
        return ModelRegistry.from_folder(folder)
    verify_hashes(folder)
    return ModelRegistry.from_folder(folder)
