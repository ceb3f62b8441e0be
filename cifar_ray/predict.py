"""Classifying new image files with a saved model.

Images go through the training pipeline's own steps: `decode_image` (EXIF
orientation, RGB conversion, bilinear resize to the model's `image_size`) and
`DeviceDataset.normalise` (scale to [0, 1], subtract the saved mean image).
A file that cannot be decoded is skipped with its reason; the rest are still
classified.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cifar_ray.checkpoint import load_model
from cifar_ray.data.images import SkippedFile, decode_image
from cifar_ray.data.loader import DeviceDataset
from cifar_ray.engine import select_device

logger = logging.getLogger(__name__)


def find_image_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a list of files, folders recursively and in sorted order.

    Every file in a folder is returned, whatever its extension, so that a
    mislabelled image is still classified and anything else is reported as
    skipped. Hidden files and folders (names starting with ".") are left out.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            for folder, subfolders, filenames in os.walk(path):
                subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
                files += [Path(folder) / name for name in sorted(filenames) if not name.startswith(".")]
        else:
            raise FileNotFoundError(f"input {path} not found; pass existing image files or folders")
    return files


def predict_images(
    model: str | os.PathLike | tuple[nn.Module, dict[str, Any]],
    inputs: Sequence[str | os.PathLike],
    top_k: int = 3,
    batch_size: int = 256,
    device: str | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, list[SkippedFile]]:
    """Classify every image file in `inputs` (files or folders).

    `model` is a model file written by `save_model`, or the (model, metadata)
    pair that `load_model` returns (the model is moved to `device`). Returns
    one row per classified file, with columns path, predicted_class,
    probability and top1_class, top1_probability ... topK_class,
    topK_probability, and the list of skipped files with their reasons.
    `workers` threads decode images (default: one per CPU core). `progress`,
    when given, is called with the number of files of each finished batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    torch_device = select_device(device)
    network, metadata = load_model(model, torch_device) if isinstance(model, (str, os.PathLike)) else model
    network = network.to(torch_device).eval()
    class_names = list(metadata["class_names"])
    if not 1 <= top_k <= len(class_names):
        raise ValueError(f"top_k must lie between 1 and the model's {len(class_names)} classes, got {top_k}")
    image_size = int(metadata["image_size"])
    mean_image = np.asarray(metadata["mean_image"], dtype=np.float32)

    files = find_image_files(inputs)
    if not files:
        raise ValueError(f"no files found in {', '.join(str(p) for p in inputs)}")
    logger.info("classifying %d files with %s on %s", len(files), metadata["model_name"], torch_device)

    rows: list[dict[str, Any]] = []
    skipped: list[SkippedFile] = []
    # PIL releases the GIL while decoding and resizing, so threads decode in parallel.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for start in range(0, len(files), batch_size):
            batch_files = files[start : start + batch_size]
            decoded = list(pool.map(lambda path: _try_decode(path, image_size), batch_files))
            readable = [(path, image) for path, image in zip(batch_files, decoded) if isinstance(image, np.ndarray)]
            for path, result in zip(batch_files, decoded):
                if isinstance(result, str):
                    skipped.append(SkippedFile(str(path), result))
                    logger.warning("skipped %s: %s", path, result)

            if readable:
                images = np.stack([image for _, image in readable])
                probabilities = _predict_probabilities(network, images, mean_image, torch_device)
                rows += _prediction_rows([path for path, _ in readable], probabilities, class_names, top_k)
            if progress is not None:
                progress(len(batch_files))

    logger.info("classified %d of %d files, skipped %d", len(rows), len(files), len(skipped))
    return pd.DataFrame(rows, columns=_columns(top_k)), skipped


def _try_decode(path: Path, image_size: int) -> np.ndarray | str:
    """Return the decoded image, or the reason it could not be decoded."""
    try:
        return decode_image(str(path), image_size)
    except ValueError as error:
        return str(error)
    except OSError as error:  # unreadable file: permissions, removed while running
        return f"could not be read ({error.strerror or error})"


@torch.no_grad()
def _predict_probabilities(
    network: nn.Module, images: np.ndarray, mean_image: np.ndarray, device: torch.device
) -> np.ndarray:
    # The training data path's normalisation, so prediction inputs match training inputs exactly.
    dataset = DeviceDataset(images, np.zeros(len(images), dtype=np.int64), mean_image, device)
    batch = dataset.normalise(dataset.images, channels_last=False)
    return torch.softmax(network(batch).float(), dim=1).cpu().numpy()


def _prediction_rows(
    paths: Iterable[Path], probabilities: np.ndarray, class_names: list[str], top_k: int
) -> list[dict[str, Any]]:
    # Stable sort, so ties keep the class order.
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    rows = []
    for path, probs, ranked in zip(paths, probabilities, order):
        row: dict[str, Any] = {
            "path": str(path),
            "predicted_class": class_names[ranked[0]],
            "probability": float(probs[ranked[0]]),
        }
        for rank, index in enumerate(ranked, start=1):
            row[f"top{rank}_class"] = class_names[index]
            row[f"top{rank}_probability"] = float(probs[index])
        rows.append(row)
    return rows


def _columns(top_k: int) -> list[str]:
    columns = ["path", "predicted_class", "probability"]
    for rank in range(1, top_k + 1):
        columns += [f"top{rank}_class", f"top{rank}_probability"]
    return columns
