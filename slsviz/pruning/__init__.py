"""Pruning: what cutting the model at a depth costs and gains.

Accuracy at every depth from cached features and after retraining (``accuracy``), measured
throughput, latency, FLOPs and memory (``bench``), and bytes stored per task (``footprint``). The
cut itself is :mod:`slsviz.models.depth` (task checkpoints need it too). May import the shared
modules, ``slsviz.models`` and ``slsviz.layers``; never the orchestrator, the faces, Streamlit or
plotly.
"""
