"""What tests need and the engine does not: tiny random backbones, reference formulas, fingerprints."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from timm.models.swin_transformer import SwinTransformer
from sklearn.pipeline import Pipeline
from torch import nn

from slsviz import defaults
from slsviz.layers.rule import SLSRule
from slsviz.models.backbones import DEFAULT_ARCH, Backbone, weights_checksum
from slsviz.models.swin import SwinBlocks


def random_backbone(arch: str = DEFAULT_ARCH, *, img_size: int | None = None, seed: int = 0, **kwargs: Any) -> Backbone:
    """A randomly initialised timm ViT (or Swin, in :class:`SwinBlocks`) as a :class:`Backbone`; ``kwargs`` go to
    timm (e.g. ``depth=2``)."""
    if img_size is not None:
        kwargs["img_size"] = img_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs).eval()
    cfg = model.pretrained_cfg or {}
    if isinstance(model, SwinTransformer):
        model = SwinBlocks(model)
    return Backbone(model=model, id=f"{arch}:random({seed})", arch=arch, checksum=weights_checksum(model.state_dict()),
                    source=f"random init, seed {seed} (tests only)", img_size=int(model.patch_embed.img_size[0]),
                    mean=tuple(float(x) for x in cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)),
                    std=tuple(float(x) for x in cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)))


def recommend_depth(scores: Sequence[float], alpha: float = defaults.ALPHA, higher_is_better: bool = True) -> int:
    """The SLS depth for ``scores`` (block 1 first)."""
    return SLSRule(alpha, higher_is_better).fit(scores).depth_


def features_checksum(array: np.ndarray) -> str:
    """16 hex digits of the sha256 of an array's dtype, shape and bytes (C order): a map cache key."""
    a = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(a.dtype.str.encode())
    digest.update(repr(a.shape).encode())
    digest.update(a.tobytes())
    return digest.hexdigest()[:16]


def head_as_linear(clf: Pipeline, like: nn.Linear) -> nn.Linear:
    """A re-fit head (standardiser + logistic regression) folded into one torch Linear; same predictions."""
    scaler, lr = clf[0], clf[-1]
    coef, intercept = lr.coef_, lr.intercept_
    if coef.shape[0] == 1:  # binary: sklearn keeps one row, the logit of class 1 against class 0
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weight = coef / scaler.scale_
    bias = intercept - weight @ scaler.mean_
    head = nn.Linear(like.in_features, like.out_features).to(like.weight.device)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))
    return head


