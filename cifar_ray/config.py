"""Typed configuration: one dataclass per concern, saved beside every result and in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataConfig:
    """Data source, image size and split settings."""

    data: str | None = None  # folder or archive; None: $CIFAR_RAY_DATA, then the cache folder
    image_size: int = 32  # pixels per side after resizing
    val_fraction: float = 0.1  # share of the training images held out for validation
    test_fraction: float = 0.2  # share carved out as test set from a tree that has no test/ folder
    train_subset: int | None = None  # train on this many images (stratified draw); val and test stay whole
    seed: int = 0  # seeds the validation split, the subset and the carved test split
    drop_empty_classes: bool = False  # drop class folders without a valid image instead of failing
    cache_dir: str | None = None  # decoded-image cache; None: $CIFAR_RAY_CACHE or ~/.cache/cifar_ray
    download: bool = True  # fetch the CIFAR-10 Python release with torchvision when no data is found

    def validate(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {self.test_fraction}")
        if self.train_subset is not None and self.train_subset < 2:
            raise ValueError(f"train_subset must be at least 2 images, got {self.train_subset}")


@dataclass
class TrainConfig:
    """Training settings of one model. Defaults follow the study's Keras setup."""

    model: str = "cnn2"  # registered architecture name, see `cifar-ray models`
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # overrides of the architecture's dimensions
    epochs: int = 20  # maximum epochs; early stopping may end sooner
    batch_size: int = 32  # images per optimiser step (Keras' default, which the study kept)
    eval_batch_size: int = 1024  # images per forward pass during evaluation
    optimizer: str = "nadam"  # "nadam" or "sgd"
    lr: float | None = None  # initial learning rate; None: 1e-3 for nadam, 0.1 for sgd
    momentum: float = 0.9  # sgd only
    weight_decay: float | None = None  # sgd only, coupled as in torch.optim.SGD; None: 1e-4
    lr_decay_rate: float | None = None  # exponential decay factor; None: 0.95 for nadam, 1.0 (none) for sgd
    lr_decay_steps: int = 500  # optimiser steps per decay factor, applied continuously
    early_stopping: bool = True  # stop when val_accuracy has not improved for `patience` epochs
    patience: int = 3  # epochs without improvement of val_accuracy
    restore_best: bool = False  # keep the best epoch's weights; False keeps the last (Keras' default)
    time_limit_s: float | None = None  # stop after the epoch that passes this much training time (seconds)
    augment: bool = False  # random crop (4-pixel padding) and horizontal flip per batch
    channels_last: bool = True  # NHWC memory layout for convolutions; faster on CPU and GPU here
    amp: bool = False  # bfloat16/float16 autocast on CUDA; ignored on the CPU
    seed: int = 0  # seeds weights, shuffling and augmentation
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: the GPU when there is one

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (batch norm needs 2 samples), got {self.batch_size}")
        if self.patience < 1:
            raise ValueError(f"patience must be at least 1 epoch, got {self.patience}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else OPTIMIZERS[self.optimizer]["lr"]

    def resolved_decay_rate(self) -> float:
        return self.lr_decay_rate if self.lr_decay_rate is not None else OPTIMIZERS[self.optimizer]["lr_decay_rate"]

    def resolved_weight_decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else OPTIMIZERS[self.optimizer]["weight_decay"]


# The study's two optimisers: Nadam at 1e-3 with exponential decay, and the
# original ResNet paper's SGD (momentum 0.9, weight decay 1e-4, lr 0.1).
OPTIMIZERS: dict[str, dict[str, float]] = {
    "nadam": {"lr": 1e-3, "lr_decay_rate": 0.95, "weight_decay": 0.0},
    "sgd": {"lr": 0.1, "lr_decay_rate": 1.0, "weight_decay": 1e-4},
}


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys by name."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(known)}")
    return cls(**values)
