"""The usual PyTorch data recipe, plugged into the project's one training loop as a baseline.

The usual recipe serves each image as a PIL image from a torchvision-style
Dataset, augments it alone (RandomCrop(32, padding=4), RandomHorizontalFlip,
ToTensor, Normalize) and collates batches in DataLoader worker processes.
`LoaderSplit` puts such a DataLoader where `Trainer` expects a `DeviceDataset`,
so both recipes run the same `Trainer.train_epoch`: same model, optimiser,
schedule, loss bookkeeping and memory layout. Only the data path differs.

Used by benchmarks/bench.py (speed) and tests/test_fast_path.py (accuracy).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from cifar_ray.engine import Trainer

# Pixels of zero padding on each side before the random crop, as in DeviceDataset's augmentation.
CROP_PADDING = 4


class ArrayImageDataset(Dataset):
    """(N, H, W, 3) uint8 images in memory, returned as PIL images through `transform`, as torchvision's CIFAR10 does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: transforms.Compose):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def channel_mean(mean_image: np.ndarray) -> list[float]:
    """Return the per-channel mean of an (H, W, 3) mean image in [0, 1], for transforms.Normalize."""
    return [float(value) for value in mean_image.reshape(-1, 3).mean(axis=0)]


def usual_transform(mean: Sequence[float], augment: bool, image_size: int = 32) -> transforms.Compose:
    """Build the per-sample torchvision transforms, ending in Normalize(mean, std=1).

    A standard deviation of 1 keeps the project's input scale: pixels in [0, 1]
    minus the mean image. The two recipes then feed the network the same range
    and differ only in subtracting a per-channel or a per-pixel mean.
    """
    steps: list = []
    if augment:
        steps += [
            transforms.RandomCrop(image_size, padding=CROP_PADDING),
            transforms.RandomHorizontalFlip(),
        ]
    steps += [transforms.ToTensor(), transforms.Normalize(list(mean), [1.0, 1.0, 1.0])]
    return transforms.Compose(steps)


class LoaderSplit:
    """A DataLoader over a torchvision-style Dataset, standing in for one `DeviceDataset` split of a `Trainer`.

    The dataset's transform fixes whether batches are augmented, so
    `train_batches` raises ValueError when the Trainer requests the other choice.
    Workers start anew every epoch (`persistent_workers=False`), as in the
    DataLoader's defaults, so their start-up is part of each epoch's time.
    """

    def __init__(
        self,
        dataset: Dataset,
        augment: bool,
        workers: int,
        device: torch.device,
        labels: np.ndarray | None = None,
    ):
        self.dataset = dataset
        self.augment = augment
        self.workers = workers
        self.device = device
        self._labels = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> torch.Tensor:
        if self._labels is None:
            raise ValueError("this LoaderSplit was built without labels, so it cannot be evaluated; pass labels=")
        return self._labels

    def _loader(self, batch_size: int, shuffle: bool, generator: torch.Generator | None) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.workers,
            # Batch norm cannot train on a batch of one image, so DeviceDataset drops it too.
            drop_last=shuffle and len(self.dataset) % batch_size == 1,
            pin_memory=self.device.type == "cuda",
        )

    def _to_device(self, images: torch.Tensor, channels_last: bool) -> torch.Tensor:
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return images.to(self.device, non_blocking=True).contiguous(memory_format=memory_format)

    def train_batches(
        self, batch_size: int, generator: torch.Generator, augment: bool, channels_last: bool
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if augment != self.augment:
            raise ValueError(
                f"the Trainer requests augment={augment}, but this LoaderSplit's transform has "
                f"augment={self.augment}; build it with usual_transform(..., augment={augment})"
            )
        # The Trainer's generator drives the shuffle and seeds the workers' transforms.
        for images, labels in self._loader(batch_size, shuffle=True, generator=generator):
            yield self._to_device(images, channels_last), labels.to(self.device, non_blocking=True)

    def eval_batches(self, batch_size: int, channels_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self._loader(batch_size, shuffle=False, generator=None):
            yield self._to_device(images, channels_last), labels.to(self.device, non_blocking=True)


def use_usual_recipe(trainer: Trainer, train: LoaderSplit, val: LoaderSplit | None = None) -> Trainer:
    """Make `trainer` read its training (and, when given, validation) batches from the usual recipe's loaders."""
    if train.augment != trainer.config.augment:
        raise ValueError(
            f"the Trainer is configured with augment={trainer.config.augment} but the training "
            f"LoaderSplit with augment={train.augment}"
        )
    trainer.train_set = train
    if val is not None:
        trainer.val_set = val
    return trainer
