"""Layers: what each block's features say about the task, and the depth SLS keeps.

One-pass per-layer features with a disk cache (``features``), 2-D maps (``projection``: t-SNE as
the paper, UMAP, PCA), clustering scores and the linear probe (``scores``), the SLS rule
(``rule``) and :class:`~slsviz.layers.analysis.LayerAnalysis`, which maps and scores layers on
demand for a lazy top-down scan. May import the shared modules and ``slsviz.models``; never
``pruning``, the orchestrator, the faces, Streamlit or plotly.
"""
