"""The `cifar-ray train` command on a small tree of real CIFAR-10 JPEGs."""

from __future__ import annotations

import json

import pytest

from cifar_ray.checkpoint import load_model
from cifar_ray.cli import main
from cifar_ray.models import build_model, count_parameters, registered_models

CLASSES = ["airplane", "automobile", "bird"]

METRICS_KEYS = {
    "model",
    "params",
    "train_time_s",
    "epochs",
    "val_accuracy",
    "test_accuracy",
    "test_rmse",
    "per_class",
    "confusion_matrix",
    "history",
}


@pytest.fixture
def tree(tmp_path, make_split_tree):
    return make_split_tree(tmp_path / "tree", CLASSES, train_per_class=30, test_per_class=10)


def test_train_writes_results(tree, tmp_path, capsys):
    out = tmp_path / "out"

    exit_code = main(
        ["train", "fcnn2", "--data", str(tree), "--epochs", "1", "--out", str(out), "--device", "cpu", "--no-download"]
    )

    assert exit_code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRICS_KEYS <= set(metrics), f"metrics.json lacks {METRICS_KEYS - set(metrics)}"
    assert metrics["model"] == "fcnn2"
    assert metrics["params"] == count_parameters(build_model("fcnn2", num_classes=3))["total"]
    assert metrics["epochs"] == 1
    assert len(metrics["history"]) == 1
    assert list(metrics["per_class"]) == CLASSES
    assert sum(map(sum, metrics["confusion_matrix"])) == 3 * 10
    model, metadata = load_model(out / "model.pt")
    assert metadata["model_name"] == "fcnn2"
    assert not model.training, "load_model should return the model in eval mode"
    assert metadata["class_names"] == CLASSES


def test_train_unknown_model(tree, tmp_path, capsys):
    exit_code = main(["train", "cnn4", "--data", str(tree), "--epochs", "1", "--out", str(tmp_path / "out")])

    assert exit_code == 2
    error = capsys.readouterr().err
    assert "'cnn4'" in error
    for name in registered_models():
        assert name in error, f"registered model {name} missing from: {error}"
    assert not (tmp_path / "out").exists(), "a failed run wrote results"


def test_unknown_model_before_data(tmp_path, capsys):
    # The model name is checked before any data is read, downloaded or decoded.
    exit_code = main(["train", "cnn4", "--data", str(tmp_path / "missing"), "--epochs", "1"])

    assert exit_code == 2
    error = capsys.readouterr().err
    assert "'cnn4'" in error
    assert "cnn2" in error


def test_train_missing_data(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"

    exit_code = main(["train", "fcnn2", "--data", str(missing), "--epochs", "1", "--out", str(tmp_path / "out")])

    assert exit_code == 2
    error = capsys.readouterr().err
    assert str(missing) in error
    assert "--data" in error
