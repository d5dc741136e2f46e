"""Where slsviz keeps its cache, and how it writes files without ever leaving half of one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slsviz.errors import SlsvizError


def cache_dir() -> Path:
    """The slsviz cache folder, created on demand.

    ``SLSVIZ_CACHE_DIR`` wins; otherwise ``$XDG_CACHE_HOME/slsviz`` (``~/.cache/slsviz``).
    """
    override = os.environ.get("SLSVIZ_CACHE_DIR")
    if override:
        root = Path(override)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "slsviz"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    Readers therefore see either the old file or the complete new one, never a partial write.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder beside ``target``; once the block succeeds, move each file it holds into
    ``target`` (made if missing) by a rename, keeping sub-folders. On failure nothing reaches ``target``.
    Files already in ``target`` under other names stay."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            placed = target / path.relative_to(staging)
            placed.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, placed)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def content_key(record: Any, length: int = 24) -> str:
    """sha256 (hex, ``length`` chars) of the JSON of ``record``: a cache key for what it describes."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:length]


class ArrayCache:
    """slsviz's one disk cache of computed arrays (feature banks, maps): an entry is a folder
    ``cache_dir() / kind / key`` of ``<name>.npy`` files and a ``meta.json``, written beside its place
    and renamed there whole, so a reader sees a complete entry or none.

    Args:
        kind: the cache's subfolder (``"features"``, ``"maps"``).
        noun: what an entry is, for the warning about an unreadable one.
    """

    def __init__(self, kind: str, noun: str) -> None:
        self.kind, self.noun = kind, noun

    def load(self, key: str, *, mapped: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """``(arrays, meta)`` stored under ``key`` (the arrays named in ``mapped`` memory-mapped), or
        ``None``: absent, or unreadable (with a warning; the next :meth:`store` replaces it)."""
        entry = cache_dir() / self.kind / key
        if not entry.is_dir():
            return None
        try:
            return self._read(entry, mapped)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"Ignoring unreadable cached {self.noun} {entry}: {exc}", stacklevel=2)
            return None

    def store(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        """Keep ``arrays`` and ``meta`` under ``key``; an entry already there (another writer's, the same
        content) is kept, an unreadable one replaced."""
        root = cache_dir() / self.kind
        root.mkdir(parents=True, exist_ok=True)
        target = root / key
        scratch = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            for name, array in arrays.items():
                np.save(scratch / f"{name}.npy", array)
            (scratch / "meta.json").write_text(json.dumps({"arrays": list(arrays), "meta": meta or {}}), encoding="utf-8")
            try:
                os.replace(scratch, target)
            except OSError:  # an entry is there: another writer's (as good: kept), or a damaged one (replaced)
                try:
                    self._read(target, tuple(arrays))  # mapped: a check, not a read
                except (OSError, ValueError, KeyError, TypeError):
                    shutil.rmtree(target, ignore_errors=True)
                    os.replace(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def _read(entry: Path, mapped: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r" if name in mapped else None, allow_pickle=False)
                  for name in meta["arrays"]}
        return arrays, meta["meta"]


def json_float(x: Any) -> float | None:
    """A float for JSON: ``None`` for NaN (JSON has no NaN)."""
    x = float(x)
    return None if math.isnan(x) else x


def write_json_and_csv(out: str | os.PathLike, json_name: str, payload: Any, csv_name: str, table: Any) -> list[Path]:
    """Write ``payload`` as JSON and ``table`` (a pandas DataFrame) as CSV into the folder ``out`` (made if
    missing), each atomically; returns both paths.

    Raises:
        SlsvizError: ``out`` is a file.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SlsvizError(f"--out {out} is a file: name a folder for {json_name} and {csv_name}.")
    out.mkdir(parents=True, exist_ok=True)
    written = [out / json_name, out / csv_name]
    with atomic_path(written[0]) as tmp:
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    with atomic_path(written[1]) as tmp:
        table.to_csv(tmp, index=False)
    return written


def check_can_write(target: str | os.PathLike, *, folder: bool) -> Path:
    """Check, before any work, that ``target`` can be written: a folder (``folder=True``) or a file.

    Nothing is created: the nearest existing ancestor is probed with a temporary file.

    Raises:
        SlsvizError: ``target`` is a file where a folder is wanted (or the reverse), a parent is a
            file, or the nearest existing folder does not accept files.
    """
    target = Path(target).expanduser()
    kind = "folder" if folder else "file"
    if target.exists() and target.is_dir() != folder:
        actual = "a folder" if target.is_dir() else "a file"
        raise SlsvizError(f"Output {kind} {target} is {actual}: give a path to a {kind} (a new one, or one of yours).")
    existing = target if folder and target.is_dir() else target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SlsvizError(f"Cannot write {target}: {existing} is a file, not a folder. Choose another output path.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise SlsvizError(f"Cannot write {target}: {existing} does not accept new files ({exc.strerror or exc}). "
                          "Choose an output path you can write to.") from None
    return target


def _read_umask() -> int:
    """The process umask, read without changing it where the kernel tells it (Linux 4.7+).

    Elsewhere it is set and restored once, at import, before any thread of ours writes files:
    flipping it later would race with other threads (other browser sessions) creating files.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def keep_upload_folder(files: list[tuple[str, bytes]]) -> Path:
    """Store uploaded files together in one folder of the cache (named by their names and contents) and
    return it: a folder format (a PEFT adapter, a transformers model) arrives as several files.

    The folder is written beside its final place and renamed there whole, so no reader sees half of it.
    """
    digest = hashlib.sha256()
    named = sorted((_safe_name(name), data) for name, data in files)
    for name, data in named:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    target = cache_dir() / "uploads" / f"{digest.hexdigest()[:16]}-folder"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".folder-", dir=target.parent))
        for name, data in named:
            (scratch / name).write_bytes(data)
        try:
            scratch.rename(target)
        except OSError:  # another session stored the same folder first
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name) or "upload"


def keep_upload(name: str, data: bytes) -> Path:
    """Store an uploaded file's bytes in the cache (named by content) and return its path.

    Uploads arrive as bytes; the loaders read files. The same content is stored only once.
    """
    target = cache_dir() / "uploads" / f"{hashlib.sha256(data).hexdigest()[:16]}-{_safe_name(name)}"
    if not target.exists():
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    return target
