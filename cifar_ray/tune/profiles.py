"""Sweep profiles: the budgets of `smoke`, `cpu` and `paper`, per sweep script.

`smoke` checks the whole pipeline in a couple of minutes (CI). `cpu` is a real
search on a training subset with narrower networks, then the winners
retrained on the whole training split, sized for 15 minutes on 2 CPU cores.
`paper` uses the study's widths, the full data and up to 90 epochs, for GPUs.
Every field can be overridden from the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class SweepProfile:
    """Budget and search settings of one sweep run."""

    name: str
    num_samples: int  # trials per searched family
    max_epochs: int  # max_t: epochs a search trial may reach
    grace_period: int  # epochs before ASHA/HyperBand may stop a trial
    reduction_factor: int  # ASHA/HyperBand keep 1/reduction_factor of trials per rung
    search_subset: int | None  # training images per search trial (stratified); None: the whole split
    batch_size: int  # images per optimiser step
    augment: bool  # random crop (4-pixel padding) and horizontal flip in every trial
    width_scale: float  # multiplies the searched widths; 1.0 is the study's range
    search_time_budget_s: float | None  # wall-clock cap of each search stage
    final_epochs: int  # maximum epochs of a final retrain
    final_patience: int  # early-stopping patience of a final retrain
    final_time_limit_s: float | None  # training-time cap of one final retrain (it still gets tested)
    final_subset: int | None  # training images of a final retrain; None: the whole split
    top_k: int  # configurations retrained per sweep (per model with paper.py)
    seeds: int  # final retrains per configuration, with seeds 0..seeds-1
    resnet_base_width: int  # first-stage width of the ResNet (the study: 64)
    resnet_epochs: int  # epochs of the SGD runs without early stopping (the study: 90)


PROFILES: dict[str, SweepProfile] = {
    "smoke": SweepProfile(
        name="smoke",
        num_samples=3,
        max_epochs=2,
        grace_period=1,
        reduction_factor=2,
        search_subset=1000,
        batch_size=64,
        augment=False,
        width_scale=0.1,
        search_time_budget_s=None,
        final_epochs=2,
        final_patience=2,
        final_time_limit_s=None,
        final_subset=2000,
        top_k=2,
        seeds=1,
        resnet_base_width=8,
        resnet_epochs=2,
    ),
    "cpu": SweepProfile(
        name="cpu",
        num_samples=10,
        max_epochs=4,
        grace_period=1,
        reduction_factor=3,
        search_subset=10_000,
        batch_size=64,
        # Measured on 2 cores: the narrow 3-conv CNN overfits by epoch 7 without
        # augmentation (test 0.685) and reaches 0.73 with it in 12 epochs.
        augment=True,
        width_scale=0.15,
        search_time_budget_s=240,
        final_epochs=15,
        final_patience=3,
        final_time_limit_s=390,
        final_subset=None,
        # One retrain per core: a third would run after the first two and
        # push the sweep past 15 minutes on 2 cores.
        top_k=2,
        seeds=1,
        resnet_base_width=16,
        resnet_epochs=10,
    ),
    "paper": SweepProfile(
        name="paper",
        num_samples=40,
        max_epochs=30,
        grace_period=3,
        reduction_factor=3,
        search_subset=None,
        batch_size=32,
        augment=False,
        width_scale=1.0,
        search_time_budget_s=None,
        final_epochs=90,
        final_patience=3,
        final_time_limit_s=None,
        final_subset=None,
        top_k=3,
        seeds=3,
        resnet_base_width=64,
        resnet_epochs=90,
    ),
}


def get_profile(name: str, **overrides) -> SweepProfile:
    """Return a copy of a named profile with `overrides` applied (None values are ignored)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(SweepProfile)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown profile fields {unknown}; valid: {sorted(fields)}")
    return dataclasses.replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})
