"""Plain CNNs: valid 3x3 convolutions with 2x2 max pooling, then a dense layer with batch norm."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cifar_ray.models.layers import batch_norm_1d, init_hidden, init_output


def conv_output_size(image_size: int, num_convs: int) -> int:
    """Side length after `num_convs` blocks of valid 3x3 convolution and 2x2 pooling."""
    size = image_size
    for _ in range(num_convs):
        size = (size - 2) // 2
    return size


class CNN(nn.Module):
    """Conv(3x3, valid) -> ReLU -> MaxPool(2) [-> Dropout] per block, then
    Dense -> ReLU -> BatchNorm [-> Dropout] -> Dense.

    Batch norm follows the dense layer's ReLU, and L2 (`dense_l2`) applies to
    the dense kernel only, as in the study's regularised CNNs.
    """

    def __init__(
        self,
        filters: Sequence[int],
        dense_units: int = 256,
        conv_dropout: Sequence[float] | float = 0.0,
        dense_dropout: float = 0.0,
        dense_l2: float = 0.0,
        num_classes: int = 10,
        image_size: int = 32,
        in_channels: int = 3,
    ):
        super().__init__()
        filters = [int(count) for count in filters]
        if not filters or min(filters) < 1:
            raise ValueError(f"filters must be positive integers, got {filters}")
        dropouts = [float(conv_dropout)] * len(filters) if isinstance(conv_dropout, (int, float)) else list(conv_dropout)
        if len(dropouts) != len(filters):
            raise ValueError(f"conv_dropout has {len(dropouts)} values for {len(filters)} conv layers")
        side = conv_output_size(image_size, len(filters))
        if side < 1:
            raise ValueError(
                f"image_size {image_size} is too small for {len(filters)} valid conv + pool blocks; "
                f"use at least {_min_image_size(len(filters))} pixels"
            )

        blocks: list[nn.Module] = []
        channels = in_channels
        for count, rate in zip(filters, dropouts):
            conv = nn.Conv2d(channels, count, kernel_size=3, padding=0)
            init_hidden(conv)
            blocks += [conv, nn.ReLU(), nn.MaxPool2d(2)]
            if rate > 0:
                blocks.append(nn.Dropout(rate))
            channels = count
        self.conv_stack = nn.Sequential(*blocks)

        dense = nn.Linear(channels * side * side, int(dense_units))
        init_hidden(dense)
        dense_layers: list[nn.Module] = [nn.Flatten(), dense, nn.ReLU(), batch_norm_1d(int(dense_units))]
        if dense_dropout > 0:
            dense_layers.append(nn.Dropout(dense_dropout))
        self.dense = nn.Sequential(*dense_layers)
        self.regularized = [(dense, float(dense_l2))] if dense_l2 > 0 else []

        self.head = nn.Linear(int(dense_units), num_classes)
        init_output(self.head)

    def conv_layers(self) -> list[nn.Conv2d]:
        """Return the convolutions in order, for feature-map pictures."""
        return [m for m in self.conv_stack if isinstance(m, nn.Conv2d)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last hidden layer's activations (after batch norm)."""
        return self.dense(self.conv_stack(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _min_image_size(num_convs: int) -> int:
    size = 1
    while conv_output_size(size, num_convs) < 1:
        size += 1
    return size
