"""Timing helpers shared by the benchmark's parts: device synchronisation, a step clock, data subsets, other processes' CPU use."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from cifar_ray.data import DataBundle


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that a timer reads finished work. On the CPU it does nothing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def subset(bundle: DataBundle, train: int, val: int) -> DataBundle:
    """Cut `bundle` to its first `train` training and `val` validation images, keeping the full split's mean image."""
    if train > len(bundle.y_train):
        raise ValueError(f"the benchmark needs {train} training images but the data set has {len(bundle.y_train)}")
    return dataclasses.replace(
        bundle,
        x_train=bundle.x_train[:train],
        y_train=bundle.y_train[:train],
        x_val=bundle.x_val[:val],
        y_val=bundle.y_val[:val],
    )


class StepClock:
    """A `Trainer.train_epoch` progress callback that records when each optimiser step ends."""

    def __init__(self, device: torch.device):
        self.device = device
        self.started = 0.0
        self.step_ends: list[float] = []

    def start(self) -> None:
        synchronize(self.device)
        self.step_ends = []
        self.started = time.perf_counter()

    def __call__(self, images: int) -> None:
        synchronize(self.device)
        self.step_ends.append(time.perf_counter())

    def seconds(self, first: int = 0) -> float:
        """Return the seconds from the end of step `first` (0: from `start`) to the end of the last step."""
        begin = self.started if first == 0 else self.step_ends[first - 1]
        return self.step_ends[-1] - begin

    def step_seconds(self, first: int = 0) -> list[float]:
        """Return the durations of the steps after step `first`, in seconds."""
        ends = [self.started, *self.step_ends]
        return [later - earlier for earlier, later in zip(ends[first:], ends[first + 1 :])]


def system_busy_seconds() -> float | None:
    """Return the CPU seconds all processes have used since boot, from /proc/stat, or None where it is missing."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    # user, nice, system, idle, iowait, irq, softirq, steal: everything but idle and iowait is busy.
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """Return the CPU seconds of this process and of its children that have exited."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class OtherLoad:
    """The CPU cores that other processes kept busy while one part of the benchmark ran.

    NOTE: Ray's worker processes are not children of this process, so the CPU
    time of a Tune trial counts as other processes' time.
    """

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.busy = system_busy_seconds()
        self.own = own_cpu_seconds()

    def cores(self) -> float | None:
        """Return the mean number of cores that other processes used since this object was made."""
        busy = system_busy_seconds()
        if busy is None or self.busy is None:
            return None
        wall = time.perf_counter() - self.wall
        other = (busy - self.busy) - (own_cpu_seconds() - self.own)
        return max(0.0, other / wall)
