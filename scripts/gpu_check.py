"""Check in one run that the training paths are ready for a CUDA GPU, and measure them.

    python scripts/gpu_check.py                      # synthetic images, JSON to results/gpu_check.json
    python scripts/gpu_check.py --data ../shared/datasets/cifar10-jpeg

Checks, in order:

1. device placement: the Trainer picks `cuda` when a GPU is visible, and the
   model and the on-device data set live there;
2. host-to-device copies: counts the synchronising CUDA operations per training
   step (torch's sync debug mode), with and without augmentation;
3. mixed precision (`TrainConfig.amp`): bfloat16 autocast where the GPU
   supports it, else float16 with a GradScaler; on the CPU it must change nothing;
4. channels_last: convolution weights and batches use the NHWC layout, fully
   connected nets keep the default one; images/s with and without it;
5. a few training steps of every model family, images/s for each;
6. a one-epoch Tune sweep with --gpus-per-trial 0.5, so two trials share the GPU.

Images are random unless --data is given, so the accuracies mean nothing and
the figures are throughput. Without a GPU the script prints that no GPU is
visible, runs the checks that apply to the CPU (1, 3, 4, 5), marks the others
skipped and exits 0. The exit status is 1 when a check that ran failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from cifar_ray import io
from cifar_ray.config import DataConfig, TrainConfig
from cifar_ray.data import DataBundle, prepare_data
from cifar_ray.engine import Trainer, select_device

REPO = Path(__file__).resolve().parent.parent

# One registered model per family. The pretrained backbone is built without
# its ImageNet weights, which a GPU machine may not have cached.
FAMILY_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "fcnn": ("fcnn2", {}),
    "cnn": ("cnn2", {}),
    "resnet": ("resnet", {}),
    "pretrained": ("mobilenet_v3_small_pretrained", {"weights": None}),
}
CONV_MODEL = "cnn2"
DENSE_MODEL = "fcnn2"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# torch's sync debug mode emits this warning for every operation that blocks the CPU until the GPU catches up.
SYNC_WARNING = "called a synchronizing CUDA operation"


@dataclasses.dataclass
class Check:
    """Outcome of one check: pass, fail, warn (works, but slower than it could be) or skipped."""

    name: str
    status: str = "pass"
    detail: str = ""
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0  # wall time of the check

    def fail(self, detail: str) -> None:
        self.status = "fail"
        self.detail = detail

    def expect(self, condition: bool, detail: str) -> None:
        """Mark the check failed with `detail` unless `condition` is true; the first failure's detail is kept."""
        if not condition and self.status != "fail":
            self.fail(detail)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="CIFAR-10 folder or class-folder tree; default: random images")
    parser.add_argument("--steps", type=int, help="optimiser steps per measurement (default 30 on a GPU, 3 on the CPU)")
    parser.add_argument("--batch-size", type=int, help="images per step (default 128 on a GPU, 32 on the CPU)")
    parser.add_argument("--json", default="results/gpu_check.json", help="where the results are written")
    parser.add_argument("--skip-tune", action="store_true", help="skip the Tune sweep (check 6)")
    parser.add_argument("--tune-timeout", type=float, default=420, help="seconds the Tune sweep may take (default 420)")
    return parser


def synthetic_bundle(train_images: int, val_images: int, image_size: int = 32, seed: int = 0) -> DataBundle:
    """Random uint8 images with cycling labels, in the layout prepare_data returns."""
    generator = np.random.default_rng(seed)

    def split(count: int) -> tuple[np.ndarray, np.ndarray]:
        images = generator.integers(0, 256, (count, image_size, image_size, 3), dtype=np.uint8)
        return images, np.arange(count, dtype=np.int64) % len(CLASS_NAMES)

    x_train, y_train = split(train_images)
    x_val, y_val = split(val_images)
    x_test, y_test = split(val_images)
    return DataBundle(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        mean_image=(x_train.mean(axis=0) / 255.0).astype(np.float32),
        class_names=CLASS_NAMES,
        source="random",
        kind="synthetic",
        image_size=image_size,
    )


def real_bundle(data: str, train_images: int, val_images: int) -> DataBundle:
    bundle = prepare_data(DataConfig(data=data, train_subset=train_images, download=False))
    return dataclasses.replace(bundle, x_val=bundle.x_val[:val_images], y_val=bundle.y_val[:val_images])


