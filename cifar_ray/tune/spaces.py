"""Flat search spaces over what the study tuned, and their mapping onto model arguments.

A trial's config is flat: `model` names a registered architecture, and keys
such as `filters_2`, `dense_units` or `l2` set its dimensions. A key the chosen
architecture has no use for is ignored (a plain CNN ignores the dropout rates),
which keeps every space flat enough for hyperopt: no nested choices.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from cifar_ray.models import get_spec

# Keys of a trial config that set training, not the architecture.
TRAIN_KEYS = ("lr", "optimizer", "batch_size", "seed", "augment", "weight_decay")


def model_kwargs_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """Build `build_model` overrides for `config["model"]` from a flat trial config."""
    spec = get_spec(config["model"])
    base = spec.kwargs
    kwargs: dict[str, Any] = {}

    if "filters" in base:
        count = len(base["filters"])
        if all(f"filters_{i + 1}" in config for i in range(count)):
            kwargs["filters"] = [int(config[f"filters_{i + 1}"]) for i in range(count)]
    if "conv_dropout" in base and all(f"conv_dropout_{i + 1}" in config for i in range(len(base["conv_dropout"]))):
        kwargs["conv_dropout"] = [float(config[f"conv_dropout_{i + 1}"]) for i in range(len(base["conv_dropout"]))]
    if "dense_units" in base and "dense_units" in config:
        kwargs["dense_units"] = int(config["dense_units"])
    if "dense_dropout" in base and "dense_dropout" in config:
        kwargs["dense_dropout"] = float(config["dense_dropout"])
    if "dense_l2" in base and "l2" in config:
        kwargs["dense_l2"] = float(config["l2"])

    if "hidden_units" in base:
        count = len(base["hidden_units"])
        if all(f"units_{i + 1}" in config for i in range(count)):
            kwargs["hidden_units"] = [int(config[f"units_{i + 1}"]) for i in range(count)]
    if "l2" in base and "l2" in config:
        kwargs["l2"] = [float(config["l2"])] * len(base["l2"])

    if "architecture" in base:
        if "freeze" in config:
            freeze = config["freeze"]
            kwargs["freeze"] = int(freeze) if isinstance(freeze, (int, float)) else str(freeze)
        if "weights" in config:
            kwargs["weights"] = config["weights"]

    if "stage_widths" in base and "base_width" in config:
        width = int(config["base_width"])
        kwargs["stage_widths"] = [width * 2**i for i in range(len(base["stage_widths"]))]
    return kwargs


def describe_config(config: dict[str, Any]) -> str:
    """Return a short, readable description of a trial's architecture, e.g. `cnn3 filters=[32, 64, 128] dense_units=256`."""
    kwargs = {**get_spec(config["model"]).kwargs, **model_kwargs_from_config(config)}
    parts = [config["model"]]
    for key in (
        "hidden_units",
        "filters",
        "stage_widths",
        "dense_units",
        "conv_dropout",
        "dense_dropout",
        "l2",
        "dense_l2",
        "freeze",
    ):
        if key in kwargs:
            value = kwargs[key]
            if isinstance(value, list) and value and isinstance(value[0], float):
                value = [round(v, 6) for v in value]
            elif isinstance(value, float):
                value = round(value, 6)
            parts.append(f"{key}={value}")
    if "lr" in config:
        parts.append(f"lr={config['lr']:.2g}")
    return " ".join(parts)


def _scaled(value: int, scale: float, step: int) -> int:
    return max(step, int(round(value * scale / step)) * step)


