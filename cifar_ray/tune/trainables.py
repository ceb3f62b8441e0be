"""Ray Tune Trainables, one per architecture family, thin over `cifar_ray.engine.Trainer`.

`setup` builds the Trainer from the trial's flat config and the data set that
`tune.with_parameters` placed in Ray's object store. `step` trains one epoch,
and the checkpoint carries the Trainer's whole state. A final-stage trial (config
`final: True`) also evaluates the test set once when it stops and saves the
model file inside its last checkpoint.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray
import torch
from ray import tune

from cifar_ray import io
from cifar_ray.checkpoint import save_model
from cifar_ray.config import TrainConfig
from cifar_ray.data import DataBundle
from cifar_ray.engine import Trainer
from cifar_ray.models import get_spec
from cifar_ray.tune.spaces import model_kwargs_from_config

logger = logging.getLogger(__name__)

STATE_FILE = "trainer.pt"
MODEL_FILE = "model.pt"
TEST_METRICS_FILE = "test_metrics.json"

# Trial-config keys read by `train_config_from_trial`, beside the architecture keys of spaces.py.
_TRAIN_CONFIG_KEYS = {
    "optimizer",
    "lr",
    "batch_size",
    "epochs",
    "patience",
    "early_stopping",
    "restore_best",
    "augment",
    "seed",
    "weight_decay",
    "lr_decay_rate",
    "amp",
    "time_limit_s",
}


def train_config_from_trial(config: dict[str, Any]) -> TrainConfig:
    """Build the TrainConfig of a trial from its flat config (final-stage configs nest theirs under `winner`)."""
    if "winner" in config:
        config = {**config["winner"], **{k: v for k, v in config.items() if k != "winner"}}
    values = {key: config[key] for key in _TRAIN_CONFIG_KEYS if key in config}
    for key in ("batch_size", "epochs", "patience", "seed"):
        if key in values:
            values[key] = int(values[key])
    return TrainConfig(model=config["model"], model_kwargs=model_kwargs_from_config(config), **values)


class ArchitectureTrainable(tune.Trainable):
    """Trains one configuration of one architecture family, one epoch per `step`."""

    family: str = ""

    def setup(self, config: dict[str, Any], data: DataBundle | None = None) -> None:
        if data is None:
            raise ValueError(
                f"{type(self).__name__} needs the data set: wrap it with tune.with_parameters(..., data=bundle)"
            )
        self.train_config = train_config_from_trial(config)
        family = get_spec(self.train_config.model).family
        if self.family and family != self.family:
            raise ValueError(
                f"{type(self).__name__} trains the {self.family!r} family, but the trial asks for "
                f"{self.train_config.model!r} of family {family!r}"
            )
        self.final = bool(config.get("final", False))

        # Ray assigns CPUs per trial; PyTorch should use exactly those, not every core.
        assigned = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if assigned:
            torch.set_num_threads(max(1, int(assigned)))

        self.data = data
        self.trainer = Trainer(self.train_config, data)
        self.test_metrics: dict[str, Any] | None = None

    def step(self) -> dict[str, Any]:
        metrics = self.trainer.train_epoch()
        result = {
            **metrics,
            "model": self.train_config.model,
            "params": self.trainer.params["total"],
            "train_time_s": self.trainer.train_time_s,
            "stop_reason": self.trainer.stop_reason or "",
            "node_id": ray.get_runtime_context().get_node_id(),
        }
        if self.trainer.stopped:
            result["done"] = True
            if self.final:
                result.update(self._test_once())
        return result

    def _test_once(self) -> dict[str, Any]:
        """Apply restore_best, then evaluate the test set; the only place a trial touches it."""
        self.trainer.finish()
        self.test_metrics = self.trainer.evaluate_test()
        return {
            "test_accuracy": self.test_metrics["accuracy"],
            "test_rmse": self.test_metrics["rmse"],
            "test_loss": self.test_metrics["loss"],
            "test_macro_f1": self.test_metrics["macro_f1"],
        }

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        torch.save(self.trainer.state_dict(), os.path.join(checkpoint_dir, STATE_FILE))
        if self.final and self.test_metrics is not None:
            summary = self.trainer.summary(self.test_metrics)
            save_model(
                os.path.join(checkpoint_dir, MODEL_FILE),
                self.trainer.model,
                self.train_config.model,
                self.train_config.model_kwargs,
                self.data.class_names,
                self.data.mean_image,
                self.data.image_size,
                self.train_config,
                None,
                {k: v for k, v in summary.items() if k not in ("history", "per_class", "confusion_matrix")},
            )
            io.write_json(os.path.join(checkpoint_dir, TEST_METRICS_FILE), {**summary, "class_names": self.data.class_names})

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        # Loaded on the CPU: the RNG states must stay CPU tensors, and load_state_dict moves the rest.
        state = torch.load(os.path.join(checkpoint_dir, STATE_FILE), map_location="cpu", weights_only=True)
        self.trainer.load_state_dict(state)


class FCNNTrainable(ArchitectureTrainable):
    family = "fcnn"


class CNNTrainable(ArchitectureTrainable):
    family = "cnn"


class ResNetTrainable(ArchitectureTrainable):
    family = "resnet"


class PretrainedTrainable(ArchitectureTrainable):
    family = "pretrained"


TRAINABLES: dict[str, type[ArchitectureTrainable]] = {
    "fcnn": FCNNTrainable,
    "cnn": CNNTrainable,
    "resnet": ResNetTrainable,
    "pretrained": PretrainedTrainable,
}
