"""The names a user chooses from (CLI ``choices``, the app's select boxes), without the code behind them.

Kept apart from the wings so that parsing a command line never imports torch or scikit-learn: a typo
is answered at once.
"""

from __future__ import annotations

# Token taken from each block: CLS before the final norm (the paper's), mean of patches, CLS after it.
TOKENS = ("cls", "mean", "cls_norm")
# 2-D maps of a block's features.
PROJECTIONS = ("umap", "tsne", "pca")
# Where a score is computed: on the 2-D map or on the raw features.
SPACES = ("2d", "raw")
# Score name -> whether a higher value means better-separated classes.
METRICS = {"silhouette": True, "calinski_harabasz": True, "davies_bouldin": False, "probe_accuracy": True}
# Dataset splits a task is evaluated on.
SPLITS = ("train", "val", "test")
PETL_METHODS = ("convpass", "repadapter", "lora", "adaptformer", "linear", "full")
# Formats of the user's own tools the pruned model is exported to (each is slsviz.export.to_<name>), in
# the order a user is offered them.
EXPORT_FORMATS = ("timm", "transformers", "peft", "official")
# Precisions a timing runs in (bf16: autocast, where the device computes it natively).
PRECISIONS = ("fp32", "bf16")
