"""Training-speed benchmark of cifar-ray on the current device, in one command.

Measures, in one run:
  1. training images/s of each of the nine registered models at the study's
     full widths, over a fixed number of steps after warm-up, with the training
     GFLOP/s this reaches (FLOPs of one forward and backward pass, counted by
     torch.utils.flop_counter) as a fraction of the device's float32
     matrix-multiply GFLOP/s measured in the same run; convolutional models in
     both memory layouts (channels_last on and off);
  2. the project's data path (Trainer and DeviceDataset, augment=True) against
     the usual recipe (per-sample PIL transforms in a 2-worker DataLoader, from
     the in-memory images and from the JPEG files through ImageFolder), for a
     small CNN (cnn2, filters [32, 64]) and the 3-layer fully connected net;
  3. a Tune trial (1 CPU) against the plain training loop (1 thread) on the
     same model and data: throughput ratio and trial start-up time;
  4. loading the whole data set cold (decoding every JPEG) and from the cache.

It prints a table of targets with PASS/FAIL and writes every figure as JSON.
On 2 CPU cores the full run takes about 10 minutes and `--quick` about one;
the quick run only checks that every part works and its figures mean nothing.
BENCHMARKS.md holds the measured figures and the machine they came from.

    CIFAR_RAY_DATA=../shared/datasets/cifar10-jpeg .venv/bin/python -m benchmarks.bench --out results/benchmark.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Subset
from torch.utils.flop_counter import FlopCounterMode

from cifar_ray import io
from cifar_ray.config import DataConfig, TrainConfig
from cifar_ray.data import DATA_ENV, DataBundle, DeviceDataset, prepare_data
from cifar_ray.engine import Trainer, select_device
from cifar_ray.models import build_model, get_spec, registered_models

if __package__ in (None, ""):
    # Run as a script (python benchmarks/bench.py): make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.usual_recipe import ArrayImageDataset, LoaderSplit, channel_mean, usual_transform, use_usual_recipe

logger = logging.getLogger("benchmarks.bench")

# The study's nine architectures; pretrained backbones are registered too but are not part of the study.
STUDY_MODELS = [name for name in registered_models() if get_spec(name).family != "pretrained"]

SMALL_CNN = ("cnn2", {"filters": [32, 64]})
FCNN3 = ("fcnn3", {})
TUNE_MODEL = {"model": "cnn2", "filters_1": 32, "filters_2": 64}

# Targets: (key in the results, required minimum).
TARGETS = {
    "data path / usual recipe, cnn2 [32, 64]": ("recipes.cnn2.speedup_vs_usual", 1.5),
    "data path / usual recipe, fcnn3": ("recipes.fcnn3.speedup_vs_usual", 3.0),
    "Tune trial / plain loop, train_images_per_s": ("tune.throughput_ratio", 0.95),
}
# A 1-minute load average above this means other work shared the cores during the run.
QUIET_LOAD = 1.5


@dataclass(frozen=True)
class BenchSettings:
    """Sizes of one benchmark run. Image counts are training images per epoch."""

    batch_size: int = 32  # images per optimiser step, the study's batch size
    warmup_steps: int = 3  # steps per model before the timer starts
    timed_steps: int = 5  # steps timed per model and memory layout
    matmul_size: int = 2048  # side of the square float32 matrices (4096 on a GPU)
    matmul_seconds: float = 2.0  # minimum time spent in timed matrix multiplies
    recipe_images: int = 8000  # images per timed epoch in the data path comparison
    recipe_workers: int = 2  # DataLoader worker processes of the usual recipe
    tune_images: int = 8000  # images per epoch in the Tune comparison
    tune_val_images: int = 500  # validation images per epoch in the Tune comparison
    tune_epochs: int = 3  # epochs per run in the Tune comparison; the first is warm-up
    loading_per_class: int | None = None  # None: load the whole data set; else link this many images per class


FULL = BenchSettings()
# Just enough work to run every code path once.
QUICK = BenchSettings(
    warmup_steps=1,
    timed_steps=1,
    matmul_size=1024,
    matmul_seconds=0.3,
    recipe_images=640,
    tune_images=640,
    tune_val_images=64,
    tune_epochs=2,
    loading_per_class=220,
)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--data",
        default=os.environ.get(DATA_ENV),
        help=f"CIFAR-10 JPEG tree with train/<class>/ and test/<class>/ (default: ${DATA_ENV})",
    )
    parser.add_argument("--out", default="results/benchmark.json", help="JSON file for every figure (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a one-minute dry run with tiny sizes; its figures mean nothing")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the GPU when there is one)")
    parser.add_argument(
        "--work-dir",
        default=None,
        help="folder for the temporary cache, trees and Tune results, removed afterwards (default: a new temp folder)",
    )
    return parser


# ---------------------------------------------------------------------------
# Machine and peak


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
        "load_average_1min_start": os.getloadavg()[0],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul(device: torch.device, settings: BenchSettings) -> dict[str, Any]:
    """float32 GFLOP/s of torch.matmul on two square matrices: the device's practical peak for dense layers."""
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
    return {"size": size, "repeats": len(rates), "gflops_median": statistics.median(rates), "gflops_max": max(rates)}


