"""ImageNet-pretrained torchvision backbones, fine-tuned on the data set's classes.

The backbone takes the project's usual input: images scaled to [0, 1] minus
the training split's per-pixel mean image, at the data's `image_size`. Inside
the model, each channel is divided by ImageNet's standard deviation, so the
inputs have roughly the scale the pretrained weights expect. The per-pixel
mean of CIFAR-10 (about 0.49, 0.48, 0.45 per channel) is close to ImageNet's
per-channel mean, and fine-tuning absorbs the remaining offset.

By default the backbone runs at the data's own resolution. ResNet-18,
MobileNetV3-Small and EfficientNet-B0 all end in adaptive average pooling, so
a 32x32 image still yields a feature vector (the last stage's input is a 1x1 map).
`input_size` upsamples inside the model instead, which lets the pretrained
filters see objects at a scale closer to ImageNet's, at a higher compute cost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from cifar_ray.models.layers import init_output

logger = logging.getLogger(__name__)

# Value of `freeze` that freezes every block except the new classifier head.
FREEZE_ALL_BUT_HEAD = "all_but_head"


@dataclass(frozen=True)
class Architecture:
    """The layout of one torchvision classifier: its weights enum, its head and its freezable blocks."""

    weights_enum: str  # torchvision weights enum, e.g. "ResNet18_Weights"
    head_path: tuple[str | int, ...]  # attribute names or indices from the model down to its last Linear
    blocks: Callable[[nn.Module], list[list[nn.Module]]]  # parameterised blocks in forward order, head excluded


def _resnet_blocks(model: nn.Module) -> list[list[nn.Module]]:
    return [[model.conv1, model.bn1], [model.layer1], [model.layer2], [model.layer3], [model.layer4]]


def _mobilenet_v3_blocks(model: nn.Module) -> list[list[nn.Module]]:
    # classifier[0] is the 576 -> 1024 dense layer in front of the replaced head.
    return [[block] for block in model.features] + [[model.classifier[0]]]


def _efficientnet_blocks(model: nn.Module) -> list[list[nn.Module]]:
    return [[block] for block in model.features]


ARCHITECTURES: dict[str, Architecture] = {
    "resnet18": Architecture("ResNet18_Weights", ("fc",), _resnet_blocks),
    "mobilenet_v3_small": Architecture("MobileNet_V3_Small_Weights", ("classifier", 3), _mobilenet_v3_blocks),
    "efficientnet_b0": Architecture("EfficientNet_B0_Weights", ("classifier", 1), _efficientnet_blocks),
}


class PretrainedWeightsError(FileNotFoundError):
    """A backbone's starting weights are missing or unusable; the message names the file expected and where."""


def imagenet_weights(architecture: str) -> torchvision.models.WeightsEnum:
    """Return torchvision's IMAGENET1K_V1 weights entry for an architecture."""
    return getattr(torchvision.models, ARCHITECTURES[architecture].weights_enum).IMAGENET1K_V1


def hub_checkpoint_path(architecture: str) -> Path:
    """Return the file torchvision's downloader reads and writes for the ImageNet weights.

    The folder is `torch.hub.get_dir()/checkpoints` ($TORCH_HOME/hub/checkpoints,
    by default ~/.cache/torch/hub/checkpoints) and the file name is the basename
    of the weights URL, e.g. resnet18-f37072fd.pth.
    """
    url = imagenet_weights(architecture).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def load_starting_weights(architecture: str, weights: str, download: bool) -> dict[str, torch.Tensor]:
    """Read the state_dict that fine-tuning starts from.

    `weights` is "imagenet" (torchvision's cache, downloaded only when
    `download` is true) or the path of a state_dict saved with torch.save.
    """
    if weights == "imagenet":
        path = hub_checkpoint_path(architecture)
        if not path.is_file():
            if not download:
                raise PretrainedWeightsError(
                    f"ImageNet weights for {architecture} not found: expected {path} "
                    f"(torchvision's {ARCHITECTURES[architecture].weights_enum}.IMAGENET1K_V1, "
                    f"from {imagenet_weights(architecture).url}). Copy that file there, set $TORCH_HOME to the "
                    "folder whose hub/checkpoints/ contains it, pass weights=PATH to a state_dict .pth "
                    "(--model-arg weights='\"PATH\"'), or pass download=true (--model-arg download=true) to fetch it"
                )
            # NOTE: no test runs this download branch, because the tests never use the network.
            logger.info("downloading ImageNet weights for %s to %s", architecture, path)
            try:
                return imagenet_weights(architecture).get_state_dict(progress=True, check_hash=True)
            except Exception as error:  # urllib raises URLError or OSError, and the hash check RuntimeError
                raise PretrainedWeightsError(
                    f"downloading ImageNet weights for {architecture} to {path} failed "
                    f"({type(error).__name__}: {error}); copy {imagenet_weights(architecture).url} there by hand "
                    "or pass weights=PATH to a local state_dict .pth"
                ) from None
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(
                f"weights file {path} for {architecture} not found; pass the path of a state_dict saved with "
                f"torch.save(torchvision.models.{architecture}(...).state_dict(), PATH), or weights=\"imagenet\" "
                f"to read torchvision's cached file {hub_checkpoint_path(architecture)}"
            )

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors for damaged files
        raise PretrainedWeightsError(
            f"weights file {path} could not be read ({type(error).__name__}: {error}); "
            f"expected a state_dict of torchvision's {architecture}"
        ) from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise PretrainedWeightsError(
            f"weights file {path} is not a state_dict (a dict of tensors); save one with "
            f"torch.save(torchvision.models.{architecture}(...).state_dict(), PATH)"
        )
    return state_dict