def train_config(model: str, model_kwargs: dict[str, Any], batch_size: int, **overrides: Any) -> TrainConfig:
    # Early stopping off and a high epoch limit, so that every requested epoch runs.
    return TrainConfig(
        model=model, model_kwargs=model_kwargs, batch_size=batch_size, epochs=100, early_stopping=False, **overrides
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_epoch(trainer: Trainer) -> tuple[dict[str, Any], float]:
    """Run one epoch and return its metrics and training images per second (the short validation pass included)."""
    synchronize(trainer.device)
    started = time.perf_counter()
    metrics = trainer.train_epoch()
    synchronize(trainer.device)
    return metrics, len(trainer.train_set) / (time.perf_counter() - started)


def measure(config: TrainConfig, bundle: DataBundle) -> dict[str, Any]:
    """Build a Trainer, run a warm-up epoch (cuDNN autotuning, lazy CUDA init), then a timed one."""
    trainer = Trainer(config, bundle)
    timed_epoch(trainer)
    metrics, images_per_s = timed_epoch(trainer)
    return {"images_per_s": round(images_per_s, 1), "train_loss": metrics["train_loss"], "trainer": trainer}


def check_device(bundle: DataBundle, batch_size: int, cuda: bool) -> Check:
    check = Check("device placement")
    expected = "cuda" if cuda else "cpu"
    trainer = Trainer(train_config(CONV_MODEL, {}, batch_size), bundle)
    parameter_devices = {parameter.device.type for parameter in trainer.model.parameters()}
    check.figures = {"trainer_device": str(trainer.device), "parameters_on": sorted(parameter_devices)}
    check.expect(trainer.device.type == expected, f"Trainer picked {trainer.device}, expected {expected}")
    check.expect(parameter_devices == {expected}, f"model parameters on {sorted(parameter_devices)}, expected {expected}")
    check.expect(
        trainer.train_set.images.device.type == expected,
        f"training images on {trainer.train_set.images.device}, expected {expected}",
    )
    if not cuda:
        # Asking for a GPU that is not there must fail with a message, not fall back silently.
        try:
            select_device("cuda")
            check.fail("select_device('cuda') returned a device although no GPU is visible")
        except ValueError as error:
            check.figures["cuda_request_error"] = str(error)
    return check


def count_syncs(trainer: Trainer) -> int:
    """Run one epoch under torch's sync debug mode and count the synchronising operations."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.synchronize(trainer.device)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_epoch()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum(SYNC_WARNING in str(warning.message) for warning in caught)


def check_host_to_device(bundle: DataBundle, batch_size: int, steps: int, cuda: bool) -> Check:
    check = Check("host-to-device copies")
    if not cuda:
        check.status = "skipped"
        check.detail = "needs a CUDA GPU"
        return check

    # The data set is copied to the GPU once. Per step, only the augmentation
    # offsets drawn by the seeded CPU generator cross over. The validation
    # pass, the loss check every 50 steps and the epoch's .item() calls add a
    # handful of synchronisations per epoch, not per step.
    per_step = {}
    for augment in (False, True):
        trainer = Trainer(train_config(CONV_MODEL, {}, batch_size, augment=augment), bundle)
        trainer.train_epoch()  # warm-up outside the count
        per_step[augment] = count_syncs(trainer) / steps
    check.figures = {"syncs_per_step": per_step[False], "syncs_per_step_augmented": per_step[True]}
    check.expect(per_step[False] < 0.5, f"{per_step[False]:.2f} synchronising operations per step without augmentation")
    if check.status == "pass" and per_step[True] >= 0.5:
        check.status = "warn"
        check.detail = (
            f"{per_step[True]:.2f} synchronising operations per augmented step: random_crop_flip in "
            "cifar_ray/data/loader.py copies its CPU-drawn offsets and flips with blocking .to(device)"
        )
    return check


def check_amp(bundle: DataBundle, batch_size: int, cuda: bool) -> Check:
    check = Check("mixed precision (amp)")
    output_dtypes: list[torch.dtype] = []

    def record_dtype(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        output_dtypes.append(output.dtype)

    results = {}
    for amp in (False, True):
        output_dtypes.clear()
        trainer = Trainer(train_config(CONV_MODEL, {}, batch_size, amp=amp), bundle)
        first_conv = next(module for module in trainer.model.modules() if isinstance(module, nn.Conv2d))
        handle = first_conv.register_forward_hook(record_dtype)
        trainer.train_epoch()  # warm-up, which also records the convolution's output dtype
        handle.remove()
        metrics, images_per_s = timed_epoch(trainer)
        results[amp] = {
            "trainer": trainer,
            "metrics": metrics,
            "images_per_s": round(images_per_s, 1),
            "conv_dtype": str(output_dtypes[0]).removeprefix("torch."),
        }

    amp_trainer = results[True]["trainer"]
    check.figures = {
        "use_amp": amp_trainer.use_amp,
        "conv_output_dtype": results[True]["conv_dtype"],
        "grad_scaler": amp_trainer.scaler.is_enabled(),
        "images_per_s_fp32": results[False]["images_per_s"],
        "images_per_s_amp": results[True]["images_per_s"],
    }
    if cuda:
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        check.expect(amp_trainer.use_amp, "TrainConfig.amp=True did not enable autocast on the GPU")
        check.expect(
            results[True]["conv_dtype"] == str(expected).removeprefix("torch."),
            f"convolutions ran in {results[True]['conv_dtype']} under amp, expected {expected}",
        )
        check.expect(
            amp_trainer.scaler.is_enabled() == (expected == torch.float16),
            "the GradScaler should be on exactly when autocast uses float16",
        )
        check.expect(math.isfinite(results[True]["metrics"]["train_loss"]), "non-finite training loss under amp")
    else:
        check.expect(not amp_trainer.use_amp, "amp enabled autocast on the CPU")
        check.expect(not amp_trainer.scaler.is_enabled(), "amp enabled the GradScaler on the CPU")
        check.expect(results[True]["conv_dtype"] == "float32", f"amp ran convolutions in {results[True]['conv_dtype']} on the CPU")
        # Same seed, same device: amp must be a no-op, so the epochs match.
        for key in ("train_loss", "val_loss", "val_accuracy"):
            fp32, amp = results[False]["metrics"][key], results[True]["metrics"][key]
            check.expect(math.isclose(fp32, amp, rel_tol=1e-5, abs_tol=1e-6), f"{key} {fp32} without amp, {amp} with it")
    return check


def check_channels_last(bundle: DataBundle, batch_size: int) -> Check:
    check = Check("channels_last")
    conv = Trainer(train_config(CONV_MODEL, {}, batch_size), bundle)
    weight = next(module.weight for module in conv.model.modules() if isinstance(module, nn.Conv2d))
    images, _ = next(conv.train_set.train_batches(batch_size, torch.Generator().manual_seed(0), False, True))
    dense = Trainer(train_config(DENSE_MODEL, {}, batch_size), bundle)
    check.expect(conv.channels_last, f"{CONV_MODEL} does not use channels_last")
    check.expect(weight.is_contiguous(memory_format=torch.channels_last), "convolution weights are not channels_last")
    check.expect(images.is_contiguous(memory_format=torch.channels_last), "training batches are not channels_last")
    check.expect(not dense.channels_last, f"{DENSE_MODEL} has no convolution but was switched to channels_last")

    with_layout = measure(train_config(CONV_MODEL, {}, batch_size, channels_last=True), bundle)
    without = measure(train_config(CONV_MODEL, {}, batch_size, channels_last=False), bundle)
    check.figures = {
        "model": CONV_MODEL,
        "images_per_s_channels_last": with_layout["images_per_s"],
        "images_per_s_contiguous": without["images_per_s"],
    }
    return check


def check_families(bundle: DataBundle, batch_size: int, cuda: bool) -> Check:
    check = Check("training steps per family")
    for family, (model, kwargs) in FAMILY_MODELS.items():
        figures = {"model": model}
        for amp in (False, True) if cuda else (False,):
            try:
                result = measure(train_config(model, kwargs, batch_size, amp=amp), bundle)
            except Exception as error:  # one broken family must not hide the others' figures
                check.expect(False, f"{model}: {type(error).__name__}: {error}")
                figures["error"] = f"{type(error).__name__}: {error}"
                break
            figures["images_per_s_amp" if amp else "images_per_s"] = result["images_per_s"]
            figures["params"] = result["trainer"].params["total"]
            check.expect(math.isfinite(result["train_loss"]), f"{model}: non-finite training loss")
        check.figures[family] = figures
    return check


def write_random_tree(root: Path, per_class: int, test_per_class: int) -> Path:
    """Write a train/ and test/ tree of random 32x32 JPEGs, for the Tune sweep when no --data is given."""
    generator = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for name in CLASS_NAMES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = generator.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:04d}.jpg", quality=90)
    return root


def check_tune(data: str | None, timeout_s: float, cuda: bool, skip: bool) -> Check:
    check = Check("Tune sweep, --gpus-per-trial 0.5")
    if skip or not cuda:
        check.status = "skipped"
        check.detail = "--skip-tune was given" if skip else "needs a CUDA GPU"
        return check

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as temp:
        temp_path = Path(temp)
        data_path = data or str(write_random_tree(temp_path / "data", per_class=100, test_per_class=10))
        out = temp_path / "out"
        command = [
            sys.executable, str(REPO / "sweeps" / "cnn_search.py"),
            "--data", data_path, "--out", str(out), "--cache-dir", str(temp_path / "cache"),
            "--profile", "smoke", "--gpus-per-trial", "0.5",
            "--num-samples", "2", "--max-epochs", "1", "--grace-period", "1", "--final-epochs", "1",
            "--search-subset", "500", "--final-subset", "500", "--top-k", "1", "--no-analysis",
        ]  # fmt: skip
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        started = time.perf_counter()
        try:
            result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            check.fail(f"the sweep did not finish within {timeout_s:.0f} s")
            return check
        check.figures["wall_s"] = round(time.perf_counter() - started, 1)
        if result.returncode != 0:
            last_line = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            check.fail(f"sweep exited with {result.returncode}: {last_line}")
            check.figures["stderr_tail"] = result.stderr[-2000:]
            return check

        check.expect("0.5 GPU per trial" in result.stdout, "the sweep did not report 0.5 GPU per trial")
        devices = sorted({io.read_json(path).get("device") for path in (out / "models").glob("*.metrics.json")})
        check.figures["final_model_devices"] = devices
        check.expect(bool(devices) and all(str(d).startswith("cuda") for d in devices), f"final trial trained on {devices}")
        history = pd.read_parquet(out / "history.parquet")
        check.figures["trial_images_per_s"] = round(float(history["train_images_per_s"].mean()), 1)
    return check


def environment() -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(0),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    else:
        info["cpu_threads"] = torch.get_num_threads()
    return info


def print_check(check: Check) -> None:
    detail = f": {check.detail}" if check.detail else ""
    print(f"[{check.status.upper():7}] {check.name} ({check.seconds:.1f} s){detail}", flush=True)
    for key, value in check.figures.items():
        if key in ("stderr_tail", "cuda_request_error"):
            continue
        print(f"          {key}: {value}")


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    cuda = torch.cuda.is_available()
    steps, batch_size = (30, 128) if cuda else (3, 32)
    if args.steps is not None:
        steps = args.steps
    if args.batch_size is not None:
        batch_size = args.batch_size
    if steps < 1 or batch_size < 2:
        print(f"error: --steps must be at least 1 and --batch-size at least 2, got {steps} and {batch_size}", file=sys.stderr)
        return 2

    if cuda:
        print(f"CUDA GPU visible: {torch.cuda.get_device_name(0)}; running every check.")
    else:
        print(
            "No CUDA GPU is visible (torch.cuda.is_available() is False). Running the CPU checks only: "
            "device placement, amp as a no-op, channels_last and the training steps. "
            "The host-to-device and Tune checks are skipped."
        )
    print(f"{steps} steps of {batch_size} images per measurement, on {'the data in ' + args.data if args.data else 'random images'}\n")

    # Each timed epoch ends with a validation pass, kept to one batch so that
    # the images/s figures are nearly all training.
    train_images = steps * batch_size
    if args.data:
        bundle = real_bundle(args.data, train_images, batch_size)
    else:
        bundle = synthetic_bundle(train_images, batch_size)
    # NOTE: a training subset smaller than requested (a small --data tree) gives fewer steps than --steps.
    steps = math.ceil(len(bundle.y_train) / batch_size)

    checks: list[Callable[[], Check]] = [
        lambda: check_device(bundle, batch_size, cuda),
        lambda: check_host_to_device(bundle, batch_size, steps, cuda),
        lambda: check_amp(bundle, batch_size, cuda),
        lambda: check_channels_last(bundle, batch_size),
        lambda: check_families(bundle, batch_size, cuda),
        lambda: check_tune(args.data, args.tune_timeout, cuda, args.skip_tune),
    ]
    results = []
    for run_check in checks:
        started = time.perf_counter()
        check = run_check()
        check.seconds = round(time.perf_counter() - started, 1)
        print_check(check)
        results.append(check)

    failed = [check.name for check in results if check.status == "fail"]
    report = {
        "environment": environment(),
        "steps": steps,
        "batch_size": batch_size,
        "data": args.data or "random",
        "checks": [dataclasses.asdict(check) for check in results],
        "failed": failed,
    }
    path = io.write_json(args.json, report)
    print(f"\n{len(results) - len(failed)} of {len(results)} checks without failure; results in {path}")
    if not cuda:
        print("No CUDA GPU was visible: run this script on a GPU machine for the CUDA checks.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
