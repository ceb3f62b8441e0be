"""Fixed configurations of the study's runs that were not searched: the ResNet and experiment 10."""

from __future__ import annotations

import argparse
from typing import Any

from cifar_ray.tune.profiles import SweepProfile

# The original ResNet paper's optimiser, which the study also used: SGD with
# momentum 0.9, weight decay 1e-4 and learning rate 0.1, without a schedule.
SGD = {"optimizer": "sgd", "lr": 0.1}


def _scaled_cnn3_reg(profile: SweepProfile) -> dict[str, Any]:
    step = 8
    filters = [max(step, int(round(f * profile.width_scale / step)) * step) for f in (256, 448, 1024)]
    return {
        "model": "cnn3_reg",
        "filters_1": filters[0],
        "filters_2": filters[1],
        "filters_3": filters[2],
        "dense_units": 384,
    }


def experiment_10(profile: SweepProfile, args: argparse.Namespace) -> list[dict[str, Any]]:
    """3-layer FCNN with L2, regularised 3-conv CNN and ResNet, trained with SGD at 0.1 without early stopping."""
    common = {**SGD, "early_stopping": False, "epochs": profile.resnet_epochs}
    return [
        {"model": "fcnn3_l2", **common},
        {**_scaled_cnn3_reg(profile), **common},
        {"model": "resnet", "base_width": profile.resnet_base_width, **common},
    ]


def resnet_runs(profile: SweepProfile, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Return the study's ResNet trainings (Nadam and SGD, each with early stopping) and experiment 10."""
    resnet = {"model": "resnet", "base_width": profile.resnet_base_width}
    return [
        {**resnet, "optimizer": "nadam"},
        {**resnet, **SGD},
        *experiment_10(profile, args),
    ]
