"""Training throughput of each study model, and the GFLOP/s it reaches against the device's matmul peak."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import OtherLoad, StepClock, subset, synchronize
from benchmarks.settings import BenchSettings
from cifar_ray.config import TrainConfig
from cifar_ray.data import DataBundle
from cifar_ray.engine import Trainer
from cifar_ray.models import build_model, get_spec, registered_models

# The study's nine architectures; the pretrained backbones are registered too but are no part of the study.
STUDY_MODELS = [name for name in registered_models() if get_spec(name).family != "pretrained"]


def measure_matmul(device: torch.device, settings: BenchSettings) -> dict[str, Any]:
    """Measure the float32 GFLOP/s of torch.matmul on two square matrices: the device's practical peak."""
    size = settings.matmul_size * (2 if device.type == "cuda" else 1)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    flops = 2 * size**3

    torch.matmul(a, b)
    synchronize(device)
    rates = []
    spent = 0.0
    while spent < settings.matmul_seconds or len(rates) < 3:
        started = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        elapsed = time.perf_counter() - started
        spent += elapsed
        rates.append(flops / elapsed / 1e9)
    # The best repeat is the peak: on a shared machine a slow repeat measures the neighbours, not the device.
    return {"size": size, "repeats": len(rates), "gflops_max": max(rates), "gflops_median": statistics.median(rates)}


def training_flops(model: nn.Module, batch_size: int, device: torch.device) -> int:
    """Count the FLOPs of one forward and backward pass at `batch_size`, without the optimiser's element-wise work."""
    model.train()
    images = torch.randn(batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(images), labels).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure_model(
    name: str, bundle: DataBundle, channels_last: bool, settings: BenchSettings, device: torch.device
) -> dict[str, Any]:
    """Measure the images/s of the Trainer's own loop (augment=True) over `timed_steps` steps after `warmup_steps`.

    The epoch contains exactly the warm-up and timed steps, so the timer covers
    the real hot loop: batch gather, augmentation, forward, backward, update.
    """
    steps = settings.warmup_steps + settings.timed_steps
    data = subset(bundle, steps * settings.batch_size, settings.batch_size)
    config = TrainConfig(
        model=name,
        batch_size=settings.batch_size,
        epochs=1,
        augment=True,
        channels_last=channels_last,
        device=str(device),
    )
    trainer = Trainer(config, data)
    clock = StepClock(device)
    clock.start()
    trainer.train_epoch(progress=clock)
    if len(clock.step_ends) != steps:
        raise RuntimeError(f"{name}: expected {steps} steps in the epoch, counted {len(clock.step_ends)}")

    seconds = clock.seconds(first=settings.warmup_steps)
    median_step = statistics.median(clock.step_seconds(first=settings.warmup_steps))
    return {
        "images_per_s": settings.timed_steps * settings.batch_size / seconds,
        "step_ms": seconds / settings.timed_steps * 1000,
        # The median is less sensitive than the mean to a step stalled by other processes.
        "median_step_ms": median_step * 1000,
    }


def measure_models(
    bundle: DataBundle, settings: BenchSettings, device: torch.device, matmul_gflops: float, report: Callable[[str], None]
) -> dict[str, Any]:
    """Measure throughput and GFLOP/s of every study model, the convolutional ones with channels_last on and off."""
    results = {}
    for name in STUDY_MODELS:
        model = build_model(name).to(device)
        flops = training_flops(model, settings.batch_size, device)
        convolutional = any(isinstance(module, nn.Conv2d) for module in model.modules())
        results[name] = {"params": sum(p.numel() for p in model.parameters()), "train_gflop_per_step": flops / 1e9}
        del model

        for channels_last in [True, False] if convolutional else [False]:
            layout = "channels_last" if channels_last else "contiguous"
            other = OtherLoad()
            run = measure_model(name, bundle, channels_last, settings, device)
            run["other_processes_cores"] = other.cores()
            run["gflops"] = flops / (run["step_ms"] / 1000) / 1e9
            run["fraction_of_matmul"] = run["gflops"] / matmul_gflops
            results[name][layout] = run
            others = "" if run["other_processes_cores"] is None else f"  (other processes: {run['other_processes_cores']:.2f} cores)"
            report(
                f"  {name:9s} {layout:13s} {run['images_per_s']:8.0f} images/s  {run['gflops']:7.1f} GFLOP/s  "
                f"{run['fraction_of_matmul']:6.1%} of matmul{others}"
            )
        if convolutional:
            results[name]["channels_last_speedup"] = (
                results[name]["channels_last"]["images_per_s"] / results[name]["contiguous"]["images_per_s"]
            )
    return results