def lr_at(recipe, step: int, steps_per_epoch: int) -> float:
    """The learning rate ``recipe``'s schedule sets for optimiser step ``step`` (0-based)."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    scheduler = recipe.scheduler(optimizer, steps_per_epoch)
    if scheduler is not None:
        scheduler.step_update(step)
    return optimizer.param_groups[0]["lr"]


def paper_lr(recipe, step: int, steps_per_epoch: int) -> float:
    """The paper's warm-up + cosine schedule written out, per step: what timm's scheduler must equal."""
    import math

    total = recipe.epochs * steps_per_epoch
    warmup = min(recipe.warmup_epochs, recipe.epochs - 1) * steps_per_epoch
    if step < warmup:
        return recipe.min_lr + (recipe.lr - recipe.min_lr) * step / warmup
    progress = (step - warmup) / (total - warmup)
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * progress))


def benchmark(model: nn.Module, img_size: int, **kwargs: Any):
    """One model timed alone: :func:`slsviz.pruning.bench.benchmark_models` with a single round."""
    from slsviz.pruning.bench import benchmark_models

    return benchmark_models({0: model}, img_size, rounds=1, **kwargs)[0]


def image_folder(root: Path, classes: dict[str, int], size: int = 12) -> Path:
    """``root/<class>/<i>.png``: ``classes[name]`` random RGB images per class (seeded)."""
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def pickle_that_runs_code(path: Path, marker: Path) -> Path:
    """A ``.pth`` pickled as ``torch.save`` does whose unpickling would create ``marker`` (a shell command)."""
    with open(path, "wb") as f:
        pickle.dump({"blocks.0.attn.qkv.weight": _RunsCode(marker)}, f, protocol=2)
    return path


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def tiny_digits_tasks(folder: Path, methods: Sequence[str] = ("convpass",), arch: str = "vit_tiny_patch16_224") -> Path:
    """A tiny random 12-block backbone (32 px) saved as ``folder/tiny.safetensors`` and a task of each of
    ``methods`` on digits (one epoch on 64 images), ``folder/<method>.safetensors``; returns ``folder``."""
    from safetensors.torch import save_file

    from slsviz.data import load_digits
    from slsviz.models.backbones import load_backbone
    from slsviz.models.petl import PetlConfig
    from slsviz.models.task import fit_task, save_task
    from slsviz.models.train import Recipe

    save_file(random_backbone(arch, img_size=32, seed=0).model.state_dict(), str(folder / "tiny.safetensors"))
    backbone = load_backbone(arch, folder / "tiny.safetensors", img_size=32)
    for method in methods:
        model, meta, _ = fit_task(backbone, load_digits(), PetlConfig(method), Recipe(epochs=1, batch_size=32), limit=64)
        save_task(folder / f"{method}.safetensors", model, meta)
    return folder


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without these, Chromium keeps trying to reach Google's services on this closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    """A TCP port free on the loopback address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, seconds: float = 120) -> bool:
    """Whether the Streamlit server at ``url`` answers its health check within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return True
        except OSError:
            time.sleep(0.5)
    return False


# Ray's CLI, keeping 127.0.0.1 as this machine's address (see ray_loopback.py).
RAY_CLI = (sys.executable, str(Path(__file__).with_name("ray_loopback.py")))


class LoopbackRayCluster:
    """A Ray cluster of two nodes on this machine, started with Ray's own CLI the way the README's
    cluster steps say, every process on the loopback address.

    On the head, ``ray get-auth-token --generate`` makes the token (in that node's home) and prints it,
    and ``RAY_AUTH_MODE=token ray start --head`` starts it; the second node joins with the token in
    ``RAY_AUTH_TOKEN`` and ``RAY_AUTH_MODE=token`` (its own home has none); so does a driver
    (:attr:`driver_env`). Each node has its own home and Ray temp folder, so nothing of the machine's
    own Ray (``~/.ray``, ``/tmp/ray``) is read or written. Both ``ray start`` run with ``--block``: ending
    them ends their node (Ray's reaper), never another Ray on the machine.
    """

    def __init__(self, cpus_per_node: int = 1) -> None:
        self.cpus = cpus_per_node
        self.root = Path(tempfile.mkdtemp(prefix="slsviz-ray-", dir="/tmp"))  # short: Ray's socket paths have a limit
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.token = ""

    def _env(self, node: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
        (self.root / node / "home").mkdir(parents=True, exist_ok=True)
        return {**env, "HOME": str(self.root / node / "home"), "RAY_USAGE_STATS_ENABLED": "0", **extra}

    def _start(self, node: str, *args: str, **env: str) -> None:
        log = open(self.root / f"{node}.log", "wb")  # noqa: SIM115 - open while the node runs
        self.processes.append(subprocess.Popen(
            [*RAY_CLI, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus),
             "--temp-dir", str(self.root / node / "tmp"), *args], env=self._env(node, **env), stdout=log,
            stderr=subprocess.STDOUT))

    @property
    def driver_env(self) -> dict[str, str]:
        """What a driver (``slsviz sweep --address``) needs besides the address."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def start(self, seconds: float = 120) -> LoopbackRayCluster:
        """Make the head's token as a user would, start the head with it, then the second node (all
        stopped again if one does not start)."""
        try:
            self.token = subprocess.run([*RAY_CLI, "get-auth-token", "--generate"], env=self._env("head"),
                                        capture_output=True, text=True, check=True).stdout.strip()
            self._start("head", "--head", "--port", str(self.port), "--include-dashboard", "false",
                        RAY_AUTH_MODE="token")
            deadline = time.monotonic() + seconds
            while not _answers(self.port):
                if time.monotonic() > deadline or self.processes[0].poll() is not None:
                    raise RuntimeError(f"the Ray head did not start: {self.log('head')}")
                time.sleep(0.2)
            self._start("node2", "--address", self.address, **self.driver_env)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self, node: str) -> str:
        path = self.root / f"{node}.log"
        return path.read_text(errors="replace")[-2000:] if path.is_file() else ""

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
