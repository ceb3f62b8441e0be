"""Training-speed benchmark of cifar-ray on the current device, in one command.

Measures, in one run:
  1. training images/s of each of the nine study models at their full widths,
     over a fixed number of steps after warm-up. The training GFLOP/s this
     reaches (forward and backward FLOPs counted by torch.utils.flop_counter)
     is given as a fraction of the device's float32 matrix-multiply GFLOP/s,
     measured in the same run. Convolutional models run with channels_last on
     and off;
  2. the project's data path (Trainer and DeviceDataset, augment=True) against
     the usual recipe (per-sample PIL transforms in a 2-worker DataLoader, from
     the in-memory images and from the JPEG files through ImageFolder), for a
     small CNN (cnn2, filters [32, 64]) and the 3-layer fully connected net;
  3. a Tune trial (1 CPU) against the plain training loop (1 thread) on the
     same model and data: throughput ratio and trial start-up time;
  4. loading the whole data set cold (decoding every JPEG) and from the cache.

It prints the targets with PASS/FAIL and writes every figure as JSON. The full
run is sized for about 10 minutes on 2 CPU cores. On a 2-core AMD EPYC it took
390 s while another process held one core. `--quick` is sized for about one
minute and only checks that every part works, so its figures mean nothing.
BENCHMARKS.md contains the measured figures and their machine.

    CIFAR_RAY_DATA=../shared/datasets/cifar10-jpeg .venv/bin/python -m benchmarks.bench --out results/benchmark.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torchvision

if __package__ in (None, ""):
    # Run as a script (python benchmarks/bench.py): make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.data_path import link_subset_tree, measure_loading, measure_recipes
from benchmarks.harness import OtherLoad
from benchmarks.settings import FULL, QUICK
from benchmarks.throughput import measure_matmul, measure_models
from benchmarks.tune_overhead import measure_tune
from cifar_ray import io
from cifar_ray.data import DATA_ENV
from cifar_ray.engine import select_device

# Target name: (dotted key in the results, required minimum).
TARGETS = {
    "data path / usual recipe, cnn2 [32, 64]": ("recipes.cnn2.speedup_vs_usual", 1.5),
    "data path / usual recipe, fcnn3": ("recipes.fcnn3.speedup_vs_usual", 3.0),
    "Tune trial / plain loop, train_images_per_s": ("tune.throughput_ratio", 0.95),
}
# A machine is quiet when its 1-minute load average is below QUIET_LOAD before the run starts
# and other processes use fewer than QUIET_OTHER_CORES cores on average during each part.
QUIET_LOAD = 1.5
QUIET_OTHER_CORES = 0.25


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Training-speed benchmark of cifar-ray on the current device; see BENCHMARKS.md."
    )
    parser.add_argument(
        "--data",
        default=os.environ.get(DATA_ENV),
        help=f"CIFAR-10 JPEG tree with train/<class>/ and test/<class>/ (default: ${DATA_ENV})",
    )
    parser.add_argument("--out", default="results/benchmark.json", help="JSON file for every figure (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="one-minute dry run at tiny sizes; its figures mean nothing")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the GPU when there is one)")
    parser.add_argument(
        "--work-dir",
        default=None,
        help="parent folder of the run's temporary cache, tree and Tune results, removed afterwards "
        "(default: the system's temp folder)",
    )
    return parser


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


def lookup(results: dict[str, Any], dotted: str) -> Any:
    value: Any = results
    for key in dotted.split("."):
        value = value[key]
    return value


def target_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """List the targets with PASS/FAIL, then the CNNs' training / matmul GFLOP/s, which has no threshold."""
    rows = []
    for name, (key, minimum) in TARGETS.items():
        value = lookup(results, key)
        status = "PASS" if value >= minimum else "FAIL"
        rows.append({"target": name, "measured": value, "required": f">= {minimum:g}", "status": status})
    for name, model in results["models"].items():
        if "channels_last_speedup" not in model:
            continue
        for layout in ("channels_last", "contiguous"):
            rows.append(
                {
                    "target": f"training / matmul GFLOP/s, {name}, {layout}",
                    "measured": model[layout]["fraction_of_matmul"],
                    "required": "report",
                    "status": "INFO",
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
    width = max(len(row["target"]) for row in rows)
    print()
    print(f"{'target':{width}s}  {'measured':>9s}  {'required':>8s}  status")
    for row in rows:
        print(f"{row['target']:{width}s}  {row['measured']:9.3f}  {row['required']:>8s}  {row['status']}")

    if results["quick"]:
        print("NOTE: --quick run: the sizes are tiny and the figures mean nothing")
    start_load = results["machine"]["load_average_1min_start"]
    if start_load >= QUIET_LOAD:
        print(f"NOTE: the 1-minute load average was {start_load:.2f} at the start (quiet: below {QUIET_LOAD})")
    # The Tune part is left out: its Ray processes count as other processes.
    busy = {
        name: cores
        for name, cores in results["other_processes_cores"].items()
        if name != "tune" and cores is not None and cores >= QUIET_OTHER_CORES
    }
    if busy or start_load >= QUIET_LOAD:
        listed = ", ".join(f"{name} {cores:.2f}" for name, cores in busy.items()) or "none above the limit"
        print(f"NOTE: other work shared the cores (cores used by other processes per part: {listed}); the figures are distorted")


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
    results: dict[str, Any] = {
        "settings": dataclasses.asdict(settings),
        "quick": args.quick,
        "machine": machine,
        "load_average_1min_at_section_start": {},
        "other_processes_cores": {},
    }

    @contextlib.contextmanager
    def section(name: str, title: str) -> Iterator[None]:
        """Report a part's start and the cores other processes used during it; save the results after it."""
        results["load_average_1min_at_section_start"][name] = os.getloadavg()[0]
        report(title)
        other = OtherLoad()
        yield
        cores = results["other_processes_cores"][name] = other.cores()
        if cores is not None:
            report(f"  other processes kept {cores:.2f} cores busy during this part")
        # Saved after every part, so that an interrupted run keeps the figures it has.
        io.write_json(args.out, results)

    try:
        with section("matmul", "float32 matmul peak"):
            matmul = results["matmul"] = measure_matmul(device, settings)
            report(f"  {matmul['size']}x{matmul['size']}: {matmul['gflops_max']:.1f} GFLOP/s peak, {matmul['gflops_median']:.1f} median")

        # The quick run loads a linked subset of the tree, so that decoding takes seconds.
        source = data
        if settings.loading_per_class is not None:
            source = link_subset_tree(data, work / "tree", settings.loading_per_class)
        with section("loading", f"loading {source}, cold and cached"):
            bundle, loading = measure_loading(source, work / "cache")
            results["loading"] = loading
            report(f"  {loading['images']} images: cold {loading['cold_s']:.1f} s, cached {loading['cached_s']:.2f} s")

        title = f"models: {settings.warmup_steps} warm-up + {settings.timed_steps} timed steps at batch {settings.batch_size}"
        with section("models", title):
            results["models"] = measure_models(bundle, settings, device, matmul["gflops_max"], report)

        with section("recipes", f"data path against the usual recipe: {settings.recipe_images} images per timed epoch"):
            results["recipes"] = measure_recipes(bundle, source / "train", settings, device, report)

        title = f"Tune trial against the plain loop: {settings.tune_epochs} epochs of {settings.tune_images} images"
        with section("tune", title):
            results["tune"] = measure_tune(bundle, settings, work / "tune", report)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    machine["load_average_1min_end"] = os.getloadavg()[0]
    results["total_s"] = time.perf_counter() - began
    results["targets"] = target_rows(results)
    io.write_json(args.out, results)
    print_table(results["targets"], results)
    print(f"total {results['total_s']:.0f} s; every figure is in {args.out}")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
