"""Initialisation and parameter counting shared by the architecture families."""

from __future__ import annotations

import math

import torch
from torch import nn

# Keras' he_normal draws from a normal truncated at two standard deviations
# and rescales the standard deviation by this factor so that the variance of
# the truncated draw is still 2 / fan_in.
_TRUNCATION_STD_CORRECTION = 0.87962566103423978


def he_normal_(weight: torch.Tensor) -> None:
    """Fill a kernel in place with Keras-style truncated He-normal values."""
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / _TRUNCATION_STD_CORRECTION
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def init_hidden(module: nn.Module) -> None:
    """He-normal kernels and zero biases, as the study used for every hidden layer."""
    he_normal_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def init_output(module: nn.Linear) -> None:
    """Glorot-uniform kernel and zero bias: Keras' default for the softmax layer."""
    nn.init.xavier_uniform_(module.weight)
    nn.init.zeros_(module.bias)


def batch_norm_1d(features: int) -> nn.BatchNorm1d:
    # eps matches Keras (1e-3). NOTE: Keras' momentum of 0.99 would be 0.01 here;
    # PyTorch's 0.1 is kept because it settles the running statistics within the
    # short CPU runs this project also supports.
    return nn.BatchNorm1d(features, eps=1e-3)


def batch_norm_2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Count parameters the way Keras does.

    Keras reports batch norm's moving mean and variance as non-trainable
    parameters, so they are added here from the running-statistics buffers.
    PyTorch's `num_batches_tracked` counter has no Keras counterpart and is left out.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    running_stats = sum(
        buffer.numel()
        for name, buffer in model.named_buffers()
        if name.endswith("running_mean") or name.endswith("running_var")
    )
    non_trainable = frozen + running_stats
    return {
        "total": trainable + non_trainable,
        "trainable": trainable,
        "non_trainable": non_trainable,
    }


def l2_penalty(model: nn.Module) -> torch.Tensor | None:
    """Return Keras' L2 term, `sum(l2 * sum(kernel**2))`, or None when no layer has one.

    Only kernels listed in the model's `regularized` attribute count, never biases
    or batch-norm weights.
    """
    terms = [strength * module.weight.pow(2).sum() for module, strength in getattr(model, "regularized", [])]
    if not terms:
        return None
    return torch.stack(terms).sum()