# ---------------------------------------------------------------------------
# Loading


def link_subset_tree(source: Path, target: Path, per_class: int) -> Path:
    """Symlink the first `per_class` files of each train/ class (a fifth as many of test/) into `target`."""
    for split, count in (("train", per_class), ("test", max(2, per_class // 5))):
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            destination = target / split / class_dir.name
            destination.mkdir(parents=True)
            for file in sorted(class_dir.iterdir())[:count]:
                (destination / file.name).symlink_to(file.resolve())
    return target


def measure_loading(data: Path, work: Path) -> tuple[DataBundle, dict[str, Any]]:
    """prepare_data twice on an empty cache folder: the first call decodes every JPEG, the second reads the cache."""
    cache = work / "cache"
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


# ---------------------------------------------------------------------------
# Per-model throughput


def subset(bundle: DataBundle, train: int, val: int) -> DataBundle:
    """The first `train` training and `val` validation images of `bundle`; the mean image stays the full split's."""
    if train > len(bundle.y_train):
        raise ValueError(f"the benchmark needs {train} training images but the data set has {len(bundle.y_train)}")
    return dataclasses.replace(
        bundle, x_train=bundle.x_train[:train], y_train=bundle.y_train[:train], x_val=bundle.x_val[:val], y_val=bundle.y_val[:val]
    )


class StepClock:
    """A `Trainer.train_epoch` progress callback that records when each step ends."""

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
        """Time from the end of step `first` (0: from `start`) to the end of the last step."""
        begin = self.started if first == 0 else self.step_ends[first - 1]
        return self.step_ends[-1] - begin


def training_flops(name: str, kwargs: dict[str, Any], batch_size: int, device: torch.device) -> int:
    """FLOPs of one forward and backward pass at `batch_size`; the optimiser's element-wise work is not counted."""
    model = build_model(name, **kwargs).to(device).train()
    images = torch.randn(batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(images), labels).backward()
    return counter.get_total_flops()


def has_convolutions(name: str) -> bool:
    return any(isinstance(module, nn.Conv2d) for module in build_model(name).modules())


def measure_model(
    name: str, bundle: DataBundle, channels_last: bool, settings: BenchSettings, device: torch.device
) -> dict[str, Any]:
    """Images/s of the Trainer's own loop (augment=True) over `timed_steps` steps after `warmup_steps`."""
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
    return {
        "channels_last": trainer.channels_last,
        "images_per_s": settings.timed_steps * settings.batch_size / seconds,
        "step_ms": seconds / settings.timed_steps * 1000,
    }


def measure_models(
    bundle: DataBundle, settings: BenchSettings, device: torch.device, matmul_gflops: float, report: Callable[[str], None]
) -> dict[str, Any]:
    results = {}
    for name in STUDY_MODELS:
        flops = training_flops(name, {}, settings.batch_size, device)
        layouts = [True, False] if has_convolutions(name) else [False]
        runs = {}
        for channels_last in layouts:
            run = measure_model(name, bundle, channels_last, settings, device)
            run["gflops"] = flops / (run["step_ms"] / 1000) / 1e9
            run["fraction_of_matmul"] = run["gflops"] / matmul_gflops
            runs["channels_last" if channels_last else "contiguous"] = run
            report(
                f"  {name:9s} {'channels_last' if channels_last else 'contiguous':13s} "
                f"{run['images_per_s']:8.0f} images/s  {run['gflops']:7.1f} GFLOP/s  "
                f"{run['fraction_of_matmul']:5.1%} of matmul"
            )
        results[name] = {"train_gflop_per_step": flops / 1e9, "params": sum(p.numel() for p in build_model(name).parameters()), **runs}
        if len(runs) == 2:
            results[name]["channels_last_speedup"] = runs["channels_last"]["images_per_s"] / runs["contiguous"]["images_per_s"]
    return results


# ---------------------------------------------------------------------------
# Project data path against the usual recipe


def timed_epoch_images_per_s(trainer: Trainer) -> float:
    """Train one warm-up epoch, then return the images/s of the next epoch's training pass (validation excluded)."""
    trainer.train_epoch()
    clock = StepClock(trainer.device)
    clock.start()
    trainer.train_epoch(progress=clock)
    return len(trainer.train_set) / clock.seconds()


def batches_only_images_per_s(batches: Callable[[], Any], images: int) -> float:
    """Images/s of iterating one epoch of batches, with no model."""
    started = time.perf_counter()
    for _ in batches():
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
    data = subset(bundle, settings.recipe_images, settings.batch_size)
    mean = channel_mean(bundle.mean_image)
    config = TrainConfig(
        model=name,
        model_kwargs=kwargs,
        batch_size=settings.batch_size,
        epochs=2,
        early_stopping=False,
        augment=True,
        device=str(device),
    )
    augment = usual_transform(mean, augment=True)
    arrays = ArrayImageDataset(data.x_train, data.y_train, augment)
    # A fixed random draw of JPEG files, as many as the in-memory runs train on.
    picks = np.random.default_rng(0).permutation(len(image_folder))[: settings.recipe_images].tolist()
    files = Subset(image_folder, picks)

    results: dict[str, Any] = {"model": name, "model_kwargs": kwargs, "images": settings.recipe_images}
    project = Trainer(config, data)
    results["project"] = timed_epoch_images_per_s(project)
    report(f"  {name}: project data path {results['project']:.0f} images/s (channels_last={project.channels_last})")
    if project.channels_last:
        results["project_contiguous"] = timed_epoch_images_per_s(Trainer(dataclasses.replace(config, channels_last=False), data))
        report(f"  {name}: project data path, contiguous {results['project_contiguous']:.0f} images/s")

    usual = use_usual_recipe(Trainer(config, data), LoaderSplit(arrays, True, settings.recipe_workers, device))
    results["usual"] = timed_epoch_images_per_s(usual)
    report(f"  {name}: usual recipe, in-memory images {results['usual']:.0f} images/s")
    folder = use_usual_recipe(Trainer(config, data), LoaderSplit(files, True, settings.recipe_workers, device))
    results["usual_image_folder"] = timed_epoch_images_per_s(folder)
    report(f"  {name}: usual recipe, ImageFolder JPEGs {results['usual_image_folder']:.0f} images/s")

    results["speedup_vs_usual"] = results["project"] / results["usual"]
    results["speedup_vs_image_folder"] = results["project"] / results["usual_image_folder"]
    return results


def measure_batches_only(
    bundle: DataBundle, settings: BenchSettings, device: torch.device, report: Callable[[str], None]
) -> dict[str, float]:
    """Images/s of each data path alone: the ceiling it puts on training throughput."""
    data = subset(bundle, settings.recipe_images, settings.batch_size)
    device_set = DeviceDataset(data.x_train, data.y_train, data.mean_image, device)
    generator = torch.Generator().manual_seed(0)
    loader = LoaderSplit(
        ArrayImageDataset(data.x_train, data.y_train, usual_transform(channel_mean(data.mean_image), augment=True)),
        True,
        settings.recipe_workers,
        device,
    )
    results = {
        "project": batches_only_images_per_s(
            lambda: device_set.train_batches(settings.batch_size, generator, True, True), settings.recipe_images
        ),
        "usual": batches_only_images_per_s(
            lambda: loader.train_batches(settings.batch_size, generator, True, True), settings.recipe_images
        ),
    }
    report(f"  batches only: project {results['project']:.0f} images/s, usual recipe {results['usual']:.0f} images/s")
    return results


# ---------------------------------------------------------------------------
# Tune trial against the plain loop


def measure_tune(bundle: DataBundle, settings: BenchSettings, work: Path, report: Callable[[str], None]) -> dict[str, Any]:
    # Ray's usage statistics would otherwise be sent to an external host; set before ray is imported.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from ray import tune

    from cifar_ray.tune.trainables import TRAINABLES, train_config_from_trial

    data = subset(bundle, settings.tune_images, settings.tune_val_images)
    trial_config = {
        **TUNE_MODEL,
        "epochs": settings.tune_epochs,
        "early_stopping": False,
        "augment": True,
        "batch_size": settings.batch_size,
        "seed": 0,
    }

    # The plain loop on one thread, as the trial gets one CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain = Trainer(dataclasses.replace(train_config_from_trial(trial_config), device="cpu"), data)
        plain_history = [plain.train_epoch() for _ in range(settings.tune_epochs)]
    finally:
        torch.set_num_threads(threads)
    plain_rate = statistics.mean(row["train_images_per_s"] for row in plain_history[1:])
    report(f"  plain loop, 1 thread: {plain_rate:.0f} train_images_per_s")

    class ResultClock(tune.Callback):
        """Records, in the driver, when each result arrives."""

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
            param_space=trial_config,
            tune_config=tune.TuneConfig(num_samples=1),
            run_config=tune.RunConfig(
                name="bench",
                storage_path=str(work / "tune"),
                stop={"training_iteration": settings.tune_epochs},
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
        raise RuntimeError(f"the benchmark's Tune trial failed: {grid.errors[0]}")
    if len(clock.results) != settings.tune_epochs:
        raise RuntimeError(f"expected {settings.tune_epochs} Tune results, the callback saw {len(clock.results)}")

    arrivals = [arrival for arrival, _ in clock.results]
    trial_history = [result for _, result in clock.results]
    trial_rate = statistics.mean(row["train_images_per_s"] for row in trial_history[1:])
    # Wall-clock images/s between consecutive results: includes Tune's own work between epochs.
    wall_rates = [len(data.y_train) / (later - earlier) for earlier, later in zip(arrivals, arrivals[1:])]
    plain_wall = statistics.mean(len(data.y_train) / row["epoch_time_s"] for row in plain_history[1:])
    results = {
        "model": TUNE_MODEL,
        "images": len(data.y_train),
        "val_images": len(data.y_val),
        "epochs": settings.tune_epochs,
        "plain_train_images_per_s": plain_rate,
        "trial_train_images_per_s": trial_rate,
        "throughput_ratio": trial_rate / plain_rate,
        "wall_clock_ratio": statistics.mean(wall_rates) / plain_wall,
        "ray_init_s": ray_init_s,
        "fit_s": fit_s,
        "first_result_s": arrivals[0] - fit_started,
        "startup_s": arrivals[0] - fit_started - trial_history[0]["epoch_time_s"],
    }
    report(
        f"  Tune trial, 1 CPU: {trial_rate:.0f} train_images_per_s (ratio {results['throughput_ratio']:.3f}), "
        f"start-up {results['startup_s']:.1f} s, ray.init {ray_init_s:.1f} s"
    )
    return results


# ---------------------------------------------------------------------------
# Report


def lookup(results: dict[str, Any], dotted: str) -> Any:
    value: Any = results
    for key in dotted.split("."):
        value = value[key]
    return value


def target_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, (key, minimum) in TARGETS.items():
        value = lookup(results, key)
        rows.append({"target": name, "measured": value, "required": f">= {minimum:g}", "status": "PASS" if value >= minimum else "FAIL"})
    for name, model in results["models"].items():
        if "channels_last" not in model:
            continue
        best = max(("channels_last", "contiguous"), key=lambda layout: model[layout]["fraction_of_matmul"])
        rows.append(
            {
                "target": f"training / matmul GFLOP/s, {name} ({best})",
                "measured": model[best]["fraction_of_matmul"],
                "required": "report",
                "status": "INFO",
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], machine: dict[str, Any], quick: bool) -> None:
    width = max(len(row["target"]) for row in rows)
    print()
    print(f"{'target':{width}s}  {'measured':>9s}  {'required':>8s}  status")
    for row in rows:
        print(f"{row['target']:{width}s}  {row['measured']:9.3f}  {row['required']:>8s}  {row['status']}")
    notes = []
    if quick:
        notes.append("--quick run: the sizes are tiny and the figures mean nothing")
    if machine["load_average_1min_start"] >= QUIET_LOAD or machine["load_average_1min_end"] >= QUIET_LOAD:
        notes.append(
            f"the 1-minute load average was {machine['load_average_1min_start']:.2f} at the start and "
            f"{machine['load_average_1min_end']:.2f} at the end: other work shared the cores, so the figures are distorted"
        )
    for note in notes:
        print(f"NOTE: {note}")


def main(args: argparse.Namespace) -> dict[str, Any]:
    if not args.data:
        raise SystemExit(f"error: no data set given; pass --data PATH or set {DATA_ENV} to the CIFAR-10 JPEG tree")
    data = Path(args.data).expanduser()
    if not (data / "train").is_dir() or not (data / "test").is_dir():
        raise SystemExit(f"error: {data} has no train/ and test/ class folders; point --data at the CIFAR-10 JPEG tree")
    settings = QUICK if args.quick else FULL
    device = select_device(args.device)
    machine = machine_info(device)
    began = time.perf_counter()

    def report(line: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f} s] {line}", flush=True)

    report(f"{machine['cpu']}, {machine['cpu_cores']} cores, torch {machine['torch']}, device {device}")
    work = Path(tempfile.mkdtemp(prefix="cifar-ray-bench-", dir=args.work_dir))
    results: dict[str, Any] = {"settings": dataclasses.asdict(settings), "quick": args.quick, "machine": machine}
    try:
        results["matmul"] = measure_matmul(device, settings)
        report(f"matmul {results['matmul']['size']}x{results['matmul']['size']}: {results['matmul']['gflops_median']:.1f} GFLOP/s (median)")

        source = data
        if settings.loading_per_class is not None:
            source = link_subset_tree(data, work / "tree", settings.loading_per_class)
        bundle, results["loading"] = measure_loading(source, work)
        report(
            f"loading {results['loading']['images']} images: cold {results['loading']['cold_s']:.1f} s, "
            f"cached {results['loading']['cached_s']:.2f} s"
        )

        report(f"models: {settings.warmup_steps} warm-up + {settings.timed_steps} timed steps at batch {settings.batch_size}")
        results["models"] = measure_models(bundle, settings, device, results["matmul"]["gflops_median"], report)

        report(f"data path against the usual recipe: {settings.recipe_images} images per timed epoch")
        image_folder = torchvision.datasets.ImageFolder(str(source / "train"), transform=usual_transform(channel_mean(bundle.mean_image), augment=True))
        results["recipes"] = {
            name: measure_recipe_pair(name, kwargs, bundle, image_folder, settings, device, report)
            for name, kwargs in (SMALL_CNN, FCNN3)
        }
        results["recipes"]["batches_only"] = measure_batches_only(bundle, settings, device, report)

        report(f"Tune trial against the plain loop: {settings.tune_epochs} epochs of {settings.tune_images} images")
        results["tune"] = measure_tune(bundle, settings, work, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    machine["load_average_1min_end"] = os.getloadavg()[0]
    results["total_s"] = time.perf_counter() - began
    results["targets"] = target_rows(results)
    io.write_json(args.out, results)
    print_table(results["targets"], machine, args.quick)
    print(f"total {results['total_s']:.0f} s; every figure is in {args.out}")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
