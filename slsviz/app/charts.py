"""Plotly figures of the analysis: plain functions from numbers to figures, no Streamlit."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from slsviz.choices import METRICS

_COLOURS = px.colors.qualitative.Plotly + px.colors.qualitative.Dark24
_TITLES = {"silhouette": "Silhouette", "calinski_harabasz": "Calinski-Harabasz", "davies_bouldin": "Davies-Bouldin (lower is better)",
           "probe_accuracy": "Linear-probe accuracy"}


def _colour(label: int) -> str:
    return _COLOURS[int(label) % len(_COLOURS)]


def layer_grid(maps: dict[int, np.ndarray], labels: np.ndarray, class_names: list[str], *,
               recommended: int | None = None, columns: int = 4, stage_starts: Sequence[int] = ()) -> go.Figure:
    """Small multiples: every layer's 2-D map coloured by class; the recommended depth and the first block
    of each stage (a Swin's ``stage_starts``) are marked."""
    layers = sorted(maps)
    rows = math.ceil(len(layers) / columns)
    stage = {start: n for n, start in enumerate(stage_starts, start=2)}
    titles = [f"block {layer}" + (f" - stage {stage[layer]}" if layer in stage else "")
              + (" (SLS depth)" if layer == recommended else "") for layer in layers]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.02, vertical_spacing=0.06)
    for i, layer in enumerate(layers):
        points = maps[layer]
        for label in np.unique(labels):
            mask = labels == label
            fig.add_trace(go.Scattergl(x=points[mask, 0], y=points[mask, 1], mode="markers",
                                       marker={"size": 3, "color": _colour(label)}, name=class_names[label],
                                       legendgroup=str(label), showlegend=i == 0, hoverinfo="skip"),
                          row=i // columns + 1, col=i % columns + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_layout(height=220 * rows + 60, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend_title_text="class")
    return fig


def layer_map(points: np.ndarray, labels: np.ndarray, class_names: list[str], indices: np.ndarray, layer: int) -> go.Figure:
    """One layer's map, large, with the class and dataset index of each point on hover."""
    frame = pd.DataFrame({"x": points[:, 0], "y": points[:, 1], "class": [class_names[i] for i in labels],
                          "index": indices})
    fig = px.scatter(frame, x="x", y="y", color="class", hover_data={"index": True, "class": True, "x": False, "y": False},
                     color_discrete_sequence=_COLOURS, title=f"Block {layer}", render_mode="webgl")
    fig.update_traces(marker={"size": 5})
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 40, "b": 10}, xaxis_title=None, yaxis_title=None,
                      dragmode="select")  # dragging picks points (their images show below); zoom is in the toolbar
    return fig


def _stage_lines(fig: go.Figure, stage_starts: Sequence[int], **where) -> None:
    """A grey line before the first block of each stage after the first (a Swin's), named on top."""
    for n, start in enumerate(stage_starts, start=2):
        fig.add_vline(x=start - 0.5, line_color="lightgrey", annotation_text=f"stage {n}",
                      annotation_position="top left", **where)


