"""A Tune trial against the plain training loop: throughput ratio and trial start-up time."""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import subset
from benchmarks.settings import BenchSettings
from cifar_ray.data import DataBundle
from cifar_ray.engine import Trainer

# The small CNN of the data path comparison, in a trial's flat config.
TUNE_MODEL = {"model": "cnn2", "filters_1": 32, "filters_2": 64}


def mean_after_warmup(history: list[dict[str, Any]], key: str) -> float:
    """Return the mean of `key` over the epochs after the first."""
    return statistics.mean(row[key] for row in history[1:])


def plain_loop(config: dict[str, Any], data: DataBundle, epochs: int) -> list[dict[str, Any]]:
    """Train a trial configuration with the plain Trainer on one thread, as a trial gets one CPU."""
    from cifar_ray.tune.trainables import train_config_from_trial

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(dataclasses.replace(train_config_from_trial(config), device="cpu"), data)
        return [trainer.train_epoch() for _ in range(epochs)]
    finally:
        torch.set_num_threads(threads)


def run_trial(config: dict[str, Any], data: DataBundle, epochs: int, storage: Path) -> dict[str, Any]:
    """Run one CNNTrainable trial with 1 CPU on a new local Ray instance; return its results and their arrival times."""
    # Ray would otherwise send usage statistics to an external host. The variable must be set before ray is imported.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from ray import tune

    from cifar_ray.tune.trainables import TRAINABLES

    class ResultClock(tune.Callback):
        """Arrival time, in the driver, of each trial result."""

        def __init__(self) -> None:
            self.results: list[tuple[float, dict[str, Any]]] = []

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.results.append((time.perf_counter(), dict(result)))

    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray_init_s = time.perf_counter() - started
    try:
        clock = ResultClock()
        trainable = tune.with_resources(tune.with_parameters(TRAINABLES["cnn"], data=data), {"cpu": 1})
        tuner = tune.Tuner(
            trainable,
            param_space=config,
            tune_config=tune.TuneConfig(num_samples=1),
            run_config=tune.RunConfig(
                name="bench",
                storage_path=str(storage),
                stop={"training_iteration": epochs},
                callbacks=[clock],
                verbose=0,
            ),
        )
        fit_started = time.perf_counter()
        grid = tuner.fit()
        fit_s = time.perf_counter() - fit_started
    finally:
        ray.shutdown()

    if grid.errors:
        raise RuntimeError(f"the benchmark's Tune trial of {config} failed: {grid.errors[0]}")
    if len(clock.results) != epochs:
        raise RuntimeError(f"expected {epochs} Tune results, the callback saw {len(clock.results)}")
    return {
        "history": [result for _, result in clock.results],
        # Seconds from the start of Tuner.fit to the arrival of each result.
        "arrivals_s": [arrival - fit_started for arrival, _ in clock.results],
        "ray_init_s": ray_init_s,
        "fit_s": fit_s,
    }


def measure_tune(bundle: DataBundle, settings: BenchSettings, storage: Path, report: Callable[[str], None]) -> dict[str, Any]:
    """Train the same configuration with the plain Trainer on one thread and as a Tune trial with one CPU.

    Both runs report `train_images_per_s` from Trainer.train_epoch, so the
    ratio shows what the trial's process and Ray's daemons cost the epoch. The
    first epoch of each run is warm-up and left out. The trial runs on a local
    Ray instance started here without a dashboard, and saves no checkpoints.
    """
    data = subset(bundle, settings.tune_images, settings.tune_val_images)
    config = {
        **TUNE_MODEL,
        "epochs": settings.tune_epochs,
        "early_stopping": False,
        "augment": True,
        "batch_size": settings.batch_size,
        "seed": 0,
    }

    # The plain loop runs before and after the trial, so that a slow drift of the machine's speed
    # (other work, clock changes) shifts both sides of the ratio alike.
    plain_before = plain_loop(config, data, settings.tune_epochs)
    report(f"  plain loop, 1 thread: {mean_after_warmup(plain_before, 'train_images_per_s'):.0f} train_images_per_s")

    trial = run_trial(config, data, settings.tune_epochs, storage)
    history, arrivals = trial["history"], trial["arrivals_s"]
    trial_rate = mean_after_warmup(history, "train_images_per_s")
    # Tuner.fit start to the first result, less the first epoch itself.
    startup_s = arrivals[0] - history[0]["epoch_time_s"]
    report(
        f"  Tune trial, 1 CPU: {trial_rate:.0f} train_images_per_s, start-up {startup_s:.1f} s, "
        f"ray.init {trial['ray_init_s']:.1f} s"
    )

    plain_after = plain_loop(config, data, settings.tune_epochs)
    report(f"  plain loop again: {mean_after_warmup(plain_after, 'train_images_per_s'):.0f} train_images_per_s")
    plain_runs = (plain_before, plain_after)
    plain_rate = statistics.mean(mean_after_warmup(run, "train_images_per_s") for run in plain_runs)

    # Wall-clock images/s between consecutive results, which adds Tune's own work between epochs.
    images = len(data.y_train)
    trial_wall = statistics.mean(images / (later - earlier) for earlier, later in zip(arrivals, arrivals[1:]))
    plain_wall = statistics.mean(images / mean_after_warmup(run, "epoch_time_s") for run in plain_runs)
    results = {
        "model": TUNE_MODEL,
        "images": images,
        "val_images": len(data.y_val),
        "epochs": settings.tune_epochs,
        "plain_train_images_per_s": plain_rate,
        "plain_train_images_per_s_before": mean_after_warmup(plain_before, "train_images_per_s"),
        "plain_train_images_per_s_after": mean_after_warmup(plain_after, "train_images_per_s"),
        "trial_train_images_per_s": trial_rate,
        "throughput_ratio": trial_rate / plain_rate,
        "wall_clock_ratio": trial_wall / plain_wall,
        "ray_init_s": trial["ray_init_s"],
        "fit_s": trial["fit_s"],
        "first_result_s": arrivals[0],
        "startup_s": startup_s,
    }
    report(f"  Tune trial / plain loop: {results['throughput_ratio']:.3f} (wall clock {results['wall_clock_ratio']:.3f})")
    return results
