"""Model: what is loaded (the embedded default, with no clicks) and its card; load or train another."""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from slsviz import defaults
from slsviz.app import ui
from slsviz.choices import PETL_METHODS as METHODS
from slsviz.data import BUILTIN_DATASETS
from slsviz.device import describe_device
from slsviz.errors import SlsvizError
from slsviz.models.inspect import inspect_path
from slsviz.storage import keep_upload, keep_upload_folder
from slsviz.study import VISIT, Selection
from slsviz.study.training import train_new_task

st.title("slsviz")
st.caption(
    "Straightforward Layer-wise Pruning (SLS, Han & Tang, ECCV 2024) for parameter-efficient vision "
    "transformers: see how each block clusters the classes, get the recommended depth, measure the pruned model."
)



@st.fragment
def open_your_own() -> None:
    """What a file or folder is (the CLI's `slsviz inspect`), and the fields it leaves open, to load it."""
    path = st.text_input("Path of a task, PEFT adapter folder, fine-tune or transformers folder",
                         key="slsviz.home.own_path").strip()
    uploads = st.file_uploader("...or upload it (a folder: select all of its files)", accept_multiple_files=True,
                               key="slsviz.home.own_upload")
    if uploads:
        files = [(f.name, f.getvalue()) for f in uploads]
        path = str(keep_upload(*files[0]) if len(files) == 1 else keep_upload_folder(files))
    if not path:
        return
    try:
        summary = inspect_path(path)
    except SlsvizError as exc:
        st.error(str(exc))
        return
    shown = {k: v for k, v in summary.items() if k not in ("missing", "needs", "reason", "note", "path")}
    st.dataframe(pd.DataFrame({"what": list(shown), "value": [str(v) for v in shown.values()]}).set_index("what"))
    if summary.get("opens") is False:
        st.error(summary.get("reason") or summary.get("note"))
        return
    needs = summary.get("needs", [])
    if summary.get("missing"):
        st.info("It does not say: " + "; ".join(summary["missing"]) + ". Give them below.")
    with st.form("slsviz.home.own"):
        arch = st.text_input("timm architecture", value="vit_base_patch16_224",
                             key="slsviz.home.own_arch") if "model" in needs else None
        backbone = st.text_input("Backbone checkpoint it adapts (file or transformers folder)",
                                 key="slsviz.home.own_checkpoint") if "checkpoint" in needs else ""
        c1, c2 = st.columns([3, 1]) if "scale" in needs else (None, None)
        task_config = c1.text_input("Official SLS task config (configs/<method>/<dataset>.yaml)",
                                    key="slsviz.home.own_task_config") if c1 else ""
        scale = c2.number_input("...or the scale s", min_value=0.0, value=0.0, key="slsviz.home.own_scale") if c2 else 0.0
        data = st.text_input(f"Dataset ({', '.join(BUILTIN_DATASETS)}, or an image folder or VTAB-1k root)",
                             key="slsviz.home.own_data") if "data" in needs else ""
        if st.form_submit_button("Open it", type="primary"):
            as_backbone = summary.get("opens_as") == "backbone"
            ui.load(Selection(model=arch.strip() if arch else defaults.BACKBONE,
                              checkpoint=path if as_backbone else (backbone.strip() or None),
                              task="none" if as_backbone else path, data=data.strip() or None,
                              task_config=task_config.strip() or None, scale=float(scale) or None))
            st.rerun()


with st.expander("Open your own model (official SLS checkpoint, PEFT LoRA, full fine-tune, transformers folder)"):
    open_your_own()

