"""Model packages are closed boxes (fmc.inference.packages, fmc.inference.registry): entries stay
inside the package and carry a sha256; the hashed bytes are the loaded bytes; zip bombs, damaged
zips, slow or wrong downloads, odd models.yaml files, an unusable cache and unsafe export targets
are each refused with one line, leaving nothing behind."""

from __future__ import annotations

import gc
import hashlib
import http.server
import multiprocessing
import os
import shutil
import stat
import struct
import threading
import time
import zipfile
from pathlib import Path

import pytest

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.simulation.synth import write_pair
from tests.conftest import assert_user_error, export_package, run_in_process, save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture(scope="module")
def package(checkpoint: Path, tmp_path_factory) -> Path:
    """A one-model package written by ``fmc.registry``."""
    source = tmp_path_factory.mktemp("source")
    shutil.copy(checkpoint, source / "s1n.ckpt")
    (source / "models.yaml").write_text("models:\n  - {study: 1, content: nucleus, ckpt: s1n.ckpt}\n")
    return export_package(source, tmp_path_factory.mktemp("pkg") / "models.zip")


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("FMC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_zip(path: Path, manifest: str, members: dict[str, bytes] | None = None,
              deflate: bool = False) -> Path:
    kind = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=kind) as archive:
        archive.writestr("models.yaml", manifest)
        for name, data in (members or {}).items():
            archive.writestr(name, data)
    return path


def entry(ckpt: str, digest: str | None) -> str:
    hashed = f", sha256: '{digest}'" if digest else ""
    return f"models:\n  - {{study: 1, content: nucleus, ckpt: '{ckpt}'{hashed}}}\n"


