"""What the benchmark scripts share: the default task loaded once, a private cache when asked."""

from __future__ import annotations

import contextlib
import os
import tempfile

from report import ROOT  # noqa: F401  (puts the repository on sys.path)

from slsviz.study import LoadedTask, Selection, open_selection


def default_task(device: str = "auto") -> LoadedTask:
    """The shipped default task (DINOv2 ViT-S/14 + Convpass, mnist5k) on ``device``."""
    return open_selection(Selection(device=device))


@contextlib.contextmanager
def fresh_cache():
    """A brand-new, empty slsviz cache for the block: nothing computed before is reused."""
    saved = os.environ.get("SLSVIZ_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="slsviz-bench-") as folder:
        os.environ["SLSVIZ_CACHE_DIR"] = folder
        try:
            yield folder
        finally:
            if saved is None:
                os.environ.pop("SLSVIZ_CACHE_DIR", None)
            else:
                os.environ["SLSVIZ_CACHE_DIR"] = saved
