"""The training loop on about 500 real CIFAR-10 images: history, schedule, stopping, resuming, test metrics."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from cifar_ray.checkpoint import load_model, save_model
from cifar_ray.config import DataConfig, TrainConfig
from cifar_ray.data import DataBundle, DeviceDataset, prepare_data
from cifar_ray.engine import DIVERGED_LOSS, Trainer

CLASSES = ["airplane", "automobile", "bird", "cat", "deer"]
TRAIN_PER_CLASS = 110  # 495 training and 55 validation images after the 10% validation split
TEST_PER_CLASS = 20

# The registered layouts at widths that train an epoch in well under a second
# on a CPU. SMALL_CNN keeps cnn2_reg's dropout, batch norm and L2 dense kernel.
SMALL_CNN = {"model": "cnn2_reg", "model_kwargs": {"filters": [8, 16], "dense_units": 32}}
SMALL_FCNN = {"model": "fcnn2", "model_kwargs": {"hidden_units": [32]}}

HISTORY_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, make_split_tree) -> DataBundle:
    root = tmp_path_factory.mktemp("engine")
    tree = make_split_tree(root / "tree", CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS)
    return prepare_data(DataConfig(data=str(tree), cache_dir=str(root / "cache"), download=False))


@pytest.fixture(scope="module")
def small_bundle(bundle) -> DataBundle:
    """The first 120 training images of `bundle`, for checks of the loop's mechanics."""
    return dataclasses.replace(bundle, x_train=bundle.x_train[:120], y_train=bundle.y_train[:120])


@pytest.fixture(scope="module")
def trained_fcnn2(bundle) -> Trainer:
    """fcnn2 after two epochs, its lr decaying by 0.95 every 5 steps. Tests only read it."""
    config = TrainConfig(model="fcnn2", epochs=2, early_stopping=False, lr_decay_steps=5, device="cpu")
    trainer = Trainer(config, bundle)
    trainer.fit()
    return trainer


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """Optimiser steps in one epoch: a trailing batch of one image is dropped."""
    steps = math.ceil(train_size / batch_size)
    return steps - 1 if train_size % batch_size == 1 else steps


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


def test_bundle_size(bundle):
    assert len(bundle.y_train) == 495
    assert len(bundle.y_val) == 55
    assert len(bundle.y_test) == 100


def test_history_rows(trained_fcnn2):
    history = trained_fcnn2.history

    assert len(history) == 2
    for index, row in enumerate(history, start=1):
        assert HISTORY_KEYS <= set(row), f"epoch {index} lacks {HISTORY_KEYS - set(row)}"
        assert row["epoch"] == index
        assert math.isfinite(row["train_loss"]), f"epoch {index}: train_loss {row['train_loss']}"
        assert 0 <= row["val_accuracy"] <= 1
    assert trained_fcnn2.stop_reason == "max_epochs"


def test_default_lr_schedule():
    config = TrainConfig()

    assert config.resolved_lr() == 1e-3
    assert config.resolved_decay_rate() == 0.95
    assert config.lr_decay_steps == 500


def test_lr_decay(trained_fcnn2, bundle):
    trainer = trained_fcnn2
    steps = steps_per_epoch(len(bundle.y_train), trainer.config.batch_size)

    assert trainer.history[0]["lr"] == pytest.approx(1e-3)
    assert trainer.history[1]["lr"] == pytest.approx(1e-3 * 0.95 ** (steps / 5))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.95 ** (2 * steps / 5))


def test_early_stopping(small_bundle):
    # At lr 1e-12 no weight moves enough to change a prediction, so only epoch 1 improves.
    config = TrainConfig(**SMALL_FCNN, epochs=10, lr=1e-12, patience=2, device="cpu")
    trainer = Trainer(config, small_bundle)
    trainer.fit()

    assert trainer.stop_reason == "early_stopping"
    assert trainer.epoch == 1 + config.patience
    assert trainer.best_epoch == 1


