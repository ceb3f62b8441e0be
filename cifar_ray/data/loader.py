"""The training data path: uint8 tensors on the device, normalised and augmented per batch.

There is no per-sample Python in the loop. Shuffling is an index permutation,
and augmentation (random crop with padding, horizontal flip) is a batched
tensor operation. Images stay uint8 until the batch is sliced, so the whole set
fits on a GPU at a quarter of its float32 size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.nn import functional as F


def to_device_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 array to an (N, 3, H, W) uint8 tensor in channels_last layout, without a copy on the CPU."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).to(device)


class DeviceDataset:
    """One split held on the device, with the per-pixel mean to subtract."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean_image: np.ndarray, device: torch.device):
        self.images = to_device_images(images, device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        self.mean = torch.from_numpy(mean_image).permute(2, 0, 1).unsqueeze(0).to(device)
        self.device = device

    def __len__(self) -> int:
        return len(self.labels)

    def normalise(self, images: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """Scale uint8 images to [0, 1] and subtract the mean image."""
        batch = images.float().div_(255.0).sub_(self.mean)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return batch.contiguous(memory_format=memory_format)

    def train_batches(
        self, batch_size: int, generator: torch.Generator, augment: bool, channels_last: bool
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches for one epoch. A trailing batch of one image is dropped, since batch norm cannot train on it."""
        order = torch.randperm(len(self), generator=generator).to(self.device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2:
                break
            images = self.images[index]
            if augment:
                images = random_crop_flip(images, generator)
            yield self.normalise(images, channels_last), self.labels[index]

    def eval_batches(self, batch_size: int, channels_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield (
                self.normalise(self.images[start : start + batch_size], channels_last),
                self.labels[start : start + batch_size],
            )


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after zero padding by `padding` pixels, and a horizontal flip with probability 0.5, per image.

    Zero padding of uint8 pixels equals Keras' and torchvision's constant-0
    padding before normalisation. The crop is one gather with per-image offsets.
    """
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    if images.device.type == "cuda":
        # Pinned host memory makes the copies asynchronous, so the CPU keeps queueing kernels.
        offsets, flip = offsets.pin_memory(), flip.pin_memory()
    offsets = offsets.to(images.device, non_blocking=True)
    flip = flip.to(images.device, non_blocking=True)
    rows = offsets[0].view(n, 1) + torch.arange(height, device=images.device).view(1, height)
    cols = offsets[1].view(n, 1) + torch.arange(width, device=images.device).view(1, width)
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols)
    batch_index = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel_index = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch_index, channel_index, rows.view(n, 1, height, 1), cols.view(n, 1, 1, width)]
