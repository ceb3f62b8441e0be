"""Fully connected networks: flatten, ReLU dense layers, softmax output."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cifar_ray.models.layers import init_hidden, init_output


class FCNN(nn.Module):
    """A multilayer perceptron over flattened images.

    `l2` gives the Keras-style L2 strength of each hidden layer's kernel
    (0 for none); `dropout` is applied after each hidden layer when above 0.
    """

    def __init__(
        self,
        hidden_units: Sequence[int],
        l2: Sequence[float] | float = 0.0,
        dropout: float = 0.0,
        num_classes: int = 10,
        image_size: int = 32,
        in_channels: int = 3,
    ):
        super().__init__()
        hidden_units = [int(units) for units in hidden_units]
        if not hidden_units or min(hidden_units) < 1:
            raise ValueError(f"hidden_units must be positive integers, got {hidden_units}")
        l2_per_layer = [float(l2)] * len(hidden_units) if isinstance(l2, (int, float)) else list(l2)
        if len(l2_per_layer) != len(hidden_units):
            raise ValueError(
                f"l2 has {len(l2_per_layer)} values for {len(hidden_units)} hidden layers; "
                "give one per layer or a single number"
            )

        layers: list[nn.Module] = [nn.Flatten()]
        self.regularized: list[tuple[nn.Module, float]] = []
        width = in_channels * image_size * image_size
        for units, strength in zip(hidden_units, l2_per_layer):
            dense = nn.Linear(width, units)
            init_hidden(dense)
            layers += [dense, nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            if strength > 0:
                self.regularized.append((dense, strength))
            width = units
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        init_output(self.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last hidden layer's activations."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