def leftovers(cache: Path) -> list[str]:
    """Files and folders left in the cache (empty subfolders aside)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.is_file() or (p.is_dir() and p.parent.name == "packages"))


def opening_error(spec) -> str:
    from fmc.inference.packages import open_registry

    with pytest.raises((FmcInputError, FmcConfigError)) as caught:
        open_registry(spec)
    assert "\n" not in str(caught.value)
    return str(caught.value)


# 1. Entries stay inside the package folder, and the refusal says nothing of the outside.
@pytest.mark.parametrize("outside", ["absolute", "dotdot"])
def test_a_package_entry_outside_the_package_is_refused_alike_whether_it_exists(
        outside, checkpoint: Path, tmp_path: Path, cache: Path):
    messages = []
    for target in (checkpoint, checkpoint.with_name("missing.ckpt")):
        text = str(target) if outside == "absolute" else os.path.relpath(target, tmp_path)
        archive = write_zip(tmp_path / f"{target.stem}.zip", entry(text, sha(checkpoint)))
        message = opening_error(archive)
        assert "models.yaml: models entry 1: refused" in message
        assert "relative path inside the package folder" in message and text not in message
        messages.append(message.split(": models.yaml")[1])
    assert messages[0] == messages[1]
    assert leftovers(cache) == []


def test_a_link_leading_out_of_an_unpacked_package_is_refused(package: Path, checkpoint: Path,
                                                              cache: Path):
    from fmc.inference.packages import open_registry

    open_registry(package)
    (unpacked,) = (cache / "packages").iterdir()
    messages = []
    for target in (checkpoint, checkpoint.with_name("missing.ckpt")):
        link = unpacked / "model00_study1_nucleus.ckpt"
        link.unlink()
        link.symlink_to(target)
        message = opening_error(package)
        assert "models entry 1: refused" in message and str(target) not in message
        messages.append(message)
    assert messages[0] == messages[1]


def test_a_user_folder_may_point_elsewhere_and_its_hashes_are_checked(checkpoint: Path,
                                                                       tmp_path: Path):
    from fmc.inference.packages import open_registry

    folder = tmp_path / "registry"
    (folder / "runs" / "s1" / "checkpoints").mkdir(parents=True)
    inside = shutil.copy(checkpoint, folder / "runs" / "s1" / "checkpoints" / "last.ckpt")
    (folder / "models.yaml").write_text(entry("runs/s1/checkpoints/last.ckpt", None))
    assert open_registry(folder).entries[0].ckpt == Path(inside)  # no sha256: used as it is
    (folder / "models.yaml").write_text(entry(str(checkpoint), None))  # the user's own path
    assert open_registry(folder).entries[0].ckpt == checkpoint
    (folder / "models.yaml").write_text(entry("runs/s1/checkpoints/last.ckpt", "0" * 64))
    assert "last.ckpt: its sha256 differs" in opening_error(folder)


# 2. Every entry of a package carries a sha256.
def test_a_package_entry_without_a_sha256_is_refused(checkpoint: Path, tmp_path: Path,
                                                     cache: Path):
    archive = write_zip(tmp_path / "m.zip", entry("a.ckpt", None),
                        {"a.ckpt": checkpoint.read_bytes()})
    assert "models entry 1 (a.ckpt) has no sha256" in opening_error(archive)
    archive = write_zip(tmp_path / "n.zip", entry("a.ckpt", "abc"), {"a.ckpt": b"x"})
    assert "its sha256 is not 64 hex digits" in opening_error(archive)
    assert leftovers(cache) == []


# 3. The bytes hashed are the bytes loaded: a private copy, made while hashing.
def test_the_registry_loads_a_private_copy_of_the_hashed_bytes(package: Path, checkpoint: Path,
                                                               cache: Path, tmp_path: Path):
    from fmc.inference.packages import open_registry

    registry = open_registry(package)
    (model,) = registry.entries
    (unpacked,) = (cache / "packages").iterdir()
    cached = unpacked / "model00_study1_nucleus.ckpt"
    assert model.origin == cached and model.shown == cached and str(cached) in model.describe()
    private = model.ckpt.parent
    assert unpacked not in model.ckpt.parents
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE(model.ckpt.stat().st_mode) == 0o600
    expected = sha(cached)
    cached.write_bytes(save_tiny_checkpoint(tmp_path / "other.ckpt", study=3).read_bytes())
    assert sha(model.ckpt) == expected  # a file swapped after the check is not what is loaded
    del registry, model
    gc.collect()
    assert not private.exists()  # removed with the registry


# 4. Sizes are bounded before anything is unpacked; damaged zips are one line.
def test_a_zip_bomb_is_refused_before_unpacking(checkpoint: Path, tmp_path: Path, cache: Path,
                                                monkeypatch):
    zeros = bytes(8 << 20)
    bomb = write_zip(tmp_path / "bomb.zip", entry("a.ckpt", hashlib.sha256(zeros).hexdigest()),
                     {"a.ckpt": zeros}, deflate=True)
    assert bomb.stat().st_size < 100_000
    assert "more than FMC_PACKAGE_MAX_RATIO=200" in opening_error(bomb)
    monkeypatch.setenv("FMC_PACKAGE_MAX_RATIO", "1e6")
    monkeypatch.setenv("FMC_PACKAGE_MAX_BYTES", str(4 << 20))
    assert "larger than FMC_PACKAGE_MAX_BYTES=4194304 bytes" in opening_error(bomb)
    monkeypatch.setenv("FMC_PACKAGE_MAX_BYTES", "lots")
    assert "FMC_PACKAGE_MAX_BYTES='lots': expected a positive number" in opening_error(bomb)
    assert leftovers(cache) == []


def _patch_sizes(archive: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size ``member`` declares (local header and central directory)."""
    data = bytearray(archive.read_bytes())
    name = member.encode()
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = 0
        while (at := data.find(signature, at)) >= 0:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at:name_at + len(name)] == name:
                data[at + offset:at + offset + 4] = struct.pack("<I", size)
            at += 4
    archive.write_bytes(bytes(data))


def test_a_lying_size_or_a_bad_crc_is_one_line_and_leaves_nothing(checkpoint: Path,
                                                                   tmp_path: Path, cache: Path):
    data = checkpoint.read_bytes()
    lying = write_zip(tmp_path / "lying.zip", entry("a.ckpt", sha(checkpoint)), {"a.ckpt": data},
                      deflate=True)
    _patch_sizes(lying, "a.ckpt", 1000)
    message = opening_error(lying)
    assert "registry=" in message and ("damaged zip" in message or "more than" in message)
    broken = write_zip(tmp_path / "crc.zip", entry("a.ckpt", sha(checkpoint)), {"a.ckpt": data})
    raw = bytearray(broken.read_bytes())
    raw[raw.find(data[:64]) + 100] ^= 0xFF
    broken.write_bytes(bytes(raw))
    message = opening_error(broken)
    assert "a damaged zip (Bad CRC-32 for file 'a.ckpt'); refused" in message
    assert leftovers(cache) == []