class PretrainedBackbone(nn.Module):
    """A torchvision classifier with its last Linear layer replaced by a new head for `num_classes`.

    `weights`: "imagenet" (torchvision's cached IMAGENET1K_V1 file), the path
    of a state_dict .pth, or None for random starting weights (used when a
    saved model's weights are loaded afterwards). The file's own head, of any
    size, is ignored.
    `freeze`: the number of leading blocks whose parameters stay fixed, or
    "all_but_head". Blocks are ResNet's stem and four stages, MobileNetV3's
    13 feature blocks and the dense layer before the head, and EfficientNet's 9 feature
    blocks. Frozen blocks also run in eval mode during training, so their
    batch-norm statistics stay fixed too.
    `input_size`: side length in pixels that inputs are resized to (bilinear)
    before the backbone; None keeps the data's `image_size`.
    """

    def __init__(
        self,
        architecture: str = "resnet18",
        weights: str | None = "imagenet",
        freeze: int | str = 0,
        input_size: int | None = None,
        download: bool = False,
        num_classes: int = 10,
        image_size: int = 32,
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}")
        if input_size is not None and input_size < 8:
            raise ValueError(f"input_size must be at least 8 pixels or None, got {input_size}")
        spec = ARCHITECTURES[architecture]
        self.architecture = architecture
        self.image_size = image_size
        self.input_size = input_size

        # Build torchvision's model with its 1000-class head, load the starting
        # weights into it, then move the head out.
        body = torchvision.models.get_model(architecture, weights=None)
        head_parent, head_key = _locate(body, spec.head_path)
        old_head = _child(head_parent, head_key)
        if weights is not None:
            _load_backbone(body, load_starting_weights(architecture, weights, download), spec.head_path, weights)
        _set_child(head_parent, head_key, nn.Identity())
        self.body = body
        self.head = nn.Linear(old_head.in_features, num_classes)
        init_output(self.head)

        # ImageNet's per-channel standard deviation, from torchvision's weights metadata.
        std = torch.tensor(imagenet_weights(architecture).transforms().std).view(1, 3, 1, 1)
        self.register_buffer("imagenet_std", std, persistent=False)

        self.blocks = spec.blocks(body)
        self.frozen_blocks = _resolve_freeze(freeze, len(self.blocks))
        for block in self.blocks[: self.frozen_blocks]:
            for module in block:
                module.requires_grad_(False)
        self.regularized: list[tuple[nn.Module, float]] = []

    def train(self, mode: bool = True) -> PretrainedBackbone:
        super().train(mode)
        for block in self.blocks[: self.frozen_blocks]:
            for module in block:
                module.eval()
        return self

    def conv_layers(self) -> list[nn.Conv2d]:
        """Return the first and the last convolution, for feature-map pictures."""
        convolutions = [m for m in self.body.modules() if isinstance(m, nn.Conv2d)]
        return [convolutions[0], convolutions[-1]]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled activations that feed the new head."""
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.body(x / self.imagenet_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _locate(model: nn.Module, path: tuple[str | int, ...]) -> tuple[nn.Module, str | int]:
    parent = model
    for key in path[:-1]:
        parent = _child(parent, key)
    return parent, path[-1]


def _child(parent: nn.Module, key: str | int) -> nn.Module:
    return parent[key] if isinstance(key, int) else getattr(parent, key)


def _set_child(parent: nn.Module, key: str | int, module: nn.Module) -> None:
    if isinstance(key, int):
        parent[key] = module
    else:
        setattr(parent, key, module)


def _load_backbone(body: nn.Module, state_dict: dict[str, torch.Tensor], head_path: tuple, source: str) -> None:
    """Load every weight except the head's. Any mismatch outside the head raises PretrainedWeightsError."""
    head_prefix = ".".join(str(key) for key in head_path) + "."
    backbone_state = {k: v for k, v in state_dict.items() if not k.startswith(head_prefix)}
    try:
        result = body.load_state_dict(backbone_state, strict=False)
    except RuntimeError as error:  # raised for tensors whose shapes differ
        raise PretrainedWeightsError(f"weights {source!r} do not fit {type(body).__name__}: {error}") from None
    missing = [k for k in result.missing_keys if not k.startswith(head_prefix)]
    if missing or result.unexpected_keys:
        raise PretrainedWeightsError(
            f"weights {source!r} do not fit {type(body).__name__}: {len(missing)} missing keys "
            f"(first: {missing[:3]}), {len(result.unexpected_keys)} unexpected keys "
            f"(first: {result.unexpected_keys[:3]}); pass a state_dict of the same torchvision architecture"
        )


def _resolve_freeze(freeze: int | str, num_blocks: int) -> int:
    if freeze == FREEZE_ALL_BUT_HEAD:
        return num_blocks
    if isinstance(freeze, bool) or not isinstance(freeze, int):
        raise ValueError(f"freeze must be a number of blocks (0 to {num_blocks}) or {FREEZE_ALL_BUT_HEAD!r}, got {freeze!r}")
    if not 0 <= freeze <= num_blocks:
        raise ValueError(f"freeze must lie between 0 and {num_blocks} blocks for this backbone, got {freeze}")
    return freeze
