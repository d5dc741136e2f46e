"""Where slsviz keeps its cache, and how it writes files without ever leaving half of one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def keep_upload(name: str, data: bytes) -> Path:
    """Store an uploaded file's bytes in the cache (named by content) and return its path.

    Uploads arrive as bytes; the loaders read files. The same content is stored only once.
    """
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name) or "upload"
    target = cache_dir() / "uploads" / f"{hashlib.sha256(data).hexdigest()[:16]}-{safe}"
    if not target.exists():
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    return target
