"""slsviz home page: what is loaded (the embedded default needs no clicks)."""

from __future__ import annotations

import streamlit as st

from slsviz.backbones import load_backbone
from slsviz.data import DEFAULT_DATASET, load_dataset
from slsviz.device import describe_device, resolve_device
from slsviz.errors import SlsvizError

st.set_page_config(page_title="slsviz", layout="wide")


@st.cache_resource(show_spinner="Loading the default backbone (converted once, then cached)...")
def cached_backbone(device: str):
    """Shared across sessions and never mutated: pruning always works on a copy."""
    return load_backbone("default", device=device)


@st.cache_data(show_spinner="Loading the dataset...")
def dataset_summary(spec: str) -> dict:
    return load_dataset(spec).describe()


st.title("slsviz")
st.caption(
    "Straightforward Layer-wise Pruning (SLS, Han & Tang, ECCV 2024) for parameter-efficient "
    "vision transformers: see how each layer clusters the classes, pick a depth, measure the result."
)

try:
    device = resolve_device("auto")
    backbone = cached_backbone(str(device))
    data = dataset_summary(DEFAULT_DATASET)
except SlsvizError as exc:
    st.error(str(exc))
    st.stop()

st.info(f"Computing on **{describe_device(device)}**.")
left, right = st.columns(2)
with left:
    st.subheader("Backbone")
    info = backbone.describe()
    st.metric("Blocks", info["num_layers"])
    st.metric("Parameters", f"{info['num_params'] / 1e6:.1f} M")
    st.write(f"`{info['arch']}` from {info['source']}, input {info['img_size']} px, weights `{info['checksum']}`.")
with right:
    st.subheader("Dataset")
    st.metric("Images", data["num_images"])
    st.metric("Classes", data["num_classes"])
    st.write(
        f"**{data['dataset']}**: " + ", ".join(f"{k} {v}" for k, v in data["splits"].items())
        + f" (split seed {data['split_info'].get('seed')})."
    )