with st.expander("Load another backbone, task or dataset", expanded=False):
    with st.form("slsviz.home.load"):
        backbone = st.radio("Backbone", ["Embedded default: DINOv2 ViT-S/14", "timm ViT or Swin with a local checkpoint"],
                            key="slsviz.home.backbone", horizontal=True)
        arch = st.text_input("timm model name", value="vit_base_patch16_224", key="slsviz.home.arch",
                             help="a ViT, or a Swin (e.g. swin_tiny_patch4_window7_224: blocks 1..L across its stages)")
        checkpoint = st.text_input("Checkpoint path (.npz, .pth, .safetensors)", key="slsviz.home.checkpoint")
        task = st.text_input("Task checkpoint path (empty: the shipped task with the default backbone; 'none': no task)",
                             key="slsviz.home.task")
        uploaded_ckpt = st.file_uploader("...or upload the backbone checkpoint", key="slsviz.home.upload_backbone",
                                         type=["npz", "pth", "pt", "safetensors"])
        uploaded_task = st.file_uploader("...or upload a task checkpoint (slsviz .safetensors, or the official SLS code's .pt)",
                                         key="slsviz.home.upload_task", type=["safetensors", "pt", "pth"])
        c1, c2 = st.columns([3, 1])
        task_config = c1.text_input("Official SLS task config (configs/<method>/<dataset>.yaml), for an official .pt",
                                    key="slsviz.home.task_config")
        scale = c2.number_input("...or its scale s (0: from the config)", min_value=0.0, value=0.0,
                                key="slsviz.home.scale")
        data = st.selectbox("Dataset", ["the task's own", *BUILTIN_DATASETS, "an image folder or VTAB-1k root"],
                            key="slsviz.home.data")
        folder = st.text_input("Folder path (for an image folder or VTAB-1k root)", key="slsviz.home.folder")
        left, mid, right = st.columns(3)
        img_size = left.number_input("Input size (0: the task's)", min_value=0, max_value=1024, value=0, step=14,
                                     key="slsviz.home.img_size")
        device = mid.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="slsviz.home.device")
        limit = right.number_input("Images per split (0: all)", min_value=0, value=0, step=100, key="slsviz.home.limit")
        if st.form_submit_button("Load", type="primary"):
            default = backbone.startswith("Embedded")
            if uploaded_ckpt is not None:
                checkpoint = str(keep_upload(uploaded_ckpt.name, uploaded_ckpt.getvalue()))
            if uploaded_task is not None:
                task = str(keep_upload(uploaded_task.name, uploaded_task.getvalue()))
            ui.load(Selection(
                model=defaults.BACKBONE if default else arch.strip(),
                checkpoint=None if default else (checkpoint.strip() or None),
                task=task.strip() or None,
                data=None if data == "the task's own" else (folder.strip() if data.startswith("an image") else data),
                img_size=int(img_size) or None,
                device=device,
                limit=int(limit) or None,
                task_config=task_config.strip() or None,
                scale=float(scale) or None,
            ))

    with st.form("slsviz.home.train"):
        st.markdown("**Train a task now** on the loaded backbone and dataset (adapters + head; the paper's recipe).")
        t1, t2, t3 = st.columns(3)
        method = t1.selectbox("PETL method", METHODS, key="slsviz.home.train_method")
        epochs = t2.number_input("Epochs", 1, 100, 5, key="slsviz.home.train_epochs")
        train_limit = t3.number_input("Images per split (0: all)", 0, value=200, step=100, key="slsviz.home.train_limit")
        if st.form_submit_button("Train"):
            source = ui.current_study()
            bar = st.progress(0.0, text="Training")
            with ui.user_errors():
                path, meta = train_new_task(source.loaded, method, int(epochs), limit=int(train_limit) or None,
                                            progress=lambda e, n, info: bar.progress(
                                                e / n, text=f"epoch {e}/{n}: val {info['val_accuracy']:.3f}"))
            ui.load(dataclasses.replace(ui.selection(), task=str(path)))
            st.success(f"Trained: val {100 * meta.val_accuracy:.2f}%, test {100 * meta.test_accuracy:.2f}%; saved to {path}.")

study = ui.current_study()
ui.prefetch(study, *VISIT)  # while the user reads this page
card = study.model_card()
device = study.loaded.backbone.device
st.info(f"Computing on **{describe_device(device)}**" + (" (GPU)" if device.type == "cuda" else ""))

cols = st.columns(5)
cols[0].metric("Blocks", card["depth"])
cols[1].metric("Parameters", f"{card['params'] / 1e6:.1f} M")
cols[2].metric("Trainable (every weight)" if card["method"] == "full" else "Trainable (adapters + head)",
               f"{card['trainable_params'] / 1e3:.1f} k")
cols[3].metric("Val accuracy", "-" if card["val_accuracy"] is None else f"{100 * card['val_accuracy']:.2f}%")
cols[4].metric("Test accuracy", "-" if card["test_accuracy"] is None else f"{100 * card['test_accuracy']:.2f}%")
st.markdown(
    f"**Backbone** `{card['arch']}` ({card['source']}, weights `{card['weights']}`), input {card['img_size']} px"
    + (f"; stages begin at blocks {', '.join(map(str, [1, *study.stage_starts]))}" if study.stage_starts else "")
    + ".  \n"
    f"**PETL method** {card['method']}"
    + (f", opened from a {card['task_source']['format']} (`{card['task_source']['path']}`)" if card["task_source"] else "")
    + ".  \n"
    f"**Dataset** {card['dataset']}: {card['num_classes']} classes, "
    + ", ".join(f"{k} {v}" for k, v in card["splits"].items())
    + (f" (first {card['limit']} images per split used)" if card["limit"] else "") + "."
)
applies, note = study.loaded.head_applies, study.loaded.head_note
if note:
    (st.info if applies else st.warning)(f"As-is accuracy: {note}")
if card["petl"]:
    narrow, _ = st.columns([1, 2])
    narrow.caption(f"{card['method']} hyperparameters")
    narrow.table(pd.DataFrame({"setting": list(card["petl"]), "value": [str(v) for v in card["petl"].values()]})
                 .set_index("setting"))
st.page_link("pages/1_Layers.py", label="Next: see every layer's clustering and the SLS recommendation", icon="➡️")
