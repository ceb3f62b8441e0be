"""Helpers for tests that read the real CIFAR-10 JPEG tree named by $CIFAR_RAY_DATA.

The tests decode only the few hundred or thousand files they need, so they
never wait for (or write) the full data set's decoded cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_ray.data import DataBundle, decode_image
from cifar_ray.data.sources import DATA_ENV

# EXIF tag number of Orientation; value 6 means "rotate 90 degrees clockwise to display".
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run a test module's torch work on one intra-op thread, then restore the setting.

    The tests' batches are tiny. On a CPU whose cores are busy with other work,
    torch's threads then mostly wait for each other: a 2-conv CNN trained at
    about 2,000 images/s with one thread and 200 with two on a loaded 2-core machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def data_root() -> Path:
    """Return the class-folder tree with train/ and test/ named by $CIFAR_RAY_DATA, or fail the test."""
    value = os.environ.get(DATA_ENV)
    if not value:
        pytest.fail(
            f"${DATA_ENV} is not set; these tests need the CIFAR-10 JPEG tree (train/<class>/*.jpg and "
            f"test/<class>/*.jpg), e.g. {DATA_ENV}=/path/to/cifar10-jpeg pytest tests"
        )
    root = Path(value)
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        pytest.fail(f"${DATA_ENV}={root} has no train/ and test/ class folders; point it at the CIFAR-10 JPEG tree")
    return root


def class_names(root: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(root / "train") if entry.is_dir())


def real_files(split: str, per_class: int, offset: int = 0) -> tuple[list[Path], np.ndarray]:
    """Return `per_class` files of every class in one split (sorted, from `offset` on), interleaved by class, and their labels."""
    root = data_root()
    names = class_names(root)
    per_class_files = []
    for name in names:
        files = sorted((root / split / name).iterdir())[offset : offset + per_class]
        if len(files) < per_class:
            pytest.fail(f"{root / split / name} has fewer than {offset + per_class} files")
        per_class_files.append(files)
    paths = [per_class_files[c][i] for i in range(per_class) for c in range(len(names))]
    labels = np.asarray([c for _ in range(per_class) for c in range(len(names))], dtype=np.int64)
    return paths, labels


def decode_files(paths: list[Path], image_size: int = 32) -> np.ndarray:
    return np.stack([decode_image(str(path), image_size) for path in paths])


def small_bundle(train_per_class: int, val_per_class: int, test_per_class: int, image_size: int = 32) -> DataBundle:
    """A DataBundle of real images: train and validation from the train split, test from the test split."""
    train_paths, y_train = real_files("train", train_per_class)
    val_paths, y_val = real_files("train", val_per_class, offset=train_per_class)
    test_paths, y_test = real_files("test", test_per_class)
    x_train = decode_files(train_paths, image_size)
    root = data_root()
    return DataBundle(
        x_train=x_train,
        y_train=y_train,
        x_val=decode_files(val_paths, image_size),
        y_val=y_val,
        x_test=decode_files(test_paths, image_size),
        y_test=y_test,
        mean_image=(x_train.astype(np.float64).mean(axis=0) / 255.0).astype(np.float32),
        class_names=class_names(root),
        source=str(root),
        kind="split-tree",
        image_size=image_size,
    )


def write_messy_copy(source: Path, folder: Path, index: int) -> tuple[Path, str]:
    """Write one real image in one of eight messy forms, chosen by `index`; return its path and the form.

    The forms are what phone and web uploads look like. They are a plain copy,
    an upscaled JPEG (400x300, one in ten at 1200x900), grayscale, RGBA PNG and
    WebP. The others are a rotated image with an EXIF Orientation tag that
    restores it, an upper-case extension and a BMP. Half of them sit in a
    nested subfolder.
    The rotated image is a PNG, so that its restored pixels equal the
    original's exactly.
    """
    image = Image.open(source).convert("RGB")
    target_folder = folder / "nested" / f"part{index % 3}" if index % 2 else folder
    target_folder.mkdir(parents=True, exist_ok=True)
    stem = f"{index:03d}_{source.parent.name}"
    form = ["copy", "upscaled", "grayscale", "rgba_png", "webp", "exif_rotated", "upper_case", "bmp"][index % 8]

    if form == "copy":
        path = target_folder / f"{stem}.jpg"
        path.write_bytes(source.read_bytes())
    elif form == "upscaled":
        size = (1200, 900) if index % 10 == 1 else (400, 300)
        path = target_folder / f"{stem}.jpeg"
        image.resize(size, Image.Resampling.BICUBIC).save(path, "JPEG", quality=92)
    elif form == "grayscale":
        path = target_folder / f"{stem}.jpg"
        image.convert("L").save(path, "JPEG", quality=95)
    elif form == "rgba_png":
        path = target_folder / f"{stem}.png"
        rgba = image.copy()
        rgba.putalpha(Image.linear_gradient("L").resize(image.size))
        rgba.save(path, "PNG")
    elif form == "webp":
        path = target_folder / f"{stem}.webp"
        image.save(path, "WEBP", quality=90)
    elif form == "exif_rotated":
        path = target_folder / f"{stem}.png"
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6
        # Stored turned 90 degrees counter-clockwise, and Orientation 6 makes viewers turn it back.
        image.transpose(Image.Transpose.ROTATE_90).save(path, "PNG", exif=exif)
    elif form == "upper_case":
        path = target_folder / f"{stem}.JPG"
        path.write_bytes(source.read_bytes())
    else:
        path = target_folder / f"{stem}.BMP"
        image.save(path, "BMP")
    return path, form
