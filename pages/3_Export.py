"""Export: download the chosen configuration (JSON, YAML), the pruned task checkpoint, ONNX; import one."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st
import torch

from slsviz.app import ui
from slsviz.export import (
    build_config,
    config_to_json,
    config_to_yaml,
    export_onnx,
    load_config,
    restore,
    save_pruned_task,
)
from slsviz.models.depth import prune_to_depth

st.set_page_config(page_title="slsviz - Export", layout="wide")
st.title("Export")

ws = ui.current_workspace(splits=("train", "val", "test"))
settings = ui.settings()
if ws.loaded.meta is None:
    st.error("Export needs a task (adapters + head): load a task checkpoint on the home page.")
    st.stop()
with ui.user_errors():  # the depth chosen on the Prune page, else the SLS recommendation
    recommended = int(st.session_state.get(ui.DEPTH) or ws.analysis(settings).recommend().depth_)
depth = int(st.session_state.get("slsviz.prune.chosen", recommended))
depth = st.number_input("Blocks kept", 1, ws.num_layers, depth, key="slsviz.export.depth")

with ui.user_errors():
    table = ws.depth_table()
    scores = ws.analysis(settings).table()
    bench = ws.benchmarks(progress=ui.ProgressBar(f"Timing all {ws.num_layers} depths, interleaved"))[int(depth)]
    row = table.iloc[int(depth) - 1]
    config = build_config(
        backbone=ws.loaded.backbone, meta=ws.loaded.meta, depth=int(depth), alpha=settings.alpha, metric=settings.metric,
        projection=settings.projection, scores=scores.to_dict("records"),
        results={"accuracy_as_is": float(row["accuracy_as_is"]), "accuracy_head_refit": float(row["accuracy_head_refit"]),
                 "throughput_images_per_s": bench.images_per_s, "latency_ms": bench.latency_ms, "batch_size": bench.batch_size,
                 "flops_per_image": bench.flops_per_image, "params": bench.params, "device": bench.device,
                 "recommended_depth": recommended},
    )

st.subheader("Configuration")
st.json(config, expanded=False)
c1, c2, c3, c4 = st.columns(4)
c1.download_button("Configuration (JSON)", config_to_json(config), "slsviz-config.json", "application/json",
                   key="slsviz.export.json")
c2.download_button("Configuration (YAML)", config_to_yaml(config), "slsviz-config.yaml", "application/yaml",
                   key="slsviz.export.yaml")
with tempfile.TemporaryDirectory() as folder:
    path = save_pruned_task(ws.loaded.model, ws.loaded.meta, int(depth), Path(folder) / "task.safetensors")
    c3.download_button("Task checkpoint, kept blocks only", path.read_bytes(), f"task-depth{int(depth)}.safetensors",
                       key="slsviz.export.task")
if c4.button("Prepare ONNX of the pruned model", key="slsviz.export.onnx_make"):
    with ui.user_errors(), st.spinner("Exporting to ONNX..."), tempfile.TemporaryDirectory() as folder:
        onnx = export_onnx(prune_to_depth(ws.loaded.model, int(depth)), ws.loaded.backbone.img_size, Path(folder) / "m.onnx")
        st.session_state["slsviz.export.onnx_bytes"] = onnx.read_bytes()
if "slsviz.export.onnx_bytes" in st.session_state:
    c4.download_button("Pruned model (ONNX)", st.session_state["slsviz.export.onnx_bytes"], f"pruned-depth{int(depth)}.onnx",
                       key="slsviz.export.onnx")

st.subheader("Import")
st.caption("A configuration and its task checkpoint restore the same pruned model; the check below compares logits.")
i1, i2 = st.columns(2)
config_file = i1.file_uploader("Configuration (JSON or YAML)", type=["json", "yaml", "yml"], key="slsviz.export.in_config")
task_file = i2.file_uploader("Task checkpoint (.safetensors)", type=["safetensors"], key="slsviz.export.in_task")
if config_file is not None and task_file is not None:
    with ui.user_errors(), tempfile.TemporaryDirectory() as folder:
        imported = load_config(config_file.getvalue())
        task_path = Path(folder) / "task.safetensors"
        task_path.write_bytes(task_file.getvalue())
        model = restore(imported, task_path, ws.loaded.backbone)
        x = torch.randn(4, 3, ws.loaded.backbone.img_size, ws.loaded.backbone.img_size,
                        generator=torch.Generator().manual_seed(0)).to(ws.loaded.backbone.device)
        with torch.inference_mode():
            same = torch.equal(model.eval()(x), prune_to_depth(ws.loaded.model, imported["depth"]).eval()(x))
    st.session_state[ui.DEPTH] = int(imported["depth"])
    st.session_state["slsviz.prune.chosen"] = int(imported["depth"])
    (st.success if same else st.warning)(
        f"Restored: depth {imported['depth']} of {imported['num_layers']}, {imported['petl']['method']} - "
        + ("logits identical to this session's pruned model." if same else "logits differ from this session's model."))
