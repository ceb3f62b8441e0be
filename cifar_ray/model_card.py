"""Model cards: a JSON and a Markdown description written next to every saved model.

For `model.pt` the card is `model.card.json` and `model.card.md`. Every value
comes from the model file's own contents or from this process (library
versions, date). A value the caller did not pass appears as "not recorded".
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cifar_ray import io
from cifar_ray.models import count_parameters, get_spec

NOT_RECORDED = "not recorded"

# Distributions whose versions the card lists; a missing one is "not installed".
_LIBRARIES = ("torch", "torchvision", "numpy", "ray", "pillow", "scikit-learn", "cifar-ray")

_METRIC_KEYS = ("val_accuracy", "best_val_accuracy", "test_accuracy", "test_loss", "test_macro_f1", "test_rmse")


def card_paths(model_path: str | Path) -> tuple[Path, Path]:
    """Return the JSON and Markdown card paths for a model file: model.pt -> model.card.json, model.card.md."""
    model_path = Path(model_path)
    return model_path.with_suffix(".card.json"), model_path.with_suffix(".card.md")


def build_model_card(model_path: str | Path, model: nn.Module, payload: dict[str, Any]) -> dict[str, Any]:
    """Collect the card's fields from a model and the payload `save_model` wrote for it."""
    train_config = payload.get("train_config") or {}
    data_config = payload.get("data_config") or {}
    metrics = payload.get("metrics") or {}
    data_summary = metrics.get("data") or {}
    mean_image = np.asarray(payload["mean_image"], dtype=np.float64)
    image_size = payload["image_size"]

    try:
        spec = get_spec(payload["model_name"])
        family, description = spec.family, spec.description
        arguments = {**spec.kwargs, **payload["model_kwargs"]}
    except ValueError:
        family, description, arguments = NOT_RECORDED, NOT_RECORDED, dict(payload["model_kwargs"])

    return {
        "model_file": Path(model_path).name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "architecture": {
            "name": payload["model_name"],
            "family": family,
            "description": description,
            "arguments": arguments,
            "parameters": count_parameters(model),
        },
        "classes": list(payload["class_names"]),
        "data": {
            "source": data_summary.get("source") or data_config.get("data") or NOT_RECORDED,
            "kind": data_summary.get("kind", NOT_RECORDED),
            "class_counts": data_summary.get("class_counts", NOT_RECORDED),
            "config": data_config or NOT_RECORDED,
        },
        "preprocessing": {
            "decode": "EXIF orientation applied, every colour mode converted to RGB",
            "resize": f"{image_size}x{image_size} pixels, bilinear",
            "scale": "pixel values divided by 255, to [0, 1]",
            "mean_subtraction": "per-pixel mean image of the training split, stored in the model file",
            "mean_image_channel_means": [round(float(v), 4) for v in mean_image.reshape(-1, 3).mean(axis=0)],
        },
        "training": {
            "config": train_config or NOT_RECORDED,
            "seed": train_config.get("seed", NOT_RECORDED),
            "split_seed": data_config.get("seed", NOT_RECORDED),
            "train_time_s": metrics.get("train_time_s", NOT_RECORDED),
            "epochs": metrics.get("epochs", NOT_RECORDED),
            "stop_reason": metrics.get("stop_reason", NOT_RECORDED),
            "weights": metrics.get("weights", NOT_RECORDED),
            "device": metrics.get("device", NOT_RECORDED),
        },
        "metrics": {key: _or_not_recorded(metrics.get(key)) for key in _METRIC_KEYS},
        "versions": {"python": platform.python_version(), **{name: _version(name) for name in _LIBRARIES}},
    }


def write_model_card(model_path: str | Path, model: nn.Module, payload: dict[str, Any]) -> tuple[Path, Path]:
    """Write `<stem>.card.json` and `<stem>.card.md` next to a model file, atomically."""
    card = build_model_card(model_path, model, payload)
    json_path, markdown_path = card_paths(model_path)
    io.write_json(json_path, card)
    io.write_text(markdown_path, render_markdown(card))
    return json_path, markdown_path


def render_markdown(card: dict[str, Any]) -> str:
    """Render a card as Markdown for people. The JSON file contains the same values."""
    architecture = card["architecture"]
    parameters = architecture["parameters"]
    data = card["data"]
    preprocessing = card["preprocessing"]
    training = card["training"]

    lines = [
        f"# Model card: {architecture['name']}",
        "",
        f"Model file `{card['model_file']}`, card written {card['created']}.",
        "",
        "## Architecture",
        "",
        f"- name: {architecture['name']} ({architecture['description']}), family {architecture['family']}",
        f"- arguments: `{json.dumps(architecture['arguments'], default=str)}`",
        f"- parameters: {parameters['total']:,} total, {parameters['trainable']:,} trainable, "
        f"{parameters['non_trainable']:,} non-trainable",
        "",
        "## Data",
        "",
        f"- source: {data['source']} (kind: {data['kind']})",
        f"- classes ({len(card['classes'])}): {', '.join(card['classes'])}",
    ]
    lines += _class_count_table(card["classes"], data["class_counts"])
    lines += [
        "",
        "## Preprocessing",
        "",
        f"- decoding: {preprocessing['decode']}",
        f"- resize: {preprocessing['resize']}",
        f"- scaling: {preprocessing['scale']}",
        f"- mean subtraction: {preprocessing['mean_subtraction']} "
        f"(channel means {preprocessing['mean_image_channel_means']})",
        "",
        "## Training",
        "",
        f"- seed: {training['seed']} (weights and shuffling), split seed: {training['split_seed']}",
        f"- training time: {_format_value(training['train_time_s'], ' s')}, epochs: {training['epochs']}, "
        f"stopped by: {training['stop_reason']}, weights kept: {training['weights']}, device: {training['device']}",
        f"- training config: {_format_config(training['config'])}",
        f"- data config: {_format_config(data['config'])}",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {key} | {_format_value(value)} |" for key, value in card["metrics"].items()]
    lines += ["", "## Library versions", "", "| library | version |", "|---|---|"]
    lines += [f"| {name} | {version} |" for name, version in card["versions"].items()]
    return "\n".join(lines) + "\n"


def _class_count_table(classes: list[str], counts: Any) -> list[str]:
    if not isinstance(counts, dict):
        return [f"- images per class: {counts}"]
    splits = list(counts)
    table = ["", "| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for name in classes:
        table.append(f"| {name} | " + " | ".join(str(counts[split].get(name, NOT_RECORDED)) for split in splits) + " |")
    return table


def _format_value(value: Any, unit: str = "") -> str:
    if isinstance(value, float):
        return f"{value:.4f}{unit}"
    if value == NOT_RECORDED:
        return value
    return f"{value}{unit}"


def _format_config(config: Any) -> str:
    return f"`{json.dumps(config, default=str)}`" if isinstance(config, dict) else str(config)


def _or_not_recorded(value: Any) -> Any:
    return NOT_RECORDED if value is None else value


def _version(distribution: str) -> str:
    if distribution == "torch":
        return torch.__version__
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
