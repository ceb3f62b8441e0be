"""Saved models: weights together with everything needed to use them on new images.

A model file contains the architecture name and dimensions, the weights, the
mean image, the class names, the input size and both configs. It contains only
tensors and plain Python values, so it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cifar_ray import io
from cifar_ray.model_card import write_model_card
from cifar_ray.models import build_architecture

FORMAT_VERSION = 1


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    model_name: str,
    model_kwargs: dict[str, Any],
    class_names: list[str],
    mean_image: np.ndarray,
    image_size: int,
    train_config: Any = None,
    data_config: Any = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a self-describing model file atomically, with its model card (see cifar_ray.model_card) beside it."""
    payload = {
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "model_kwargs": dict(model_kwargs),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "class_names": list(class_names),
        "mean_image": torch.from_numpy(np.asarray(mean_image, dtype=np.float32)),
        "image_size": int(image_size),
        "train_config": _plain(train_config),
        "data_config": _plain(data_config),
        "metrics": _plain(metrics),
    }
    written = io.atomic_write(path, lambda tmp: torch.save(payload, tmp))
    write_model_card(written, model, payload)
    return written


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a model file written by `save_model`; return the model (in eval mode) and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found; pass the model.pt written by `cifar-ray train` or a sweep")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors for damaged files
        raise ValueError(f"model file {path} could not be read ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or "model_name" not in payload:
        raise ValueError(f"{path} is not a cifar-ray model file (no model_name entry)")
    # The saved state_dict replaces any starting weights, so a fine-tuned
    # pretrained backbone loads without its ImageNet file.
    model = build_architecture(
        payload["model_name"],
        num_classes=len(payload["class_names"]),
        image_size=payload["image_size"],
        **payload["model_kwargs"],
    )
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    metadata = {k: v for k, v in payload.items() if k != "state_dict"}
    metadata["mean_image"] = payload["mean_image"].cpu().numpy()
    return model, metadata


def _plain(value: Any) -> Any:
    """Convert dataclasses and numpy values into types that `weights_only` loading accepts."""
    if value is None:
        return None
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
