"""Model packages: a registry's models in one zip that travels, checked by hash wherever it lands.

``python -m fmc.registry input=SWEEP_OR_MODELS output=models.zip`` writes::

    models.zip
      models.yaml      models: [{study, content, ckpt, sha256}, ...]
      MODEL_CARD.md    per model: study, content, network, training run, its scores
      model00_study1_nucleus.ckpt ...

It never writes over an input (a checkpoint or the ``models.yaml`` of the source, by any
spelling) nor over an existing file that is not a model package; a failed export leaves what
was at ``output=``. ``registry=`` of ``fmc.predict`` / ``fmc.challenge`` takes a folder, such a zip,
or its URL (``https://``, ``http://``, ``file://``). A package is a closed box:

- a URL is downloaded once into the cache (``$FMC_CACHE``, else ``~/.cache/fmc``) within a total
  deadline, and enters it only once checked as a package (below); a failed download leaves
  nothing there;
- a zip is unpacked once per content hash into ``packages/<hash>``, and only ``models.yaml``,
  ``MODEL_CARD.md`` and the checkpoints ``models.yaml`` lists (each a relative path inside the
  package, with a ``sha256``); declared sizes are checked before anything is written, the bytes
  written are counted, CRCs and hashes checked; each process unpacks into a folder of its own,
  renamed into place at the end (when another process was first, its folder is used);
- at each open every checkpoint is copied into a private folder while its sha256 is compared
  with ``models.yaml``, and the copy is what is loaded (:mod:`fmc.inference.registry`).

Limits (environment variables): ``FMC_PACKAGE_MAX_BYTES``, the most a package may unpack to and
the largest download (default 8 GiB); ``FMC_PACKAGE_MAX_RATIO``, the largest unpacked/packed
ratio of a member over 1 MiB (default 200; checkpoints are stored, a ratio near 1);
``FMC_DOWNLOAD_TIMEOUT``, the seconds a download may take in all, not per read (default 600).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import threading
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import yaml

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import atomic_path, remove_stale_parts
from fmc.core.locations import CACHE_ENV, cache_dir, resolve_latest
from fmc.core.protected import refuse_overwriting
from fmc.inference.model_card import package_card
from fmc.inference.registry import (
    MANIFEST,
    MANIFEST_MAX_BYTES,
    ModelRegistry,
    export_registry,
    package_path,
    parse_manifest,
    sha256_of,
)
from fmc.models.checkpoint import read_checkpoint

CARD = "MODEL_CARD.md"
URL_SCHEMES = ("http://", "https://", "file://")
LIMITS = {"FMC_PACKAGE_MAX_BYTES": 8 << 30, "FMC_PACKAGE_MAX_RATIO": 200,
          "FMC_DOWNLOAD_TIMEOUT": 600}
RATIO_FROM_BYTES = 1 << 20  # smaller members are never a bomb, whatever their ratio


def limit(name: str) -> float:
    """The value of one of :data:`LIMITS` (its environment variable, else its default)."""
    text = os.environ.get(name, "").strip()
    try:
        value = float(text) if text else LIMITS[name]
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise FmcConfigError(f"{name}={text!r}: expected a positive number")
    return value


def cache_folder() -> Path:
    """Where downloaded and unpacked packages live: fmc's user cache (``$FMC_CACHE``, else
    ``$XDG_CACHE_HOME/fmc`` or ``~/.cache/fmc``; :func:`fmc.core.locations.cache_dir`)."""
    return cache_dir()


def cache_subfolder(name: str) -> Path:
    """``<cache>/<name>``, created; one line when the cache cannot be used."""
    base = cache_folder()
    folder = base / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as error:
        what = f"{CACHE_ENV}={base}" if os.environ.get(CACHE_ENV) else f"fmc's cache {base}"
        raise FmcConfigError(f"{what}: fmc cannot keep model packages there "
                             f"({error.strerror or error}); set {CACHE_ENV} to a folder you can "
                             "write to") from None
    return folder


def export_package(source: str | Path, out: str | Path) -> Path:
    """Write the models of ``source`` (a registry folder or a sweep) as the zip ``out``.

    Raises
    ------
    FmcInputError
        Before anything is written: ``out`` is not a ``.zip``, lies under a file, is a folder,
        is an input (a checkpoint or the ``models.yaml`` of ``source``), or is an existing file
        that is not a model package.
    """
    out, source = Path(out), Path(source)
    if out.suffix.lower() != ".zip":
        raise FmcInputError(f"output={out}: a model package is a .zip file")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise FmcInputError(f"output={out}: {parent} is a file, not a folder")
            break
    if out.is_dir():
        raise FmcInputError(f"output={out}: a folder is there; give the name of a .zip file")
    registry = ModelRegistry.from_folder(source)
    inputs = [entry.shown for entry in registry.entries] + [source / MANIFEST]
    refuse_overwriting(out, [p for p in inputs if p.exists()], "output", made_by_fmc=is_package)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        manifest = export_registry(source, folder, registry)
        document = yaml.safe_load(manifest.read_text())
        for item in document["models"]:
            item["sha256"] = sha256_of(folder / item["ckpt"])
        manifest.write_text(f"# fmc model package, from {source.name}\n"
                            + yaml.safe_dump(document, sort_keys=False))
        (folder / CARD).write_text(package_card([
            (item["ckpt"], read_checkpoint(entry.ckpt)["hyper_parameters"], entry.ckpt,
             entry.shown) for entry, item in zip(registry.entries, document["models"],
                                                 strict=True)]))
        with atomic_path(out) as temporary, zipfile.ZipFile(temporary, "w") as archive:
            for path in sorted(folder.iterdir()):
                # Checkpoints are compressed already: stored, so a reader can stream them.
                kind = zipfile.ZIP_STORED if path.suffix == ".ckpt" else zipfile.ZIP_DEFLATED
                archive.write(path, path.name, compress_type=kind)
    return out


def is_package(path: Path) -> bool:
    """Whether ``path`` is a zip with a ``models.yaml`` at its top (a model package)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return MANIFEST in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _download(url: str) -> Path:
    """The package at ``url`` unpacked; downloaded once into the cache, and only when checked."""
    downloads = cache_subfolder("downloads")
    target = downloads / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".zip")
    if target.is_file():
        try:
            return _unpack(target, url)
        except FmcInputError as error:
            target.unlink(missing_ok=True)
            raise FmcInputError(f"{error}; the cached download was removed: run again to "
                                "download it anew") from None
    remove_stale_parts(downloads)
    with atomic_path(target) as temporary:
        try:
            _fetch(url, temporary)
            return _unpack(temporary, url)
        except (FmcInputError, FmcConfigError) as error:
            raise type(error)(f"{error}; nothing was cached: check the URL and run again") \
                from None


