"""Run and world directories: the manifest, atomic writes and hash-checked reads.

A directory is a *world* (``mechrecall data``) or a *run* (``mechrecall train``). Its
``manifest.json`` records the kind, the configs, seeds, package versions and the sha256 of every
artifact. Every artifact is written to a temporary file and renamed into place, then recorded in
the manifest (itself written atomically); every read checks the hash first, so a stale or corrupt
artifact is an error naming the file, never a silent wrong answer.

*Provenance*: an artifact derived from others records, under ``manifest["provenance"]``, the
sha256 of each input it was made from and the command that makes it. Reading it checks those
inputs against the manifest: when an input has changed since (``trace`` ran again, say), the read
is an error that names the command to rerun, never a stale answer.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mechrecall.errors import ArtifactError, OutputBusyError, RunDirError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_TRACKED_PACKAGES = (
    "mechrecall", "torch", "transformer-lens", "transformers", "tokenizers", "datasets",
    "safetensors", "nnsight", "einops", "numpy",
)


def machine_description() -> dict[str, Any]:
    """What the numbers were computed on, beside the package versions: the same code, seeds and
    versions give the same bits on one machine, but a CPU of another kind runs other kernels
    (torch picks its vector instructions at run time), so results can differ between machines."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux: platform's own name of the processor
        cpuinfo = []
    names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name") and ":" in line]
    cpu = names[0] if names else (platform.processor() or "unknown")
    return {
        "architecture": platform.machine(),
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "system": platform.system(),
    }


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """A safetensors file whose bytes depend only on its content. safetensors writes its header from
    a hash map, so the metadata comes out in a different order in each process and the same tensors
    hash differently run to run; the header is rewritten here as sorted compact JSON, padded with
    spaces to its old length (the data and its offsets are untouched)."""
    save_file(tensors, str(path), metadata=metadata)
    with open(path, "r+b") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
        canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(canonical) > length:  # never: the written header is the same compact JSON in another order
            raise ArtifactError(f"could not write {path} with a canonical header")
        handle.seek(8)
        handle.write(canonical + b" " * (length - len(canonical)))


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        os.chmod(temporary_path, 0o644)
        os.replace(temporary_path, target)
        _remove_leftovers(target)
    finally:
        if temporary_path.exists():
            temporary_path.unlink()


def _leftovers(target: Path) -> list[Path]:
    """Temporaries of ``target`` that a killed :func:`atomic_path` left behind (its own name pattern,
    hidden beside the target; a run folder has one writer, held by its lock)."""
    return sorted(target.parent.glob(f".{glob.escape(target.name)}.*.tmp"))


def _remove_leftovers(target: Path) -> None:
    for leftover in _leftovers(target):
        leftover.unlink(missing_ok=True)


def discard(target: Path) -> None:
    """Remove a file mechrecall wrote (a finished training's checkpoint) and any half-written copy
    of it that a kill left behind."""
    target.unlink(missing_ok=True)
    _remove_leftovers(target)


def _manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a parsed manifest's shape, or None."""
    if not isinstance(manifest, dict):
        return f"holds {type(manifest).__name__}, not an object"
    for key, kind in (("kind", str), ("status", str), ("config", dict), ("files", dict)):
        if not isinstance(manifest.get(key), kind):
            return f"lacks {key!r} (or it has the wrong type)"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        return "has a 'files' entry that is not name → sha256"
    return None


def write_text_output(target: Path, text: str, option: str = "--markdown", inputs: tuple[Path, ...] = ()) -> None:
    """Write a script's text output (a markdown table) whole or not at all; a path that cannot be
    written, an existing file that is not markdown, or a path inside one of ``inputs`` (a run's
    own report.md) raises one RunDirError line naming ``option`` and the fix."""
    check_text_output(target, option, inputs)
    try:
        with atomic_path(target) as temporary:
            temporary.write_text(text)
    except OSError as error:
        raise RunDirError(f"{option} {target}: cannot write it ({error.strerror or type(error).__name__}): "
                          "give a file path in a folder you can write") from None


def check_text_output(target: Path, option: str = "--markdown", inputs: tuple[Path, ...] = ()) -> None:
    """Refuse, before any work, an output path ``write_text_output`` would refuse."""
    resolved = target.resolve()
    for folder in inputs:
        if resolved.is_relative_to(folder.resolve()):
            raise RunDirError(f"{option} {target} lies inside the input {folder}: write the table outside the folders it reads")
    if target.exists() and (target.is_dir() or target.suffix != ".md"):
        raise RunDirError(f"{option} {target} exists and is not a markdown file: give a new path or an existing .md file")


