"""Shared fixtures: the real CIFAR-10 JPEG tree and small trees copied from it.

The real data set is found only through $CIFAR_RAY_DATA, a folder containing
train/<class>/*.jpg and test/<class>/*.jpg. Every test gets its own decoded-image
cache through $CIFAR_RAY_CACHE, so no test reads or writes ~/.cache/cifar_ray.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from cifar_ray.data import CACHE_ENV, DATA_ENV


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point $CIFAR_RAY_CACHE at an empty per-test folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    return cache


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real CIFAR-10 JPEG tree named by $CIFAR_RAY_DATA."""
    value = os.environ.get(DATA_ENV)
    if not value:
        pytest.fail(
            f"${DATA_ENV} is not set; set {DATA_ENV} to the CIFAR-10 JPEG tree "
            "(a folder with train/<class>/*.jpg and test/<class>/*.jpg) and run pytest again"
        )
    path = Path(value).expanduser()
    for part in ("train", "test"):
        if not (path / part).is_dir():
            pytest.fail(
                f"${DATA_ENV}={value}: folder {path / part} is missing; point {DATA_ENV} at the CIFAR-10 "
                "JPEG tree with train/<class>/*.jpg and test/<class>/*.jpg"
            )
    return path


@pytest.fixture(scope="session")
def real_files(real_data_dir: Path) -> Callable[[str, str], list[Path]]:
    """Return a function that lists the sorted JPEG files of one split and class of the real data set."""
    listings: dict[tuple[str, str], list[Path]] = {}

    def list_files(split: str, class_name: str) -> list[Path]:
        key = (split, class_name)
        if key not in listings:
            folder = real_data_dir / split / class_name
            listings[key] = sorted(folder / name for name in os.listdir(folder) if name.endswith(".jpg"))
        return listings[key]

    return list_files


@pytest.fixture(scope="session")
def copy_images(real_files: Callable[[str, str], list[Path]]) -> Callable[..., list[Path]]:
    """Return a function that copies `count` real JPEGs of one split and class into a folder."""

    def copy(split: str, class_name: str, count: int, destination: Path, start: int = 0) -> list[Path]:
        sources = real_files(split, class_name)[start : start + count]
        if len(sources) < count:
            raise ValueError(f"the real data set has only {len(sources)} images from {start} in {split}/{class_name}")
        destination.mkdir(parents=True, exist_ok=True)
        copied = []
        for source in sources:
            target = destination / source.name
            shutil.copyfile(source, target)
            copied.append(target)
        return copied

    return copy


@pytest.fixture(scope="session")
def make_split_tree(copy_images: Callable[..., list[Path]]) -> Callable[..., Path]:
    """Return a function that builds root/train/<class>/ and root/test/<class>/ from real JPEGs."""

    def make(root: Path, classes: Sequence[str], train_per_class: int, test_per_class: int) -> Path:
        for class_name in classes:
            copy_images("train", class_name, train_per_class, root / "train" / class_name)
            copy_images("test", class_name, test_per_class, root / "test" / class_name)
        return root

    return make
