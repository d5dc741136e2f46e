"""Export: download the chosen configuration (JSON, YAML), the pruned task checkpoint, ONNX, the model
for the user's own tools (timm, transformers, PEFT, the official SLS code); import one."""

from __future__ import annotations

import streamlit as st

from slsviz.app import ui
from slsviz.export import config_to_json, config_to_yaml

st.title("Export")

study = ui.current_study(splits=("train", "val", "test"))
if study.loaded.meta is None:
    st.error("Export needs a task (adapters + head): load a task checkpoint on the Model page.")
    st.stop()
settings = ui.settings()
depth = st.number_input("Blocks kept", 1, study.num_layers, ui.chosen_depth(study), key=ui.EXPORT_DEPTH,
                        help="starts at the depth chosen on Prune & benchmark, else the SLS recommendation")
depth = int(depth)

with ui.user_errors():
    study.timing.benchmarks(progress=ui.ProgressBar(f"Timing all {study.num_layers} depths, interleaved"))
    config = study.exports.config(settings, depth)

st.subheader("Configuration")
st.json(config, expanded=False)
c1, c2, c3, c4 = st.columns(4)
c1.download_button("Configuration (JSON)", config_to_json(config), "slsviz-config.json", "application/json",
                   key="slsviz.export.json")
c2.download_button("Configuration (YAML)", config_to_yaml(config), "slsviz-config.yaml", "application/yaml",
                   key="slsviz.export.yaml")
with ui.user_errors():
    c3.download_button("Task checkpoint, kept blocks only", study.exports.task_checkpoint(depth), f"task-depth{depth}.safetensors",
                       key="slsviz.export.task")
if c4.button("Prepare ONNX of the pruned model", key="slsviz.export.onnx_make"):
    with ui.user_errors(), st.spinner("Exporting to ONNX..."):
        study.exports.onnx(depth)
    st.session_state[ui.ONNX_DEPTH] = depth
if st.session_state.get(ui.ONNX_DEPTH) == depth:  # prepared for this depth: cached in the study
    c4.download_button("Pruned model (ONNX)", study.exports.onnx(depth), f"pruned-depth{depth}.onnx", key="slsviz.export.onnx")

st.subheader("For your own tools, without slsviz")
refused = study.exports.refusals()
fitting = [fmt for fmt, reason in refused.items() if reason is None]
for fmt, reason in refused.items():
    if reason is not None:
        st.caption(f"{ui.TOOL_FORMATS[fmt]}: {reason}")
if fitting:
    fmt = st.selectbox("Format", fitting, format_func=ui.TOOL_FORMATS.get, key=ui.TOOL_FORMAT,
                       help="the model cut at the blocks kept, in a folder that tool loads alone, with a model card")
    if st.button(f"Prepare the folder for {fmt}", key="slsviz.export.tool_make"):
        with ui.user_errors(), st.spinner(f"Cutting, writing and checking with {fmt}..."):
            study.exports.for_tool_zip(fmt, depth, settings)
        st.session_state[ui.TOOL_PREPARED] = (fmt, depth)
    if st.session_state.get(ui.TOOL_PREPARED) == (fmt, depth):  # prepared for this format and depth: cached in the study
        st.download_button(f"Pruned model for {fmt} (.zip)", study.exports.for_tool_zip(fmt, depth, settings),
                           f"{fmt}-depth{depth}.zip", "application/zip", key="slsviz.export.tool_file")

st.subheader("Import")
st.caption("A configuration and its task checkpoint restore the same pruned model; the check below compares logits.")
i1, i2 = st.columns(2)
config_file = i1.file_uploader("Configuration (JSON or YAML)", type=["json", "yaml", "yml"], key="slsviz.export.in_config")
task_file = i2.file_uploader("Task checkpoint (.safetensors)", type=["safetensors"], key="slsviz.export.in_task")
if config_file is not None and task_file is not None:
    with ui.user_errors():
        imported, same = study.exports.check_import(config_file.getvalue(), task_file.getvalue())
    st.session_state[ui.CHOSEN] = int(imported["depth"])
    (st.success if same else st.warning)(
        f"Restored: depth {imported['depth']} of {imported['num_layers']}, {imported['petl']['method']} - "
        + ("logits identical to this session's pruned model." if same else "logits differ from this session's model."))
