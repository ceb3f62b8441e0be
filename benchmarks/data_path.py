"""Loading the data set, and the project's data path against the usual torchvision recipe."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch.utils.data import Subset

from benchmarks.harness import OtherLoad, StepClock, subset
from benchmarks.settings import BenchSettings
from benchmarks.usual_recipe import ArrayImageDataset, LoaderSplit, channel_mean, use_usual_recipe, usual_transform
from cifar_ray.config import DataConfig, TrainConfig
from cifar_ray.data import DataBundle, DeviceDataset, prepare_data
from cifar_ray.engine import Trainer

# (registered name, overrides): a small CNN and the study's 3-layer fully connected net.
RECIPE_MODELS = {
    "cnn2": ("cnn2", {"filters": [32, 64]}),
    "fcnn3": ("fcnn3", {}),
}


def link_subset_tree(source: Path, target: Path, per_class: int) -> Path:
    """Symlink the first `per_class` files of each train/ class, and a fifth as many of test/, into `target`."""
    for split, count in (("train", per_class), ("test", max(2, per_class // 5))):
        for class_dir in sorted(path for path in (source / split).iterdir() if path.is_dir()):
            destination = target / split / class_dir.name
            destination.mkdir(parents=True)
            for file in sorted(class_dir.iterdir())[:count]:
                (destination / file.name).symlink_to(file.resolve())
    return target


def measure_loading(data: Path, cache: Path) -> tuple[DataBundle, dict[str, Any]]:
    """Time prepare_data twice on an empty cache folder: the first call decodes every JPEG, the second reads the cache."""
    config = DataConfig(data=str(data), cache_dir=str(cache), download=False)

    started = time.perf_counter()
    prepare_data(config)
    cold_s = time.perf_counter() - started

    started = time.perf_counter()
    bundle = prepare_data(config)
    cached_s = time.perf_counter() - started

    images = len(bundle.y_train) + len(bundle.y_val) + len(bundle.y_test)
    return bundle, {
        "source": str(data),
        "images": images,
        "cold_s": cold_s,
        "cached_s": cached_s,
        "cold_images_per_s": images / cold_s,
    }


def timed_epoch_images_per_s(trainer: Trainer) -> float:
    """Train one warm-up epoch, then return the images/s of the next epoch's training pass (validation excluded)."""
    trainer.train_epoch()
    clock = StepClock(trainer.device)
    clock.start()
    trainer.train_epoch(progress=clock)
    return len(trainer.train_set) / clock.seconds()


def batches_only_images_per_s(batches: Iterable[Any], images: int) -> float:
    """Measure the images/s of iterating one epoch of batches, with no model."""
    started = time.perf_counter()
    for _ in batches:
        pass
    return images / (time.perf_counter() - started)


def measure_recipe_pair(
    name: str,
    kwargs: dict[str, Any],
    bundle: DataBundle,
    image_folder: torchvision.datasets.ImageFolder,
    settings: BenchSettings,
    device: torch.device,
    report: Callable[[str], None],
) -> dict[str, Any]:
    """Measure the images/s of one model trained through the project's data path and the usual recipe's two variants.

    Every variant runs Trainer.train_epoch with the same model, batch size and
    augmentation. Only the source of the batches differs.
    """
    data = subset(bundle, settings.recipe_images, settings.batch_size)
    config = TrainConfig(
        model=name,
        model_kwargs=kwargs,
        batch_size=settings.batch_size,
        epochs=2,
        early_stopping=False,
        augment=True,
        device=str(device),
    )
    augment = usual_transform(channel_mean(bundle.mean_image), augment=True)
    arrays = ArrayImageDataset(data.x_train, data.y_train, augment)
    # A fixed random draw of JPEG files, as many as the in-memory variants train on.
    picks = np.random.default_rng(0).permutation(len(image_folder))[: settings.recipe_images].tolist()
    files = Subset(image_folder, picks)
    results: dict[str, Any] = {"model": name, "model_kwargs": kwargs, "images": settings.recipe_images}
    other = OtherLoad()

    project = Trainer(config, data)
    results["channels_last"] = project.channels_last
    results["project"] = timed_epoch_images_per_s(project)
    report(f"  {name}: project data path {results['project']:.0f} images/s (channels_last={project.channels_last})")
    if project.channels_last:
        contiguous = Trainer(dataclasses.replace(config, channels_last=False), data)
        results["project_contiguous"] = timed_epoch_images_per_s(contiguous)
        report(f"  {name}: project data path, contiguous {results['project_contiguous']:.0f} images/s")

    usual = use_usual_recipe(Trainer(config, data), LoaderSplit(arrays, True, settings.recipe_workers, device))
    results["usual"] = timed_epoch_images_per_s(usual)
    report(f"  {name}: usual recipe, in-memory images {results['usual']:.0f} images/s")

    folder = use_usual_recipe(Trainer(config, data), LoaderSplit(files, True, settings.recipe_workers, device))
    results["usual_image_folder"] = timed_epoch_images_per_s(folder)
    report(f"  {name}: usual recipe, ImageFolder JPEGs {results['usual_image_folder']:.0f} images/s")

    results["other_processes_cores"] = other.cores()
    results["speedup_vs_usual"] = results["project"] / results["usual"]
    results["speedup_vs_image_folder"] = results["project"] / results["usual_image_folder"]
    return results


def measure_batches_only(
    bundle: DataBundle, settings: BenchSettings, device: torch.device, report: Callable[[str], None]
) -> dict[str, float]:
    """Measure the images/s of each data path alone: the ceiling it puts on training throughput."""
    data = subset(bundle, settings.recipe_images, settings.batch_size)
    device_set = DeviceDataset(data.x_train, data.y_train, data.mean_image, device)
    transform = usual_transform(channel_mean(data.mean_image), augment=True)
    loader = LoaderSplit(ArrayImageDataset(data.x_train, data.y_train, transform), True, settings.recipe_workers, device)
    generator = torch.Generator().manual_seed(0)

    project = device_set.train_batches(settings.batch_size, generator, augment=True, channels_last=True)
    usual = loader.train_batches(settings.batch_size, generator, augment=True, channels_last=True)
    results = {
        "project": batches_only_images_per_s(project, settings.recipe_images),
        "usual": batches_only_images_per_s(usual, settings.recipe_images),
    }
    report(f"  batches only: project {results['project']:.0f} images/s, usual recipe {results['usual']:.0f} images/s")
    return results


def measure_recipes(
    bundle: DataBundle, train_folder: Path, settings: BenchSettings, device: torch.device, report: Callable[[str], None]
) -> dict[str, Any]:
    image_folder = torchvision.datasets.ImageFolder(
        str(train_folder), transform=usual_transform(channel_mean(bundle.mean_image), augment=True)
    )
    results: dict[str, Any] = {
        key: measure_recipe_pair(name, kwargs, bundle, image_folder, settings, device, report)
        for key, (name, kwargs) in RECIPE_MODELS.items()
    }
    results["batches_only"] = measure_batches_only(bundle, settings, device, report)
    return results