def cnn_space(scale: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """2- and 3-conv CNNs, plain and regularised. `scale` shrinks the filter ranges (1.0: the study's widths)."""
    step = 8
    space = {
        "model": tune.choice(["cnn2", "cnn2_reg", "cnn3", "cnn3_reg"]),
        "filters_1": tune.qrandint(_scaled(64, scale, step), _scaled(320, scale, step), step),
        "filters_2": tune.qrandint(_scaled(128, scale, step), _scaled(576, scale, step), step),
        "filters_3": tune.qrandint(_scaled(256, scale, step), _scaled(1024, scale, step), step),
        "dense_units": tune.qrandint(128, 512, 32),
        "conv_dropout_1": tune.quniform(0.0, 0.5, 0.05),
        "conv_dropout_2": tune.quniform(0.0, 0.5, 0.05),
        "conv_dropout_3": tune.quniform(0.0, 0.5, 0.05),
        "dense_dropout": tune.quniform(0.0, 0.5, 0.05),
        "l2": tune.loguniform(1e-6, 1e-2),
        "lr": tune.loguniform(3e-4, 3e-3),
    }
    # The study's four CNNs (filters scaled), evaluated first.
    common = {"conv_dropout_1": 0.4, "conv_dropout_2": 0.3, "conv_dropout_3": 0.4, "lr": 1e-3, "l2": 1e-4}
    points = [
        {**common, "model": "cnn2", "filters_1": 224, "filters_2": 448, "filters_3": 768, "dense_units": 256, "dense_dropout": 0.4},
        {**common, "model": "cnn3", "filters_1": 120, "filters_2": 512, "filters_3": 768, "dense_units": 256, "dense_dropout": 0.3},
        {**common, "model": "cnn2_reg", "filters_1": 256, "filters_2": 384, "filters_3": 768, "dense_units": 384, "dense_dropout": 0.4},
        {**common, "model": "cnn3_reg", "filters_1": 256, "filters_2": 448, "filters_3": 1024, "dense_units": 384, "dense_dropout": 0.3},
    ]
    return space, [_scale_point(p, space, scale, step) for p in points]


def fcnn_space(scale: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """2- and 3-layer fully connected nets, plain and L2."""
    step = 10
    space = {
        "model": tune.choice(["fcnn2", "fcnn2_l2", "fcnn3", "fcnn3_l2"]),
        "units_1": tune.qrandint(_scaled(100, scale, step), _scaled(600, scale, step), step),
        "units_2": tune.qrandint(_scaled(50, scale, step), _scaled(600, scale, step), step),
        "l2": tune.loguniform(1e-6, 1e-2),
        "lr": tune.loguniform(3e-4, 3e-3),
    }
    points = [
        {"model": "fcnn2", "units_1": 250, "units_2": 450, "l2": 1e-4, "lr": 1e-3},
        {"model": "fcnn2_l2", "units_1": 250, "units_2": 450, "l2": 1e-4, "lr": 1e-3},
        {"model": "fcnn3", "units_1": 300, "units_2": 450, "l2": 1e-4, "lr": 1e-3},
        {"model": "fcnn3_l2", "units_1": 350, "units_2": 150, "l2": 1e-4, "lr": 1e-3},
    ]
    return space, [_scale_point(p, space, scale, step) for p in points]


def _scale_point(point: dict[str, Any], space: dict[str, Any], scale: float, step: int) -> dict[str, Any]:
    """Scale a study configuration's widths like the space, and clip it into the space's (inclusive) bounds."""
    scaled = dict(point)
    for key, value in point.items():
        if key.startswith(("filters_", "units_")):
            value = _scaled(value, scale, step)
        domain = space.get(key)
        if isinstance(value, (int, float)) and hasattr(domain, "lower"):
            value = type(value)(min(max(value, domain.lower), domain.upper))
        scaled[key] = value
    return scaled


def pretrained_space(scale: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """ImageNet backbones fine-tuned on the data: the backbone, the learning rate and how many leading blocks stay frozen.

    `scale` is unused: the backbones keep torchvision's widths so that the
    pretrained weights fit.
    """
    space = {
        "model": tune.choice(["resnet18_pretrained", "mobilenet_v3_small_pretrained"]),
        "lr": tune.loguniform(1e-4, 3e-3),
        "freeze": tune.choice([0, 1, 2, 3, "all_but_head"]),
    }
    points = [
        {"model": "resnet18_pretrained", "lr": 1e-3, "freeze": 0},
        {"model": "mobilenet_v3_small_pretrained", "lr": 1e-3, "freeze": 0},
    ]
    return space, points


SPACES = {"cnn": cnn_space, "fcnn": fcnn_space, "pretrained": pretrained_space}