def emit(text: str, markdown: Path | None, inputs: tuple[Path, ...] = ()) -> None:
    """A script's table: printed, and written whole to ``markdown`` when one is given (never inside
    one of ``inputs``)."""
    print(text, end="")
    if markdown is not None:
        write_text_output(markdown, text, inputs=inputs)


def write_json_atomic(target: Path, payload: Any) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


@dataclass
class ArtifactDir:
    """A world or run directory with its manifest (held in memory, saved on each change)."""

    path: Path
    manifest: dict[str, Any]

    # ---- creation and opening -------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, kind: str, config: dict[str, Any], seeds: dict[str, int]) -> ArtifactDir:
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "status": "incomplete",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config,
            "seeds": seeds,
            "versions": package_versions(),
            "machine": machine_description(),
            "files": {},
        }
        directory = cls(path=path, manifest=manifest)
        directory.save_manifest()
        return directory

    @classmethod
    def open(cls, path: Path, kind: str | None = None) -> ArtifactDir:
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"{path} does not exist or is not a directory: give a directory made by mechrecall")
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise RunDirError(f"{path} has no {MANIFEST}: it is not a mechrecall directory (make one with `mechrecall data` or `mechrecall train`)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise ArtifactError(f"{manifest_path} is not valid JSON ({error.msg}): the directory is corrupt, make it again") from None
        problem = _manifest_problem(manifest)
        if problem:
            raise ArtifactError(f"{manifest_path} {problem}: the directory is corrupt, make it again")
        if kind is not None and manifest.get("kind") != kind:
            raise RunDirError(f"{path} is a {manifest.get('kind')!r} directory, not a {kind!r} one")
        return cls(path=path, manifest=manifest)

    def reload(self) -> None:
        self.manifest = ArtifactDir.open(self.path).manifest

    def save_manifest(self) -> None:
        write_json_atomic(self.path / MANIFEST, self.manifest)

    @contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        """Change the manifest as it is on disk, under an exclusive lock on the directory: it is
        read again first and saved after, so processes recording files of one directory side by
        side (a run's analyses in ``reproduce``) never drop each other's entries."""
        import fcntl

        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            if _inode(descriptor) not in _HELD_STAGING:  # a staging folder of ours: this process is its one writer
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            if (self.path / MANIFEST).is_file():
                self.reload()
            yield self.manifest
            self.save_manifest()
        finally:
            os.close(descriptor)  # releases the lock

    # ---- state ----------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest["config"])

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    def mark(self, status: str, **extra: Any) -> None:
        with self._changing() as manifest:
            manifest["status"] = status
            manifest.update(extra)

    def has(self, relative: str) -> bool:
        return relative in self.manifest["files"] or any(
            name.startswith(relative.rstrip("/") + "/") for name in self.manifest["files"]
        )

    # ---- recording and checking -------------------------------------------------------------
    def record(self, relative: str) -> None:
        """Record the sha256 of a file, or of every file below a folder, in the manifest."""
        target = self.path / relative
        files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
        digests = {file.relative_to(self.path).as_posix(): sha256_file(file) for file in files}  # outside the lock
        prefix = relative.rstrip("/") + "/"
        with self._changing() as manifest:
            if target.is_dir():
                for name in [n for n in manifest["files"] if n.startswith(prefix)]:
                    del manifest["files"][name]
            manifest["files"].update(digests)

    def set_provenance(self, relative: str, inputs: dict[str, str], made_by: str) -> None:
        """Record that ``relative`` was made from ``inputs`` (name → sha256) by ``made_by``."""
        with self._changing() as manifest:
            manifest.setdefault("provenance", {})[relative] = {"inputs": dict(inputs), "made_by": made_by}

    def input_hashes(self, names: tuple[str, ...] | list[str]) -> dict[str, str]:
        """The recorded sha256 of each of ``names`` (an unrecorded one is an error naming it)."""
        self.reload()
        missing = [name for name in names if name not in self.manifest["files"]]
        if missing:
            raise ArtifactError(f"{self.path / missing[0]} is not recorded in {self.path / MANIFEST}: the step that makes it has not run")
        return {name: self.manifest["files"][name] for name in names}

    def stale_inputs(self, relative: str) -> list[str]:
        """The inputs of ``relative`` that changed (or vanished) since it was made."""
        record = self.manifest.get("provenance", {}).get(relative)
        if not isinstance(record, dict):
            return []
        files = self.manifest["files"]
        return [name for name, digest in record.get("inputs", {}).items() if files.get(name) != digest]

    def verify(self, relative: str) -> Path:
        """Check a file (or every recorded file below a folder) against the manifest and its inputs
        against its provenance; return its path."""
        self.reload()  # the manifest on disk is the truth: another handle may have written since
        prefix = relative.rstrip("/") + "/"
        names = [n for n in self.manifest["files"] if n == relative or n.startswith(prefix)]
        if not names:
            raise ArtifactError(f"{self.path / relative} is not recorded in {self.path / MANIFEST}: the step that makes it has not run")
        for name in names:
            file = self.path / name
            if not file.is_file():
                raise ArtifactError(f"{file} is missing but recorded in the manifest: make the directory again")
            if sha256_file(file) != self.manifest["files"][name]:
                raise ArtifactError(
                    f"{file} does not match the sha256 in {self.path / MANIFEST}: it is corrupt or was changed "
                    "by hand; re-run the step that writes it (or the whole run with --overwrite)"
                )
        for name in names:
            stale = self.stale_inputs(name)
            if stale:
                made_by = self.manifest["provenance"][name].get("made_by") or "the step that makes it"
                raise ArtifactError(
                    f"{self.path / name} is stale: {stale[0]} changed after it was made; run `{made_by}` again"
                )
        return self.path / relative

    # ---- typed writers and readers ------------------------------------------------------
    def write_json(self, relative: str, payload: Any) -> None:
        write_json_atomic(self.path / relative, payload)
        self.record(relative)

    def save_tensors(self, relative: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
        contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
        with atomic_path(self.path / relative) as temporary:
            write_safetensors(temporary, contiguous, metadata)
        self.record(relative)

    def read_json(self, relative: str) -> Any:
        path = self.verify(relative)
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ArtifactError(f"{path} is not valid JSON ({type(error).__name__}): make it again") from None

    def load_tensors(self, relative: str, device: str = "cpu") -> dict[str, torch.Tensor]:
        path = self.verify(relative)
        try:
            return load_file(str(path), device=device)
        except Exception as error:  # noqa: BLE001 - safetensors raises several kinds on a bad file
            raise ArtifactError(f"{path} is not a readable safetensors file ({type(error).__name__}): make it again") from None

    @contextmanager
    def write_folder(self, relative: str) -> Iterator[Path]:
        """Yield a temporary folder; it replaces ``relative`` whole, then is recorded. A temporary
        of the same folder that a killed writer left inside this directory is removed first."""
        final = self.path / relative
        with staging_folder(final, kind=None) as temporary:
            yield temporary
            os.chmod(temporary, 0o755)
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
        self.record(relative)


def check_output_path(path: Path) -> None:
    """Refuse an output path that can never be created: the working directory, one under a file,
    or a name longer than the file system allows."""
    path = Path(path)
    if str(path).strip() in ("", "."):
        raise RunDirError(f"--out {str(path)!r} is the working directory: give a new folder for the output")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise RunDirError(f"--out {path}: {parent} is a file, not a folder")
    if len(path.name.encode()) > 255:
        raise RunDirError(f"--out {path}: the name is longer than the file system allows")


def check_output(path: Path, overwrite: bool, kind: str, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse an output path that mechrecall may not write (nothing on disk is touched here).

    A new path is fine if its parent is not a file. An existing one needs ``overwrite`` and must
    be a mechrecall directory of the same ``kind`` (its manifest says so): never a file, a
    symbolic link, a folder of someone else's, the working directory or one of its parents, an
    input of the command or a folder holding one."""
    path = Path(path)
    check_output_path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise RunDirError(f"{path} already exists: choose another --out or pass --overwrite to replace it")
    if path.is_symlink():
        raise RunDirError(f"--overwrite {path}: it is a symbolic link; mechrecall only replaces folders it made")
    if not path.is_dir():
        raise RunDirError(f"--overwrite {path}: it is a file, not a mechrecall {kind} directory; it was left alone")
    resolved, here = path.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise RunDirError(f"--overwrite {path}: it is the working directory or holds it; give the {kind} directory itself")
    for source in inputs:
        source = Path(source).resolve()
        if source == resolved or resolved in source.parents:
            raise RunDirError(f"--overwrite {path}: it is, or holds, an input of this command ({source}); choose another --out")
    manifest = path / MANIFEST
    try:
        found = json.loads(manifest.read_text()).get("kind") if manifest.is_file() else None
    except (json.JSONDecodeError, OSError, AttributeError):
        found = None
    if found != kind:
        what = f"a mechrecall {found} directory" if found else "not a mechrecall directory"
        raise RunDirError(f"--overwrite {path}: it is {what}, not a {kind} directory; it was left alone")


@contextmanager
def output_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on an output path for the life of a command: a second process that
    would write the same output refuses at once instead of mixing files with the first."""
    import fcntl

    path = Path(path)
    check_output_path(path)
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    while True:
        handle = open(lock, "a+")  # noqa: SIM115 - held until the with block ends
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise OutputBusyError(f"another mechrecall process is writing {path}: wait for it to finish, or choose another --out") from None
        try:  # the holder before us may have removed the file between our open and our lock: retry
            locked_the_file_there = os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            locked_the_file_there = False
        if locked_the_file_there:
            break
        handle.close()
    try:
        yield
    finally:
        # remove the lock file while still holding it, so nothing of ours is left beside the output
        lock.unlink(missing_ok=True)
        handle.close()
        for folder in created:  # folders made only to hold the lock, left empty by a refused command
            try:
                folder.rmdir()
            except OSError:
                break


def swap_into_place(staging: Path, out: Path, kind: str) -> None:
    """Move a complete ``staging`` folder to ``out`` (a mechrecall directory of ``kind``); an
    existing ``out`` (already checked by :func:`check_output`) is replaced only now, once the new
    one is whole."""
    if out.exists():
        with staging_folder(out, kind=kind, infix="old.") as retired:
            os.replace(out, retired / out.name)
            os.replace(staging, out)
    else:
        os.replace(staging, out)


# tempfile.mkdtemp's random part: 8 characters of this alphabet
_TEMPORARY_NAME = re.compile(r"[a-z0-9_]{8}")


@contextmanager
def staging_folder(out: Path, kind: str | None, infix: str = "") -> Iterator[Path]:
    """A hidden folder ``.<out>.<infix><8 random characters>`` beside ``out`` for building it
    whole; removed on the way out unless it was renamed onto ``out``.

    While it lives its writer holds an flock on it, which the kernel drops when the writer dies
    (``kill -9`` included). Before making one, the staging folders of ``out`` that a dead writer
    left (see :func:`_dead_staging`) are removed, so a killed command, run again, leaves nothing
    beside its output."""
    import fcntl

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in _dead_staging(out, kind):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.{infix}", dir=out.parent))
    held = os.open(staging, os.O_RDONLY)
    inode = _inode(held)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        _HELD_STAGING.add(inode)
        yield staging
    finally:
        _HELD_STAGING.discard(inode)
        if staging.exists():
            shutil.rmtree(staging)
        os.close(held)


# the staging folders this process holds (device, inode): a directory's flock is taken by a second
# open of it too, so ArtifactDir._changing must not take it again on one of these
_HELD_STAGING: set[tuple[int, int]] = set()


def _inode(descriptor: int) -> tuple[int, int]:
    status = os.fstat(descriptor)
    return status.st_dev, status.st_ino


def _dead_staging(out: Path, kind: str | None) -> list[Path]:
    """Staging folders of ``out`` whose writer is gone. A folder counts only if all of these hold:
    its name is ``.<out>.<8 random characters>`` or ``.<out>.old.<8 random characters>`` (what
    :func:`staging_folder` makes); it is a real folder, not a link; no live process holds its
    flock; and its content is ours. With ``kind`` given (a world or run built beside other
    folders), that means empty or holding a mechrecall manifest of that kind (a retired folder:
    ``out``'s old copy with such a manifest); with ``kind`` None the caller vouches for the parent
    folder (a mechrecall directory, under its writer's lock). Anything else is left alone."""
    import fcntl

    found = []
    prefix = f".{out.name}."
    for candidate in sorted(out.parent.glob(f"{glob.escape(prefix)}*")):
        rest = candidate.name[len(prefix):]
        retired = rest.startswith("old.")
        if not _TEMPORARY_NAME.fullmatch(rest[4:] if retired else rest):
            continue
        if candidate.is_symlink() or not candidate.is_dir():
            continue
        if kind is not None and not (_holds_retired(candidate, out.name, kind) if retired else _holds_only_ours(candidate, kind)):
            continue
        try:
            probe = os.open(candidate, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer's
        finally:
            os.close(probe)
        found.append(candidate)
    return found


def _holds_retired(folder: Path, name: str, kind: str) -> bool:
    """A retired folder of ours: empty, or holding only ``name``, itself one of ours."""
    entries = list(folder.iterdir())
    return not entries or (entries == [folder / name] and _holds_only_ours(folder / name, kind))


def _holds_only_ours(folder: Path, kind: str) -> bool:
    """``folder`` is a real folder that is empty, holds only half-written manifests, or holds a
    manifest of ``kind``."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    if all(_is_manifest_temporary(entry) for entry in entries):
        return True
    try:
        return json.loads((folder / MANIFEST).read_text()).get("kind") == kind
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def _is_manifest_temporary(path: Path) -> bool:
    return path.is_file() and path.name.startswith(f".{MANIFEST}.") and path.name.endswith(".tmp")
