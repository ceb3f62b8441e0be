"""Activations of a trained model on test images: the last hidden layer, its t-SNE map, and conv feature maps.

Test images are read from the sweep's recorded data source and normalised as
in training (`DeviceDataset.normalise`: x/255 minus the model's mean image,
NCHW). Everything runs on the CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.model_selection import train_test_split
from torch import nn

from cifar_ray.analysis.folder import SweepFolder
from cifar_ray.config import DataConfig
from cifar_ray.data import DATA_ENV, DeviceDataset, prepare_data

logger = logging.getLogger(__name__)

# scikit-learn recommends reducing dense inputs to about 50 dimensions with PCA
# before t-SNE. 500 iterations (250 of them early exaggeration) are half the
# default 1,000. In one measurement on a busy 2-core CPU, a 2,000-point map took
# 9 s of CPU time with 500 and 21 s with 1,000.
PCA_COMPONENTS = 50
TSNE_ITERATIONS = 500
EVAL_BATCH_SIZE = 500
CPU = torch.device("cpu")


@dataclass
class TestImages:
    """The sweep's test split: (N, H, W, 3) uint8 images and int64 labels."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    image_size: int
    source: str


def load_test_images(folder: SweepFolder) -> TestImages:
    """Read the test split the sweep used, from the source and settings recorded in sweep.json.

    When the recorded source no longer exists, $CIFAR_RAY_DATA is tried. Raises
    FileNotFoundError or ValueError with the reason when neither can be read.
    """
    args = folder.args
    source = (folder.sweep.get("data") or {}).get("source") or args.get("data")
    if not source or not Path(source).exists():
        fallback = os.environ.get(DATA_ENV)
        if not fallback:
            raise FileNotFoundError(
                f"the sweep's data source {source!r} (sweep.json data.source) does not exist and ${DATA_ENV} is not set. "
                f"Set {DATA_ENV} to the data set the sweep used"
            )
        logger.warning("data source %s of the sweep not found; reading the test split from $%s=%s", source, DATA_ENV, fallback)
        source = fallback

    config = DataConfig(
        data=str(source),
        image_size=int(args.get("image_size") or 32),
        test_fraction=float(args.get("test_fraction") or 0.2),
        seed=int(args.get("seed") or 0),
        drop_empty_classes=bool(args.get("drop_empty_classes")),
        cache_dir=args.get("cache_dir"),
        download=False,
    )
    bundle = prepare_data(config)
    if folder.class_names and bundle.class_names != folder.class_names:
        raise ValueError(
            f"the classes read from {source} ({bundle.class_names}) differ from the sweep's ({folder.class_names}). "
            "The data set has changed since the sweep ran"
        )
    return TestImages(bundle.x_test, bundle.y_test, bundle.class_names, config.image_size, str(source))


def check_model_matches(test: TestImages, metadata: dict) -> None:
    """Raise ValueError when a model was trained on other classes or another image size than `test`."""
    if list(metadata["class_names"]) != test.class_names:
        raise ValueError(f"the model's classes {metadata['class_names']} differ from the test split's {test.class_names}")
    if int(metadata["image_size"]) != test.image_size:
        raise ValueError(f"the model expects {metadata['image_size']}-pixel images, the test split has {test.image_size}")


def stratified_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Return the indices of a seeded, class-stratified subset of `count` images (all of them when there are fewer)."""
    indices = np.arange(len(labels))
    if count >= len(labels):
        return indices
    subset, _ = train_test_split(indices, train_size=count, stratify=labels, random_state=seed)
    return np.sort(subset)


def first_image_per_class(labels: np.ndarray, class_count: int) -> list[int]:
    """Return the index of the first test image of each class, leaving out classes without one."""
    return [int(np.flatnonzero(labels == label)[0]) for label in range(class_count) if np.any(labels == label)]


@torch.no_grad()
def last_hidden_activations(model: nn.Module, images: np.ndarray, mean_image: np.ndarray) -> np.ndarray:
    """Run `model.forward_features` on the images and return an (N, features) float32 array."""
    model.eval()
    dataset = DeviceDataset(images, np.zeros(len(images), dtype=np.int64), np.asarray(mean_image, dtype=np.float32), CPU)
    outputs = [model.forward_features(batch).float() for batch, _ in dataset.eval_batches(EVAL_BATCH_SIZE, channels_last=False)]
    return torch.cat(outputs).flatten(1).numpy()


def tsne_embedding(activations: np.ndarray, seed: int) -> np.ndarray:
    """Compute a 2-D t-SNE map of the activations, after PCA to at most PCA_COMPONENTS dimensions."""
    points = activations
    components = min(PCA_COMPONENTS, points.shape[0], points.shape[1])
    if points.shape[1] > components:
        points = PCA(n_components=components, random_state=seed).fit_transform(points)
    # Perplexity must stay below the number of points, and 30 is scikit-learn's default.
    perplexity = min(30.0, (len(points) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=TSNE_ITERATIONS, random_state=seed)
    return tsne.fit_transform(points)


@dataclass
class FeatureMaps:
    """Outputs of the first and last conv layers (before their activation) for a few images."""

    first: np.ndarray  # (N, C, H, W)
    last: np.ndarray  # (N, C, H, W)
    first_name: str  # module path inside the model, e.g. conv_stack.0
    last_name: str


@torch.no_grad()
def conv_feature_maps(model: nn.Module, images: np.ndarray, mean_image: np.ndarray) -> FeatureMaps:
    """Run the images through the model and capture the outputs of its first and last conv layers."""
    layers = model.conv_layers()
    if not layers:
        raise ValueError(f"{type(model).__name__} has no conv layers")
    first, last = layers[0], layers[-1]
    names = {module: name for name, module in model.named_modules()}
    captured: dict[nn.Module, torch.Tensor] = {}

    def capture(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        captured[module] = output.detach().float()

    handles = [layer.register_forward_hook(capture) for layer in {first, last}]
    try:
        model.eval()
        dataset = DeviceDataset(images, np.zeros(len(images), dtype=np.int64), np.asarray(mean_image, dtype=np.float32), CPU)
        model(dataset.normalise(dataset.images, channels_last=False))
    finally:
        for handle in handles:
            handle.remove()
    return FeatureMaps(
        first=captured[first].numpy(), last=captured[last].numpy(), first_name=names[first], last_name=names[last]
    )


def strongest_channels(maps: np.ndarray, count: int) -> np.ndarray:
    """Return the indices of the `count` channels with the highest mean absolute response over all images and positions."""
    strength = np.abs(maps).mean(axis=(0, 2, 3))
    return np.argsort(-strength, kind="stable")[:count]
