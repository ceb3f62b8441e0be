"""Data preparation on small trees of real CIFAR-10 JPEGs: messy folders, the cache, splits, errors, augmentation."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from cifar_ray.config import DataConfig
from cifar_ray.data import DataNotFoundError, decode_image, prepare_data, random_crop_flip

CLASSES = ["airplane", "automobile", "bird"]


def prepare(tree: Path, **overrides) -> object:
    """Prepare `tree` with downloads off, so that a failing test never reaches the network."""
    return prepare_data(DataConfig(data=str(tree), download=False, **overrides))


def contains_image(images: np.ndarray, image: np.ndarray) -> bool:
    return bool((images == image).all(axis=(1, 2, 3)).any())


def test_messy_folder(tmp_path, make_split_tree, real_files):
    tree = make_split_tree(tmp_path / "tree", CLASSES, train_per_class=30, test_per_class=10)
    airplane, automobile, bird = (tree / "train" / name for name in CLASSES)
    source = real_files("train", "cat")

    # Four files that cannot be used.
    zero_byte = airplane / "empty.jpg"
    zero_byte.write_bytes(b"")
    truncated = automobile / "truncated.jpg"
    full = source[0].read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    ds_store = bird / ".DS_Store"
    ds_store.write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    notes = tree / "test" / "bird" / "notes.txt"
    notes.write_text("photos from the second camera\n")

    # Three usable images in colour modes other than RGB.
    cmyk = airplane / "cmyk.jpg"
    Image.open(source[1]).convert("CMYK").save(cmyk, "JPEG")
    grayscale = automobile / "grayscale.png"
    Image.open(source[2]).convert("L").save(grayscale)
    rgba = bird / "rgba.png"
    with Image.open(source[3]) as image:
        with_alpha = image.convert("RGBA")
        with_alpha.putalpha(128)
        with_alpha.save(rgba)

    bundle = prepare(tree)

    expected = {
        zero_byte: "empty file",
        truncated: "truncated or corrupt",
        ds_store: "not an image file",
        notes: "not an image file",
    }
    skipped = {Path(item.path): item.reason for item in bundle.skipped}
    assert set(skipped) == set(expected)
    for path, reason in expected.items():
        assert reason in skipped[path], f"{path.name}: reason {skipped[path]!r}"

    assert bundle.report_path is not None
    report = json.loads(Path(bundle.report_path).read_text())
    reported = {Path(record["path"]): record["reason"] for record in report}
    assert reported == skipped

    assert len(bundle.y_train) + len(bundle.y_val) == 3 * 30 + 3
    assert len(bundle.y_test) == 3 * 10
    assert bundle.x_train.shape[1:] == (32, 32, 3)
    train_and_val = np.concatenate([bundle.x_train, bundle.x_val])
    for path in (cmyk, grayscale, rgba):
        assert contains_image(train_and_val, decode_image(str(path), 32)), f"{path.name} is missing from the bundle"

    gray = decode_image(str(grayscale), 32)
    assert np.array_equal(gray[..., 0], gray[..., 1])
    assert np.array_equal(gray[..., 0], gray[..., 2])


def test_cache_second_call(tmp_path, make_split_tree, caplog):
    tree = make_split_tree(tmp_path / "tree", CLASSES, train_per_class=20, test_per_class=5)
    first = prepare(tree)

    with caplog.at_level(logging.INFO, logger="cifar_ray.data"):
        second = prepare(tree)

    assert "from the cache" in caplog.text
    assert "decoding" not in caplog.text
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean_image"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), f"{name} differs after reading the cache"


def test_cache_new_mtime(tmp_path, make_split_tree, caplog):
    tree = make_split_tree(tmp_path / "tree", CLASSES, train_per_class=20, test_per_class=5)
    prepare(tree)
    touched = next((tree / "train" / "bird").iterdir())
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    with caplog.at_level(logging.INFO, logger="cifar_ray.data"):
        prepare(tree)

    assert "decoding" in caplog.text
    assert "from the cache" not in caplog.text


def test_cache_added_file(tmp_path, make_split_tree, copy_images, caplog):
    tree = make_split_tree(tmp_path / "tree", CLASSES, train_per_class=20, test_per_class=5)
    before = prepare(tree)
    copy_images("train", "bird", 1, tree / "train" / "bird", start=20)

    with caplog.at_level(logging.INFO, logger="cifar_ray.data"):
        after = prepare(tree)

    assert "decoding" in caplog.text
    assert len(after.y_train) + len(after.y_val) == len(before.y_train) + len(before.y_val) + 1


def test_split_seeded_stratified(tmp_path, make_split_tree):
    tree = make_split_tree(tmp_path / "tree", CLASSES, train_per_class=40, test_per_class=5)

    first = prepare(tree, seed=1)
    same = prepare(tree, seed=1)
    other = prepare(tree, seed=2)

    assert np.array_equal(first.x_val, same.x_val), "same seed gave a different validation split"
    assert not np.array_equal(first.x_val, other.x_val), "different seeds gave the same validation split"
    counts = first.class_counts()
    assert counts["val"] == {name: 4 for name in CLASSES}, "validation is not 10% of each class"
    assert counts["train"] == {name: 36 for name in CLASSES}
    assert counts["test"] == {name: 5 for name in CLASSES}
    expected_mean = first.x_train.astype(np.float64).mean(axis=0) / 255.0
    np.testing.assert_allclose(first.mean_image, expected_mean, atol=1e-6)


def test_train_subset_stratified(tmp_path, make_split_tree):
    tree = make_split_tree(tmp_path / "tree", CLASSES, train_per_class=40, test_per_class=5)

    bundle = prepare(tree, train_subset=30)

    counts = bundle.class_counts()
    assert counts["train"] == {name: 10 for name in CLASSES}
    assert counts["val"] == {name: 4 for name in CLASSES}, "train_subset changed the validation split"
    assert len(bundle.y_test) == 15, "train_subset changed the test split"


def test_class_tree_carved_test(tmp_path, copy_images):
    tree = tmp_path / "tree"
    for name in CLASSES:
        copy_images("train", name, 20, tree / name)

    bundle = prepare(tree)

    assert bundle.kind == "class-tree"
    assert bundle.class_names == CLASSES
    counts = bundle.class_counts()
    assert counts["test"] == {name: 4 for name in CLASSES}, "test split is not 20% of each class"
    assert sum(counts["val"].values()) + sum(counts["train"].values()) == 3 * 16


@pytest.fixture
def tree_with_bad_class(tmp_path, make_split_tree, copy_images) -> Path:
    """A split tree whose train/bird contains only unusable files."""
    tree = make_split_tree(tmp_path / "tree", CLASSES[:2], train_per_class=20, test_per_class=5)
    bird = tree / "train" / "bird"
    bird.mkdir()
    (bird / "empty.jpg").write_bytes(b"")
    (bird / "notes.txt").write_text("to sort\n")
    copy_images("test", "bird", 5, tree / "test" / "bird")
    return tree


def test_class_without_images(tree_with_bad_class):
    with pytest.raises(ValueError, match="bird"):
        prepare(tree_with_bad_class)


def test_class_without_images_dropped(tree_with_bad_class):
    bundle = prepare(tree_with_bad_class, drop_empty_classes=True)

    assert bundle.class_names == CLASSES[:2]
    assert len(bundle.y_test) == 2 * 5, "the dropped class's test images were kept"
    assert set(np.unique(bundle.y_test).tolist()) == {0, 1}
    assert set(np.unique(bundle.y_train).tolist()) == {0, 1}


def test_other_sizes_resized(tmp_path, make_split_tree, real_files):
    tree = make_split_tree(tmp_path / "tree", CLASSES, train_per_class=10, test_per_class=3)
    for index, size in enumerate([(48, 40), (20, 20), (100, 64)]):
        with Image.open(real_files("train", "dog")[index]) as image:
            image.resize(size).save(tree / "train" / CLASSES[index] / f"resized_{index}.png")

    bundle = prepare(tree, image_size=24)

    assert bundle.skipped == []
    assert bundle.image_size == 24
    for name in ("x_train", "x_val", "x_test"):
        assert getattr(bundle, name).shape[1:] == (24, 24, 3), f"{name} has the wrong image shape"
    assert bundle.mean_image.shape == (24, 24, 3)
    assert len(bundle.y_train) + len(bundle.y_val) == 3 * 10 + 3


@pytest.mark.parametrize("layout", ["split-tree", "class-tree"])
def test_single_image_class(tmp_path, copy_images, layout):
    tree = tmp_path / "tree"
    train_root = tree / "train" if layout == "split-tree" else tree
    for name in CLASSES[:2]:
        copy_images("train", name, 10, train_root / name)
    copy_images("train", "bird", 1, train_root / "bird")
    if layout == "split-tree":
        for name in CLASSES:
            copy_images("test", name, 3, tree / "test" / name)

    with pytest.raises(ValueError, match="bird"):
        prepare(tree)


def test_missing_data_path(tmp_path):
    missing = tmp_path / "no-such-folder"

    with pytest.raises(DataNotFoundError, match=str(missing)):
        prepare(missing)


def test_no_data_anywhere(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR_RAY_DATA", raising=False)
    cache = tmp_path / "empty-cache"
    cache.mkdir()

    with pytest.raises(DataNotFoundError) as raised:
        prepare_data(DataConfig(data=None, cache_dir=str(cache), download=False))

    message = str(raised.value)
    for expected in ("--data", "CIFAR_RAY_DATA", str(cache), "CIFAR_RAY_CACHE", "downloading is turned off"):
        assert expected in message, f"{expected!r} missing from: {message}"


def truncated_gzip_archive() -> bytes:
    """A CIFAR-10-shaped .tar.gz cut in half: random bytes do not compress, so half the file is half the data."""
    payload = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    archive = buffer.getvalue()
    return archive[: len(archive) // 2]


@pytest.mark.parametrize("content", ["random-bytes", "truncated-gzip", "gzip-not-tar"])
@pytest.mark.parametrize("given", ["archive", "folder"])
def test_corrupt_archive(tmp_path, content, given):
    folder = tmp_path / "download"
    folder.mkdir()
    archive = folder / "cifar-10-python.tar.gz"
    if content == "random-bytes":
        archive.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif content == "truncated-gzip":
        archive.write_bytes(truncated_gzip_archive())
    else:
        archive.write_bytes(gzip.compress(b"not a tar file" * 100))

    with pytest.raises(ValueError, match=str(archive)):
        prepare(archive if given == "archive" else folder)

    assert not any((tmp_path / "cache").glob("extracted/*.partial")), "a partial extraction was left in the cache"


def test_crop_flip_shape_dtype():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)

    out = random_crop_flip(images, torch.Generator().manual_seed(0))

    assert out.shape == images.shape
    assert out.dtype == torch.uint8


def test_crop_flip_seeded():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)

    first = random_crop_flip(images, torch.Generator().manual_seed(3))
    same = random_crop_flip(images, torch.Generator().manual_seed(3))
    other = random_crop_flip(images, torch.Generator().manual_seed(4))

    assert torch.equal(first, same)
    assert not torch.equal(first, other)


def test_crop_flip_is_padded_slice():
    padding = 4
    images = torch.randint(1, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    padded = F.pad(images, (padding,) * 4)

    out = random_crop_flip(images, torch.Generator().manual_seed(1), padding=padding)

    shifted = flipped = 0
    for index in range(len(images)):
        matches = [
            (row, column, flip)
            for row in range(2 * padding + 1)
            for column in range(2 * padding + 1)
            for flip in (False, True)
            if torch.equal(
                out[index],
                padded[index, :, row : row + 16, column : column + 16].flip(-1)
                if flip
                else padded[index, :, row : row + 16, column : column + 16],
            )
        ]
        assert matches, f"image {index} is not a (flipped) 16x16 slice of its padded image"
        row, column, flip = matches[0]
        shifted += (row, column) != (padding, padding)
        flipped += flip
    assert shifted > 0, "no image was shifted"
    assert flipped > 0, "no image was flipped"
    assert flipped < len(images), "every image was flipped"