def score_curves(table: pd.DataFrame, *, metric: str, threshold: float, depth: int,
                 band: tuple[np.ndarray, np.ndarray] | None = None, stage_starts: Sequence[int] = ()) -> go.Figure:
    """Every score against depth; the rule's metric carries the threshold line (and ``band``, its
    per-block interval over bootstrap resamples), all the chosen depth and a grey line before the first
    block of each stage (a Swin's ``stage_starts``)."""
    names = [name for name in METRICS if name in table]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[_TITLES[n] + (" - SLS" if n == metric else "") for n in names])
    for col, name in enumerate(names, start=1):
        if band is not None and name == metric:
            fig.add_trace(go.Scatter(x=np.concatenate([table["layer"], table["layer"][::-1]]),
                                     y=np.concatenate([band[1], band[0][::-1]]), fill="toself", mode="lines",
                                     line={"width": 0}, fillcolor="rgba(99, 110, 250, 0.2)", hoverinfo="skip",
                                     showlegend=False), row=1, col=col)
        fig.add_trace(go.Scatter(x=table["layer"], y=table[name], mode="lines+markers", name=_TITLES[name],
                                 showlegend=False), row=1, col=col)
        fig.add_vline(x=depth, line_dash="dot", line_color="green", row=1, col=col)
        _stage_lines(fig, stage_starts, row=1, col=col)
        if name == metric:
            fig.add_hline(y=threshold, line_dash="dash", line_color="red", row=1, col=col,
                          annotation_text=f"T = {threshold:.3g}", annotation_position="bottom right")
    fig.update_xaxes(title_text="block", dtick=1)
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def accuracy_vs_throughput(frame: pd.DataFrame, *, chosen: int, baseline: dict | None = None,
                           stages: Sequence[int] | None = None) -> go.Figure:
    """Accuracy (as-is and re-fit head) against measured images/s for every depth; ``chosen`` highlighted.

    ``frame`` has columns ``depth``, ``images_per_s``, ``accuracy_as_is``, ``accuracy_head_refit``;
    ``baseline`` (the DepGraph row of :mod:`slsviz.study.comparison`) adds its point, re-fit head;
    ``stages`` (a Swin's stage of each block) labels each depth with the stage it cuts in (``7 s3``).
    """
    fig = go.Figure()
    labels = frame["depth"].astype(str)
    if stages is not None:
        labels = [f"{d} s{stages[d - 1]}" for d in frame["depth"]]
    for column, name in (("accuracy_as_is", "as is (task head)"), ("accuracy_head_refit", "head re-fit")):
        fig.add_trace(go.Scatter(x=frame["images_per_s"], y=100 * frame[column], mode="lines+markers+text",
                                 text=labels, textposition="top center", name=name))
    row = frame[frame["depth"] == chosen]
    if len(row):
        fig.add_trace(go.Scatter(x=row["images_per_s"], y=100 * row["accuracy_head_refit"], mode="markers",
                                 marker={"size": 18, "symbol": "circle-open", "color": "red", "line": {"width": 3}},
                                 name=f"depth {chosen}"))
    if baseline is not None:
        fig.add_trace(go.Scatter(x=[baseline["images_per_s"]], y=[100 * baseline["accuracy_head_refit"]], mode="markers",
                                 marker={"size": 14, "symbol": "x", "color": "black"}, name=baseline["label"]))
    fig.update_layout(xaxis_title="measured images/s (batch 1)", yaxis_title="test accuracy (%)", height=420,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


def criteria_curves(scores: pd.DataFrame, rows: list[dict], stage_starts: Sequence[int] = ()) -> go.Figure:
    """Every criterion's scores on one scale, each pick marked.

    Each curve is min-max normalised over blocks, flipped where lower is better (Davies-Bouldin,
    angular distance) so that up means closer to the end by that criterion; Block Influence is drawn
    as it is (how much each block turns its input). ``scores``: one column per criterion, indexed by
    block; ``rows``: :attr:`slsviz.study.comparison.Comparison.rows`; ``stage_starts``: a Swin's, lined.
    """
    fig = go.Figure()
    for i, row in enumerate(rows):
        y = scores[row["name"]].to_numpy(dtype=float)
        low, high = np.nanmin(y), np.nanmax(y)
        y = (y - low) / (high - low) if high > low else np.ones_like(y)
        if row["higher_is_better"] is False:
            y = 1 - y
        colour = _COLOURS[i % len(_COLOURS)]
        dash = "dash" if row["name"] == "oracle" else "solid"
        fig.add_trace(go.Scatter(x=scores.index, y=y, mode="lines", name=row["label"], legendgroup=row["name"],
                                 line={"color": colour, "dash": dash, "width": 3 if row["name"] in ("sls", "oracle") else 1.5}))
        d = row["depth"]
        fig.add_trace(go.Scatter(x=[d], y=[y[d - 1]], mode="markers", legendgroup=row["name"], showlegend=False,
                                 marker={"color": colour, "size": 12, "symbol": "diamond", "line": {"width": 1, "color": "black"}},
                                 hovertext=f"{row['label']}: depth {d}", hoverinfo="text"))
    _stage_lines(fig, stage_starts)
    fig.update_layout(xaxis_title="block", yaxis_title="score, normalised over blocks", height=460,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend={"font": {"size": 11}})
    fig.update_xaxes(dtick=1)
    return fig


def cka_heatmap(cka: np.ndarray, stage_starts: Sequence[int] = ()) -> go.Figure:
    """Linear CKA between every pair of blocks (a Swin's stages lined)."""
    blocks = list(range(1, len(cka) + 1))
    fig = go.Figure(go.Heatmap(z=cka, x=blocks, y=blocks, zmin=0, zmax=1, colorscale="Viridis",
                               hovertemplate="blocks %{x} and %{y}: CKA %{z:.3f}<extra></extra>"))
    _stage_lines(fig, stage_starts)
    for start in stage_starts:
        fig.add_hline(y=start - 0.5, line_color="lightgrey")
    fig.update_layout(xaxis_title="block", yaxis_title="block", height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      yaxis={"autorange": "reversed", "dtick": 1}, xaxis={"dtick": 1})
    return fig


def storage_growth(frame: pd.DataFrame) -> go.Figure:
    """Bytes stored against the number of tasks, one line per scheme (``frame``: columns ``tasks``,
    ``scheme``, ``bytes``; :meth:`slsviz.sweep.results.SweepResults.storage_growth`)."""
    fig = go.Figure()
    for i, (scheme, rows) in enumerate(frame.groupby("scheme", sort=False)):
        fig.add_trace(go.Scatter(x=rows["tasks"], y=rows["bytes"] / 2**20, mode="lines+markers", name=scheme,
                                 line={"color": _COLOURS[i % len(_COLOURS)]}))
    fig.update_layout(xaxis_title="tasks stored", yaxis_title="storage (MiB)", height=420, hovermode="x unified",
                      xaxis={"dtick": 1}, legend={"orientation": "h", "y": -0.25},
                      margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


def leaderboard_scatter(outcomes: pd.DataFrame, board: pd.DataFrame, labels: dict[str, str]) -> go.Figure:
    """Test accuracy lost (head re-fit) against FLOPs saved: one marker per criterion and setting (the
    mean over tasks, ``board``: :func:`slsviz.sweep.leaderboard.leaderboard`), each task's point faint
    behind it (``outcomes``)."""
    fig = go.Figure()
    for i, row in enumerate(board.itertuples(index=False)):
        colour = _COLOURS[i % len(_COLOURS)]
        name = labels.get(row.criterion, row.criterion) + (" (calibrated)" if row.kind != "fixed" else f" @ {row.setting:g}")
        mine = outcomes[(outcomes["criterion"] == row.criterion) & (outcomes["kind"] == row.kind)
                        & (outcomes["setting"].isna() if pd.isna(row.setting) else np.isclose(outcomes["setting"], row.setting))]
        fig.add_trace(go.Scatter(x=100 * mine["flops_saved"], y=100 * mine["accuracy_lost_head_refit"], mode="markers",
                                 marker={"color": colour, "size": 6, "opacity": 0.25}, legendgroup=name, showlegend=False,
                                 text=mine["task"], hovertemplate="%{text}: %{x:.0f}% FLOPs saved, %{y:.1f} points lost"))
        fig.add_trace(go.Scatter(x=[100 * row.flops_saved], y=[100 * row.accuracy_lost_head_refit], mode="markers",
                                 marker={"color": colour, "size": 13, "symbol": "diamond" if row.kind != "fixed" else "circle",
                                         "line": {"width": 1, "color": "black"}}, name=name, legendgroup=name,
                                 hovertemplate=name + ": %{x:.0f}% FLOPs saved, %{y:.1f} points lost (mean)"))
    fig.update_layout(xaxis_title="FLOPs saved (%)", yaxis_title="test accuracy lost, head re-fit (points)", height=480,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend={"font": {"size": 10}})
    return fig
