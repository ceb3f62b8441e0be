"""Exporting a saved model as one torch.export archive that serving code runs with torch alone.

The archive (written with `torch.export.save`, `.pt2` by convention) contains
the network, its weights and the mean image. Its input is what a decoder hands
over: a uint8 tensor of RGB images, (N, H, W, 3) with H = W = the model's
`image_size` and any N. Scaling to [0, 1] and the mean subtraction happen
inside, as in training. The output is the logits, (N, num_classes), and a
softmax turns them into probabilities.

Serving code still decodes, applies EXIF orientation, converts to RGB and
resizes to `image_size` (PIL, bilinear) as `cifar_ray.data.images.decode_image`
does, then loads and calls the archive:

    extra = {"cifar_ray.json": ""}
    model = torch.export.load("model.pt2", extra_files=extra).module()
    metadata = json.loads(extra["cifar_ray.json"])  # class_names, image_size, ...
    logits = model(torch.from_numpy(np.stack(images)))

torch.jit.trace would also work, but torch 2.14 marks it deprecated in favour
of torch.export.

NOTE: the archive is exported and checked on the CPU. Running it on a GPU
(moving the loaded module with `.to("cuda")`) has not been tested here.
"""

from __future__ import annotations

import json
import logging
import os
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.export import Dim

from cifar_ray import io
from cifar_ray.checkpoint import load_model

logger = logging.getLogger(__name__)

# Name of the JSON entry inside the archive that describes inputs, outputs and classes.
METADATA_ENTRY = "cifar_ray.json"

# Largest absolute logit difference accepted between the export and the original model.
_CHECK_TOLERANCE = 1e-4


class ServingModel(nn.Module):
    """uint8 RGB images (N, H, W, 3) in, logits (N, num_classes) out, with the training normalisation inside."""

    def __init__(self, model: nn.Module, mean_image: np.ndarray):
        super().__init__()
        self.model = model
        mean = torch.as_tensor(np.asarray(mean_image, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
        self.register_buffer("mean_image", mean.contiguous())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The same steps as DeviceDataset.normalise: [0, 1] scaling, then the per-pixel mean.
        batch = images.permute(0, 3, 1, 2).float().div(255.0).sub(self.mean_image)
        return self.model(batch)


def default_export_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".pt2")


def export_model(model_path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Export a model file written by `save_model` to a torch.export archive; return the archive's path.

    The export is run once against the original on a random batch and
    rejected when their logits differ by more than `_CHECK_TOLERANCE`.
    """
    model_path = Path(model_path)
    out_path = Path(out) if out else default_export_path(model_path)
    model, metadata = load_model(model_path, "cpu")
    serving = ServingModel(model, metadata["mean_image"]).eval()
    image_size = int(metadata["image_size"])

    # A batch of 2 as the example, with the batch dimension left dynamic.
    generator = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8, generator=generator)
    with torch.no_grad():
        program = torch.export.export(serving, (example,), dynamic_shapes={"images": {0: Dim.AUTO}})
        expected = serving(example)
        exported = program.module()(example)
    difference = (exported - expected).abs().max().item()
    if difference > _CHECK_TOLERANCE:
        raise RuntimeError(
            f"exported {model_path} differs from the original by up to {difference:.2e} in the logits "
            f"(tolerance {_CHECK_TOLERANCE:.0e}); the archive was not written"
        )

    # Saved to memory first: torch.export.save warns about any file name not ending in .pt2,
    # which includes the temporary file of the atomic write.
    buffer = BytesIO()
    torch.export.save(program, buffer, extra_files={METADATA_ENTRY: json.dumps(export_metadata(metadata))})
    io.atomic_write(out_path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    logger.info("exported %s to %s (max logit difference %.1e)", model_path, out_path, difference)
    return out_path


def export_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Build the description stored inside the archive, for serving code that has only torch."""
    image_size = int(metadata["image_size"])
    return {
        "model_name": metadata["model_name"],
        "model_kwargs": metadata["model_kwargs"],
        "class_names": list(metadata["class_names"]),
        "image_size": image_size,
        "input": f"uint8 tensor (N, {image_size}, {image_size}, 3), RGB, N >= 1",
        "output": "float32 logits (N, num_classes) in class_names order; softmax gives probabilities",
        "preprocessing_before_input": (
            f"apply EXIF orientation, convert to RGB, resize to {image_size}x{image_size} with bilinear filtering"
        ),
        "preprocessing_inside": "divide by 255, subtract the training split's per-pixel mean image",
        "torch_version": torch.__version__,
    }