def _fetch(url: str, path: Path) -> None:
    """Copy ``url`` to ``path`` within FMC_DOWNLOAD_TIMEOUT seconds in all (each read waits
    only for the time left) and at most FMC_PACKAGE_MAX_BYTES bytes."""
    timeout, most = limit("FMC_DOWNLOAD_TIMEOUT"), limit("FMC_PACKAGE_MAX_BYTES")
    deadline = time.monotonic() + timeout
    late = FmcInputError(f"registry={url}: the download took longer than FMC_DOWNLOAD_TIMEOUT="
                         f"{timeout:g} s (a larger value gives a slow link more time)")
    opened: dict = {}

    def connect() -> None:  # in a thread: a server may also stall before its headers
        try:
            opened["response"] = urllib.request.urlopen(url, timeout=min(timeout, 60))
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            opened["error"] = error

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    try:
        if thread.is_alive():
            raise late
        if "error" in opened:
            raise opened["error"]
        with opened["response"] as response, open(path, "wb") as handle:
            length, written = int(response.headers.get("Content-Length") or 0), 0
            sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
            while block := _read_within(response, sock, deadline, late):
                written += len(block)
                if max(written, length) > most:
                    raise _too_large(url, most)
                handle.write(block)
            if length and written != length:
                raise FmcInputError(f"registry={url}: the download stopped after {written} of "
                                    f"{length} bytes")
    except TimeoutError:
        raise late from None
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise FmcInputError(f"registry={url}: cannot download it ({error})") from None