def test_restore_best(small_bundle):
    # A decay of 1e-6 per epoch's worth of steps puts the lr at or below 1e-9 from epoch 2 on.
    # Later epochs then change the weights slightly but not val_accuracy, so epoch 1 stays the best.
    steps = steps_per_epoch(len(small_bundle.y_train), 32)
    config = TrainConfig(
        **SMALL_FCNN,
        epochs=3,
        early_stopping=False,
        restore_best=True,
        lr_decay_rate=1e-6,
        lr_decay_steps=steps,
        device="cpu",
    )
    trainer = Trainer(config, small_bundle)
    snapshots = {}

    def snapshot(metrics):
        snapshots[metrics["epoch"]] = weights(trainer.model)

    trainer.fit(on_epoch=snapshot)

    assert trainer.best_epoch == 1
    assert not same_weights(snapshots[1], snapshots[3]), "precondition: the last epoch should change the weights"
    assert same_weights(weights(trainer.model), snapshots[1]), "the best epoch's weights were not restored"


def test_state_dict_resume(small_bundle):
    config = TrainConfig(**SMALL_CNN, epochs=3, early_stopping=False, augment=True, device="cpu")
    original = Trainer(config, small_bundle)
    original.train_epoch()
    state = copy.deepcopy(original.state_dict())
    original.train_epoch()

    resumed = Trainer(config, small_bundle)
    resumed.load_state_dict(copy.deepcopy(state))
    resumed.train_epoch()

    assert resumed.epoch == 2
    assert same_weights(weights(resumed.model), weights(original.model)), "resumed weights differ"
    assert resumed.history[-1]["train_loss"] == original.history[-1]["train_loss"]
    assert resumed.history[-1]["val_accuracy"] == original.history[-1]["val_accuracy"]


def test_sgd_divergence(small_bundle):
    config = TrainConfig(**SMALL_FCNN, optimizer="sgd", lr=1e3, epochs=3, device="cpu")
    trainer = Trainer(config, small_bundle)
    trainer.fit()

    assert trainer.stop_reason == "diverged"
    assert trainer.diverged
    assert trainer.history[-1]["diverged"]
    for row in trainer.history:
        assert math.isfinite(row["train_loss"]), f"epoch {row['epoch']}: train_loss {row['train_loss']}"
        assert math.isfinite(row["val_loss"]), f"epoch {row['epoch']}: val_loss {row['val_loss']}"
    assert trainer.history[-1]["val_loss"] == DIVERGED_LOSS
    assert trainer.history[-1]["val_accuracy"] == 0.0


def test_evaluate_test(trained_fcnn2, bundle):
    metrics = trained_fcnn2.evaluate_test()
    matrix = np.asarray(metrics["confusion_matrix"])

    assert 0 <= metrics["accuracy"] <= 1
    assert metrics["rmse"] >= 0
    assert list(metrics["per_class"]) == CLASSES
    assert matrix.shape == (len(CLASSES), len(CLASSES))
    assert matrix.sum() == len(bundle.y_test)
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    for name, row in zip(CLASSES, matrix):
        assert metrics["per_class"][name]["support"] == row.sum(), f"{name}: support"


def test_save_load_model(bundle, small_bundle, tmp_path):
    config = TrainConfig(**SMALL_CNN, epochs=1, channels_last=False, device="cpu")
    trainer = Trainer(config, small_bundle)
    trainer.fit()
    path = tmp_path / "model.pt"
    save_model(
        path,
        trainer.model,
        config.model,
        config.model_kwargs,
        bundle.class_names,
        bundle.mean_image,
        bundle.image_size,
        config,
    )

    loaded, metadata = load_model(path)
    test_set = DeviceDataset(bundle.x_test, bundle.y_test, bundle.mean_image, torch.device("cpu"))
    images = test_set.normalise(test_set.images, channels_last=False)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(images)
        logits = loaded(images)

    assert torch.equal(logits, expected)
    assert metadata["class_names"] == CLASSES
    assert np.array_equal(metadata["mean_image"], bundle.mean_image)
    payload = torch.load(path, weights_only=True)
    assert payload["model_name"] == "cnn2_reg"


def test_trailing_single_image(bundle):
    batch_size = 8
    size = 3 * batch_size + 1
    small = dataclasses.replace(bundle, x_train=bundle.x_train[:size], y_train=bundle.y_train[:size])
    config = TrainConfig(**SMALL_CNN, epochs=1, batch_size=batch_size, device="cpu")
    trainer = Trainer(config, small)
    seen = []

    trainer.fit(progress=seen.append)

    assert seen == [batch_size] * 3, "a batch of one image reached the model"
    assert math.isfinite(trainer.history[0]["train_loss"])
