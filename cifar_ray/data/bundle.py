"""The prepared data set: stratified, seeded splits and the training split's mean image."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from cifar_ray.config import DataConfig
from cifar_ray.data.images import SkippedFile
from cifar_ray.data.sources import RawData, default_cache_dir, load_source, resolve_data_path

logger = logging.getLogger(__name__)


@dataclass
class DataBundle:
    """Everything a training run needs. Images are (N, H, W, 3) uint8; labels int64.

    Picklable, so Ray can place it in the object store once for all trials.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean_image: np.ndarray  # (H, W, 3) float32 in [0, 1]: per-pixel mean of x_train only
    class_names: list[str]
    source: str
    kind: str
    image_size: int
    skipped: list[SkippedFile] = field(default_factory=list)
    report_path: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split."""
        counts = {}
        for split, labels in (("train", self.y_train), ("val", self.y_val), ("test", self.y_test)):
            tally = Counter(labels.tolist())
            counts[split] = {name: tally.get(i, 0) for i, name in enumerate(self.class_names)}
        return counts

    def describe(self) -> str:
        return (
            f"{self.source} ({self.kind}): {self.num_classes} classes, {len(self.y_train)} train / "
            f"{len(self.y_val)} val / {len(self.y_test)} test images of {self.image_size}x{self.image_size}"
            + (f", {len(self.skipped)} files skipped (see {self.report_path})" if self.skipped else "")
        )


def prepare_data(config: DataConfig) -> DataBundle:
    """Locate, decode (or read from the cache) and split the data set described by `config`."""
    config.validate()
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    path = resolve_data_path(config.data, cache_dir, config.download)
    raw = load_source(path, config.image_size, cache_dir)
    raw = _check_classes(raw, config.drop_empty_classes)

    # A tree without a test/ folder gets a seeded, stratified test split.
    if raw.test_images is None:
        _require_per_class(raw.train_labels, raw.class_names, 2, "carve a stratified test split")
        x_rest, x_test, y_rest, y_test = train_test_split(
            raw.train_images,
            raw.train_labels,
            test_size=config.test_fraction,
            stratify=raw.train_labels,
            random_state=config.seed,
        )
    else:
        x_rest, y_rest, x_test, y_test = raw.train_images, raw.train_labels, raw.test_images, raw.test_labels

    _require_per_class(y_rest, raw.class_names, 2, "split off a stratified validation set")
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=config.val_fraction, stratify=y_rest, random_state=config.seed
    )
    if config.train_subset is not None and config.train_subset < len(y_train):
        if config.train_subset < len(raw.class_names):
            raise ValueError(
                f"train_subset {config.train_subset} is smaller than the number of classes "
                f"({len(raw.class_names)}); a stratified subset needs at least one image per class"
            )
        x_train, _, y_train, _ = train_test_split(
            x_train, y_train, train_size=config.train_subset, stratify=y_train, random_state=config.seed
        )

    # The mean image comes from the images trained on, never from validation or test.
    mean_image = (x_train.mean(axis=0, dtype=np.float64) / 255.0).astype(np.float32)
    bundle = DataBundle(
        x_train=np.ascontiguousarray(x_train),
        y_train=y_train,
        x_val=np.ascontiguousarray(x_val),
        y_val=y_val,
        x_test=np.ascontiguousarray(x_test),
        y_test=y_test,
        mean_image=mean_image,
        class_names=raw.class_names,
        source=raw.source,
        kind=raw.kind,
        image_size=config.image_size,
        skipped=raw.skipped,
        report_path=raw.report_path,
    )
    logger.info("data: %s", bundle.describe())
    return bundle


def _check_classes(raw: RawData, drop_empty: bool) -> RawData:
    present = set(np.unique(raw.train_labels).tolist())
    if raw.test_labels is not None:
        present &= set(np.unique(raw.test_labels).tolist())
    empty = [name for i, name in enumerate(raw.class_names) if i not in present]
    if not empty:
        return raw
    if not drop_empty:
        raise ValueError(
            f"class folders with no valid image in a split: {empty} (source {raw.source}); add images, "
            "remove the folders, or pass --drop-empty-classes"
            + (f". Skipped files are listed in {raw.report_path}" if raw.report_path else "")
        )

    logger.warning("dropping class folders without valid images: %s", empty)
    keep = [i for i in range(len(raw.class_names)) if i in present]
    remap = np.full(len(raw.class_names), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))

    def select(images: np.ndarray | None, labels: np.ndarray | None):
        if images is None or labels is None:
            return images, labels
        mask = remap[labels] >= 0
        return images[mask], remap[labels[mask]]

    raw.train_images, raw.train_labels = select(raw.train_images, raw.train_labels)
    raw.test_images, raw.test_labels = select(raw.test_images, raw.test_labels)
    raw.class_names = [raw.class_names[i] for i in keep]
    return raw


def _require_per_class(labels: np.ndarray, class_names: list[str], minimum: int, purpose: str) -> None:
    counts = np.bincount(labels, minlength=len(class_names))
    too_few = {class_names[i]: int(c) for i, c in enumerate(counts) if c < minimum}
    if too_few:
        raise ValueError(
            f"classes with fewer than {minimum} images cannot {purpose}: {too_few}; add images to them "
            "or remove those class folders"
        )