def _read_within(response, sock, deadline: float, late: FmcInputError) -> bytes:
    """The next bytes of ``response``, waiting at most until ``deadline`` for them."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise late
    if sock is not None:
        sock.settimeout(min(left, 60))
    return response.read1(1 << 20)


def _too_large(label: str, most: float) -> FmcInputError:
    return FmcInputError(f"registry={label}: larger than FMC_PACKAGE_MAX_BYTES={most:.0f} bytes "
                         "(raise it if this package is really that large); refused")


def _members(archive: zipfile.ZipFile, label: str) -> list[tuple[zipfile.ZipInfo, str | None]]:
    """What to unpack (``models.yaml``, the card, the listed checkpoints, each with its
    sha256), once every declared size is within the limits."""
    named = {}
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if not info.is_dir() and not path.is_absolute() and ".." not in path.parts:
            named[path] = info
    manifest = named.get(PurePosixPath(MANIFEST))
    if manifest is None:
        raise FmcInputError(f"registry={label}: not an fmc model package (no {MANIFEST} at "
                            "its top)")
    if manifest.file_size > MANIFEST_MAX_BYTES:
        raise FmcInputError(f"registry={label}: its {MANIFEST} is larger than "
                            f"{MANIFEST_MAX_BYTES} bytes; refused")
    text = _read_member(archive, manifest, label).decode("utf-8", errors="replace")
    where = f"registry={label}: {MANIFEST}"
    wanted = [(manifest, None)] + ([(named[PurePosixPath(CARD)], None)]
                                   if PurePosixPath(CARD) in named else [])
    for number, item in enumerate(parse_manifest(text, where), start=1):
        path = package_path(item["ckpt"], where, number)
        if not item.get("sha256"):
            raise FmcInputError(f"{where}: models entry {number} ({path}) has no sha256: every "
                                "checkpoint of a model package carries one (python -m "
                                "fmc.registry export writes them)")
        if path not in named:
            raise FmcInputError(f"{where}: models entry {number}: {path} is not in the package")
        if all(info is not named[path] for info, _ in wanted):
            wanted.append((named[path], item["sha256"]))
    most, ratio = limit("FMC_PACKAGE_MAX_BYTES"), limit("FMC_PACKAGE_MAX_RATIO")
    if sum(info.file_size for info, _ in wanted) > most:
        raise _too_large(label, most)
    for info, _ in wanted:
        if info.flag_bits & 0x1:
            raise FmcInputError(f"registry={label}: {info.filename} is encrypted; refused")
        if info.file_size > RATIO_FROM_BYTES and info.file_size > ratio * max(info.compress_size, 1):
            raise FmcInputError(f"registry={label}: {info.filename} would unpack to "
                                f"{info.file_size / max(info.compress_size, 1):.0f} times its "
                                f"packed size (more than FMC_PACKAGE_MAX_RATIO={ratio:g}); "
                                "refused")
    return wanted


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str,
                 target=None, expected: str | None = None) -> bytes:
    """A member's bytes (or, with ``target``, written there), never more than its declared
    size, its CRC and ``expected`` sha256 checked."""
    digest, kept, written = hashlib.sha256(), [], 0
    try:
        with archive.open(info) as source:
            for block in iter(lambda: source.read(1 << 20), b""):
                written += len(block)
                if written > info.file_size:
                    raise FmcInputError(f"registry={label}: {info.filename} holds more than the "
                                        f"{info.file_size} bytes it declares; refused")
                digest.update(block)
                target.write(block) if target is not None else kept.append(block)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as error:
        raise FmcInputError(f"registry={label}: a damaged zip ({error}); refused") from None
    if expected and digest.hexdigest() != expected:
        raise FmcInputError(f"{info.filename}: its sha256 differs from {MANIFEST}'s: the model "
                            "package was changed after export; refusing it")
    return b"".join(kept)


def _unpack(archive_path: Path, label: str | None = None) -> Path:
    """The zip unpacked into the cache, once per content (its sha256), checked first."""
    label = label or str(archive_path)
    try:
        handle = open(archive_path, "rb")
    except OSError as error:
        raise FmcInputError(f"registry={label}: cannot read it ({error.strerror})") from None
    with handle:  # hashed and unpacked from one open file: a swap on disk changes neither
        key = hashlib.sha256()
        for block in iter(lambda: handle.read(1 << 20), b""):
            key.update(block)
        handle.seek(0)
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, ValueError):
            raise FmcInputError(f"registry={label}: not a zip file (an fmc model package is "
                                "one)") from None
        with archive:
            wanted = _members(archive, label)
            packages = cache_subfolder("packages")
            folder = packages / key.hexdigest()[:16]
            if (folder / MANIFEST).is_file():
                return folder
            _remove_dead_partials(packages)
            try:
                partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{os.getpid()}-",
                                                suffix=".partial", dir=packages))
            except OSError as error:
                raise FmcInputError(f"{packages}: cannot unpack there ({error.strerror})") from None
            try:
                for info, expected in wanted:
                    target = partial / PurePosixPath(info.filename)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "xb") as out:
                        _read_member(archive, info, label, out, expected)
                try:
                    os.rename(partial, folder)
                except OSError:
                    if (folder / MANIFEST).is_file():  # another process was first: theirs
                        return folder
                    shutil.rmtree(folder, ignore_errors=True)  # a broken leftover
                    os.rename(partial, folder)
            except OSError as error:
                raise FmcInputError(f"{packages}: cannot unpack there ({error.strerror or error})") \
                    from None
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    return folder


def _remove_dead_partials(packages: Path) -> None:
    """Remove the ``.<key>.<pid>-<random>.partial`` folders of processes that are gone."""
    for partial in packages.glob(".*.partial"):
        try:
            os.kill(int(partial.name.rsplit(".", 2)[-2].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except (ValueError, IndexError, OSError):  # not one of ours, or another user's process
            pass


def open_registry(spec: str | Path) -> ModelRegistry:
    """A registry from a folder, a model package zip, or a package URL (cached, verified);
    ``last``: the newest fmc.train run or sweep under ./outputs/train."""
    text = str(resolve_latest(spec, "registry")) if not str(spec).startswith(URL_SCHEMES) \
        else str(spec)
    if text.startswith(URL_SCHEMES):
        return ModelRegistry.from_folder(_download(text), package=True)
    if Path(text).is_file():
        return ModelRegistry.from_folder(_unpack(Path(text)), package=True)
    return ModelRegistry.from_folder(text)
