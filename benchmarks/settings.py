"""Sizes of a benchmark run: the full run and the one-minute dry run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchSettings:
    """Sizes of one benchmark run. Image counts are training images per epoch."""

    batch_size: int = 32  # images per optimiser step, the study's batch size
    warmup_steps: int = 3  # steps per model before the timer starts
    timed_steps: int = 5  # steps timed per model and memory layout
    matmul_size: int = 2048  # side of the square float32 matrices (doubled on a GPU)
    matmul_seconds: float = 2.0  # minimum time spent in timed matrix multiplies
    recipe_images: int = 8000  # images per timed epoch in the data path comparison
    recipe_workers: int = 2  # DataLoader worker processes of the usual recipe
    tune_images: int = 8000  # images per epoch in the Tune comparison
    tune_val_images: int = 500  # validation images per epoch in the Tune comparison
    tune_epochs: int = 3  # epochs per run in the Tune comparison; the first is warm-up
    loading_per_class: int | None = None  # None: load the whole data set; else link this many images per class


FULL = BenchSettings()

# Just enough work to run every code path once; its figures mean nothing.
QUICK = BenchSettings(
    warmup_steps=1,
    timed_steps=1,
    matmul_size=1024,
    matmul_seconds=0.3,
    recipe_images=640,
    tune_images=640,
    tune_val_images=64,
    tune_epochs=2,
    loading_per_class=220,  # 2,200 training files: enough for prepare_data's parallel decoding
)