def test_members_models_yaml_does_not_list_are_not_unpacked(checkpoint: Path, tmp_path: Path,
                                                            cache: Path):
    from fmc.inference.packages import open_registry

    archive = write_zip(tmp_path / "extra.zip", entry("a.ckpt", sha(checkpoint)),
                        {"a.ckpt": checkpoint.read_bytes(), "MODEL_CARD.md": b"# card",
                         "junk.bin": bytes(1 << 20), "../evil.txt": b"x", "/abs.txt": b"x"})
    assert len(open_registry(archive).entries) == 1
    (unpacked,) = (cache / "packages").iterdir()
    assert sorted(p.name for p in unpacked.iterdir()) == ["MODEL_CARD.md", "a.ckpt", "models.yaml"]
    assert not (tmp_path / "evil.txt").exists() and not (cache / "evil.txt").exists()


# 5. Two processes opening one new package at once both succeed.
def _open_together(barrier, package: str, results) -> None:
    from fmc.inference.packages import open_registry

    barrier.wait()
    try:
        results.put(("ok", len(open_registry(package).entries)))
    except BaseException as error:  # noqa: BLE001 - reported to the test
        results.put(("error", repr(error)))


def test_two_processes_unpack_one_package_at_once(package: Path, cache: Path, monkeypatch):
    from fmc.inference import packages

    original = packages._read_member

    def slow(*args, **kwargs):  # both processes are surely unpacking at the same time
        time.sleep(0.2)
        return original(*args, **kwargs)

    monkeypatch.setattr(packages, "_read_member", slow)
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_open_together, args=(barrier, str(package), results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert outcomes == [("ok", 1), ("ok", 1)]
    assert [p.name for p in (cache / "packages").iterdir()] == [packages.sha256_of(package)[:16]]


# 6. Downloads: a total deadline; checked before they enter the cache.
class _Handler(http.server.BaseHTTPRequestHandler):
    """``/slow``: a byte every 20 s; ``/mute``: no answer; ``/page``: HTML; ``/half``: half a
    package; ``/models.zip``: the package."""

    package: bytes = b""
    stop = threading.Event()

    def do_GET(self):  # noqa: N802 - the http.server name
        if self.path == "/mute":
            self.stop.wait(20)
            return
        body = {"/page": b"<html>not found</html>", "/half": self.package[:len(self.package) // 2],
                "/models.zip": self.package}.get(self.path, b"x" * 100)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path != "/slow":
            self.wfile.write(body)
            return
        for byte in body:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            if self.stop.wait(20):
                return

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(package: Path):
    _Handler.package = package.read_bytes()
    _Handler.stop.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _Handler.stop.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("path", ["/slow", "/mute"])
def test_a_slow_download_stops_at_its_deadline(path: str, server: str, cache: Path, monkeypatch):
    monkeypatch.setenv("FMC_DOWNLOAD_TIMEOUT", "1")
    started = time.monotonic()
    message = opening_error(server + path)
    assert time.monotonic() - started < 5
    assert f"registry={server + path}: the download took longer than FMC_DOWNLOAD_TIMEOUT=1 s" \
        in message and "nothing was cached" in message
    assert leftovers(cache) == []


def test_a_wrong_download_never_enters_the_cache(server: str, cache: Path, tmp_path: Path,
                                                 monkeypatch):
    from fmc.inference.packages import open_registry

    for path in ("/page", "/half"):
        message = opening_error(server + path)
        assert f"registry={server + path}: not a zip file" in message
        assert "nothing was cached: check the URL and run again" in message
        assert ".zip;" not in message.replace(server, "")  # the cache file is not named
        assert leftovers(cache) == []
    monkeypatch.setenv("FMC_PACKAGE_MAX_BYTES", "1000")
    assert "larger than FMC_PACKAGE_MAX_BYTES=1000" in opening_error(server + "/models.zip")
    assert leftovers(cache) == []
    monkeypatch.delenv("FMC_PACKAGE_MAX_BYTES")
    assert len(open_registry(server + "/models.zip").entries) == 1  # the same URL, later: fine
    # A cached download damaged afterwards is removed, and the message says to run again.
    (download,) = (cache / "downloads").iterdir()
    download.write_bytes(b"<html>")
    shutil.rmtree(cache / "packages")
    message = opening_error(server + "/models.zip")
    assert "the cached download was removed: run again" in message and not download.exists()


# 7. Odd models.yaml files, an unusable cache: one line.
@pytest.mark.parametrize("text, fragment", [
    ("models: !!python/object/apply:os.system ['echo hacked']\n", "holds a YAML tag"),
    ("- study: 1\n", "expected a 'models:' list"),
    ("models: [\n", "not valid YAML"),
    ("models: s1n.ckpt\n", "expected a 'models:' list"),
    ("models:\n  - {study: 1, ckpt: [a]}\n", "models entry 1 needs a 'ckpt' path"),
])
def test_an_odd_models_yaml_is_one_line(text: str, fragment: str, tmp_path: Path, cache: Path):
    folder = tmp_path / "registry"
    folder.mkdir()
    (folder / "models.yaml").write_text(text)
    assert fragment in opening_error(folder)
    assert fragment in opening_error(write_zip(tmp_path / "m.zip", text))
    assert leftovers(cache) == []


def test_odd_files_fail_as_a_command_does(package: Path, tmp_path: Path):
    raw = tmp_path / "raw"
    write_pair(raw, 1, "nucleus", 0, shape=(24, 48, 48), scale=3.0)
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "models.yaml").write_bytes(b"\xff\xfe models")
    common = ("ckpt=auto", f"input={raw}", f"output={tmp_path / 'out'}", "progress=false")
    result = run_in_process("fmc.predict", f"registry={tmp_path / 'registry'}", *common)
    assert_user_error(result, "models.yaml: cannot read it (it is not UTF-8 text)")
    (tmp_path / "afile").write_text("")
    result = run_in_process("fmc.predict", f"registry={package}", *common,
                            env={"FMC_CACHE": str(tmp_path / "afile")})
    assert_user_error(result, f"FMC_CACHE={tmp_path / 'afile'}: fmc cannot keep model packages "
                              "there")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_an_unwritable_cache_is_one_line(package: Path, tmp_path: Path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setenv("FMC_CACHE", str(locked))
    assert "fmc cannot keep model packages there" in opening_error(package)


# 7. fmc.registry never writes over an input or a file of the user's.
def _export(source: Path, out) -> str:
    result = run_in_process("fmc.registry", f"input={source}", f"output={out}")
    assert result.returncode == 2, result.stderr
    err = result.stderr
    assert err.startswith("fmc.registry: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture()
def source(checkpoint: Path, tmp_path: Path) -> Path:
    """A registry folder whose checkpoint is named weights.zip (a name an output= could take)."""
    folder = tmp_path / "source"
    folder.mkdir()
    shutil.copy(checkpoint, folder / "weights.zip")
    (folder / "models.yaml").write_text(entry("weights.zip", None))
    return folder


def test_export_refuses_unsafe_targets_before_any_work(source: Path, tmp_path: Path):
    before = {p: p.read_bytes() for p in source.iterdir()}
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "folder.zip").mkdir()
    (tmp_path / "notes.zip").write_text("my notes")
    (tmp_path / "link.zip").symlink_to(source / "weights.zip")
    (tmp_path / "yaml.zip").symlink_to(source / "models.yaml")
    cases = {tmp_path / "afile" / "models.zip": "afile is a file, not a folder",
             tmp_path / "folder.zip": "a folder is there",
             tmp_path / "notes.zip": "a file fmc did not write is there",
             source / "sub" / ".." / "weights.zip": "would replace the input",
             tmp_path / "link.zip": "would replace the input",
             tmp_path / "yaml.zip": "would replace the input"}
    for out, fragment in cases.items():
        assert fragment in _export(source, out)
    assert {p: p.read_bytes() for p in source.iterdir()} == before
    assert (tmp_path / "notes.zip").read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "afile", "folder.zip", "link.zip", "notes.zip", "source", "yaml.zip"]
    assert list((tmp_path / "folder.zip").iterdir()) == []


def test_export_replaces_its_own_package_and_a_failure_keeps_it(source: Path, tmp_path: Path,
                                                                monkeypatch):
    out = tmp_path / "models.zip"
    export_package(source, out)
    export_package(source, out)  # an fmc package: replaced
    first = out.read_bytes()

    def full_disk(*args, **kwargs):
        raise FmcInputError("no space left on the device")

    monkeypatch.setattr(zipfile.ZipFile, "write", full_disk)
    assert "no space left" in _export(source, out)
    assert out.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
