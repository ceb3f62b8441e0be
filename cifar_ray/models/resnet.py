"""CIFAR-style residual network: a 3x3 stem, stages of basic blocks, global average pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cifar_ray.models.layers import batch_norm_2d, init_hidden, init_output


class BasicBlock(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN -> add shortcut -> ReLU, convolutions without bias.

    A block that changes resolution or width gets a 1x1 convolution + BN
    projection shortcut; every other block adds its input unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = batch_norm_2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = batch_norm_2d(out_channels)
        init_hidden(self.conv1)
        init_hidden(self.conv2)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            init_hidden(projection)
            self.shortcut = nn.Sequential(projection, batch_norm_2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The study's "ResNet-18": 20 weight layers in the layout of He et al.'s CIFAR networks, widened.

    Every stage after the first halves the resolution in its first block.
    `weight_l2` adds a Keras-style L2 term on every convolution kernel; it is 0
    in the study, which used SGD's weight decay instead.
    """

    def __init__(
        self,
        stage_widths: Sequence[int] = (64, 128, 256),
        blocks_per_stage: int = 3,
        weight_l2: float = 0.0,
        num_classes: int = 10,
        image_size: int = 32,
        in_channels: int = 3,
    ):
        super().__init__()
        stage_widths = [int(width) for width in stage_widths]
        if not stage_widths or min(stage_widths) < 1 or blocks_per_stage < 1:
            raise ValueError(
                f"stage_widths must be positive integers and blocks_per_stage at least 1, "
                f"got {stage_widths} and {blocks_per_stage}"
            )
        if image_size < 2 ** (len(stage_widths) - 1):
            raise ValueError(f"image_size {image_size} is too small for {len(stage_widths)} stages")

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stage_widths[0], 3, padding=1, bias=False),
            batch_norm_2d(stage_widths[0]),
            nn.ReLU(),
        )
        init_hidden(self.stem[0])
        blocks = []
        channels = stage_widths[0]
        for stage, width in enumerate(stage_widths):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)
        init_output(self.head)

        self.regularized = (
            [(m, float(weight_l2)) for m in self.modules() if isinstance(m, nn.Conv2d)] if weight_l2 > 0 else []
        )

    def conv_layers(self) -> list[nn.Conv2d]:
        """Return the stem's convolution and the last block's second one, for feature-map pictures."""
        return [self.stem[0], self.stages[-1].conv2]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the globally pooled activations that feed the classifier."""
        return self.pool(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
