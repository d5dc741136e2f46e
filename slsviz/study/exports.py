"""Exports of a study: the configuration of the model cut at a depth, its task checkpoint, ONNX file and
folders for the user's own tools (each written once per depth), and the check that an imported
configuration restores it."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from slsviz.errors import SlsvizError
from slsviz.export import build_config, export_onnx, load_config, restore, save_pruned_task
from slsviz.export.handback import export_as, refusals
from slsviz.layers.analysis import AnalysisSettings
from slsviz.models.depth import check_depth, prune_to_depth
from slsviz.models.selection import LoadedTask
from slsviz.models.task import TaskMeta
from slsviz.scheduler import Memo
from slsviz.storage import json_float
from slsviz.study.depths import DepthEvaluator
from slsviz.study.layers import LayerStudy
from slsviz.study.timing import Timing


class Exports:
    """What a study hands out, as file contents.

    Args:
        loaded: the backbone and task model.
        layers: the recommendation and scores a configuration records.
        depths: the accuracies it records.
        timing: the measured speed it records.
    """

    def __init__(self, loaded: LoadedTask, layers: LayerStudy, depths: DepthEvaluator, timing: Timing) -> None:
        self.loaded = loaded
        self.layers = layers
        self.depths = depths
        self.timing = timing
        self._task_files: Memo[bytes] = Memo()
        self._onnx_files: Memo[bytes] = Memo()
        self._tool_files: Memo[bytes] = Memo()

    @property
    def num_layers(self) -> int:
        """Blocks of the full model."""
        return len(self.loaded.model.blocks)

    def config(self, settings: AnalysisSettings, depth: int, time_budget_s: float | None = None) -> dict[str, Any]:
        """The configuration of the model cut at ``depth``: why (scores, the recommendation under
        ``settings``) and what it gives (accuracy, measured speed at batch 1 - ``time_budget_s`` of
        timing per depth, :meth:`Timing.benchmarks` -, FLOPs, parameters)."""
        meta = self._require_task("Export")
        depth = check_depth(depth, self.num_layers)
        row = self.depths.table().iloc[depth - 1]
        timed = self.timing.benchmarks(time_budget_s=time_budget_s)[depth]
        results = {"accuracy_as_is": json_float(row["accuracy_as_is"]), "accuracy_head_refit": float(row["accuracy_head_refit"]),
                   "throughput_images_per_s": timed.images_per_s, "latency_ms": timed.latency_ms,
                   "batch_size": timed.batch_size, "flops_per_image": timed.flops_per_image, "params": timed.params,
                   "device": timed.device, "recommended_depth": int(self.layers.recommend(settings).depth_),
                   "accuracy_as_is_note": self.loaded.head_note}
        return build_config(backbone=self.loaded.backbone, meta=meta, depth=depth, alpha=settings.alpha,
                            metric=settings.metric, projection=settings.projection,
                            scores=self.layers.analysis(settings).table().to_dict("records"), results=results)

    def task_checkpoint(self, depth: int) -> bytes:
        """The task checkpoint of the kept blocks (adapters + head + the depth), as file bytes. It
        records no accuracies: none was measured on the cut model here (``slsviz prune`` measures them)."""
        meta = self._require_task("A pruned task checkpoint")
        depth = check_depth(depth, self.num_layers)

        def write() -> bytes:
            with tempfile.TemporaryDirectory(prefix="slsviz-task-") as folder:
                return save_pruned_task(self.loaded.model, meta, depth, Path(folder) / "task.safetensors").read_bytes()

        return self._task_files.get(depth, write)

    def refusals(self) -> dict[str, str | None]:
        """Per format of :data:`~slsviz.export.handback.FORMATS`, why it cannot hold this task (``None``: it can)."""
        return refusals(self.loaded.model, self._require_task("Export"))

    def for_tool(self, fmt: str, depth: int, out: str | Path, settings: AnalysisSettings | None = None,
                 time_budget_s: float | None = None) -> list[Path]:
        """The model cut at ``depth`` in format ``fmt`` in the folder ``out``
        (:func:`~slsviz.export.handback.export_as`), its card showing :meth:`config` under ``settings``
        (``None``: no criterion, scores or accuracies on the card)."""
        meta = self._require_task("Export")
        refused = refusals(self.loaded.model, meta).get(fmt)
        if refused is not None:  # said before the analysis the card would show is run
            raise SlsvizError(refused)
        config = self.config(settings, depth, time_budget_s) if settings is not None else None
        return export_as(fmt, self.loaded.model, meta, depth, out, config=config)

    def for_tool_zip(self, fmt: str, depth: int, settings: AnalysisSettings | None = None) -> bytes:
        """:meth:`for_tool`'s folder as ``.zip`` bytes (for a download), made once per format, depth and settings."""
        depth = check_depth(depth, self.num_layers)

        def write() -> bytes:
            with tempfile.TemporaryDirectory(prefix=f"slsviz-{fmt}-") as folder:
                root = Path(folder) / f"{fmt}-depth{depth}"
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                    for path in self.for_tool(fmt, depth, root, settings):
                        archive.write(path, path.relative_to(folder).as_posix())
                return buffer.getvalue()

        return self._tool_files.get((fmt, depth, settings), write)

    def onnx(self, depth: int) -> bytes:
        """The model cut at ``depth`` (PETL merged) as ONNX file bytes."""
        depth = check_depth(depth, self.num_layers)

        def write() -> bytes:
            with tempfile.TemporaryDirectory(prefix="slsviz-onnx-") as folder:
                return export_onnx(prune_to_depth(self.loaded.model, depth), self.loaded.backbone.img_size,
                                   Path(folder) / "model.onnx").read_bytes()

        return self._onnx_files.get(depth, write)

    def check_import(self, config: str | bytes, task_checkpoint: bytes) -> tuple[dict[str, Any], bool]:
        """Restore the model a configuration and its task checkpoint describe on this study's backbone.

        Returns:
            The configuration, and whether the restored model's logits equal this study's model
            cut at the configuration's depth (on a fixed random batch).
        """
        imported = load_config(config)
        with tempfile.TemporaryDirectory(prefix="slsviz-import-") as folder:
            path = Path(folder) / "task.safetensors"
            path.write_bytes(task_checkpoint)
            model = restore(imported, path, self.loaded.backbone)
        size, device = self.loaded.backbone.img_size, self.loaded.backbone.device
        x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.inference_mode():
            same = torch.equal(model.eval()(x), prune_to_depth(self.loaded.model, imported["depth"]).eval()(x))
        return imported, same

    def _require_task(self, what: str) -> TaskMeta:
        if self.loaded.meta is None:
            raise SlsvizError(f"{what} needs a task (adapters + head): load a task checkpoint.")
        return self.loaded.meta
