"""The one training loop: used by `cifar-ray train`, by every Tune trial and by the final retrain.

`Trainer.train_epoch` runs one epoch and one validation pass and returns a dict
with stable, stage-prefixed keys. Everything that trains calls it in a loop;
`Trainer.state_dict` carries all that a resumed run needs.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cifar_ray.config import TrainConfig
from cifar_ray.data import DataBundle, DeviceDataset
from cifar_ray.metrics import classification_metrics
from cifar_ray.models import build_model, count_parameters, l2_penalty

logger = logging.getLogger(__name__)

# A diverged trial reports this finite loss (and accuracy 0) so that schedulers
# can still rank it. The `diverged` flag records why.
DIVERGED_LOSS = 1e6


def select_device(requested: str | None = None) -> torch.device:
    """Return the requested device, else the first GPU when one is visible, else the CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was requested but no CUDA GPU is visible; use --device cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ExponentialDecay:
    """Learning-rate factor `rate ** (step / steps)`: Keras' continuous ExponentialDecay."""

    def __init__(self, rate: float, steps: int):
        self.rate = rate
        self.steps = steps

    def __call__(self, step: int) -> float:
        return self.rate ** (step / self.steps)


class Trainer:
    """Model, optimiser, schedule, early stopping and history for one training run."""

    def __init__(self, config: TrainConfig, data: DataBundle):
        config.validate()
        self.config = config
        self.data = data
        self.device = select_device(config.device)
        seed_everything(config.seed)

        self.model = build_model(
            config.model, num_classes=data.num_classes, image_size=data.image_size, **config.model_kwargs
        ).to(self.device)
        self.params = count_parameters(self.model)
        # channels_last only helps convolutions: in quiet runs of benchmarks/bench.py on 2 CPU cores it
        # made the study's plain and regularised CNNs 3 to 39% faster. Dense nets keep the default layout.
        self.channels_last = config.channels_last and any(isinstance(m, nn.Conv2d) for m in self.model.modules())
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

        self.train_set = DeviceDataset(data.x_train, data.y_train, data.mean_image, self.device)
        self.val_set = DeviceDataset(data.x_val, data.y_val, data.mean_image, self.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.optimizer = self._build_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, ExponentialDecay(config.resolved_decay_rate(), config.lr_decay_steps)
        )
        self.use_amp = config.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_val_accuracy = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epochs_without_improvement = 0
        self.train_time_s = 0.0
        self.diverged = False
        self.stop_reason: str | None = None

    def _build_optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        if config.optimizer == "nadam":
            # Keras' epsilon (1e-7) rather than PyTorch's 1e-8. PyTorch picks the multi-tensor
            # update by default only for CUDA tensors; on the CPU it cut fcnn3's step from 11.2 to 9.1 ms.
            return torch.optim.NAdam(self.model.parameters(), lr=config.resolved_lr(), eps=1e-7, foreach=True)
        # NOTE: torch's SGD couples weight decay into the gradient (and momentum);
        # Keras 3 applies it decoupled. The two differ slightly at lr 0.1.
        return torch.optim.SGD(
            self.model.parameters(),
            lr=config.resolved_lr(),
            momentum=config.momentum,
            weight_decay=config.resolved_weight_decay(),
        )

    def _autocast(self):
        if self.use_amp:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return nullcontext()

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def train_epoch(self, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Train one epoch, validate, update early stopping; return the epoch's metrics.

        `progress`, when given, is called with the number of images of each batch.
        """
        if self.stopped:
            raise RuntimeError(f"training already stopped ({self.stop_reason}); build a new Trainer to train again")
        started = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]

        train_loss, train_accuracy = self._train_pass(progress)
        if self.diverged:
            val_loss, val_accuracy = DIVERGED_LOSS, 0.0
        else:
            val_loss, val_accuracy = self.evaluate(self.val_set)
            if not math.isfinite(val_loss):
                self.diverged = True
                val_loss, val_accuracy = DIVERGED_LOSS, 0.0
        self.epoch += 1
        epoch_time = time.perf_counter() - started
        self.train_time_s += epoch_time

        # Early stopping on val_accuracy; the best weights are copied only when they will be restored.
        if val_accuracy > self.best_val_accuracy:
            self.best_val_accuracy = val_accuracy
            self.best_epoch = self.epoch
            self.epochs_without_improvement = 0
            if self.config.restore_best:
                self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.epochs_without_improvement += 1
        if self.diverged:
            self.stop_reason = "diverged"
        elif self.config.early_stopping and self.epochs_without_improvement >= self.config.patience:
            self.stop_reason = "early_stopping"
        elif self.epoch >= self.config.epochs:
            self.stop_reason = "max_epochs"
        elif self.config.time_limit_s is not None and self.train_time_s >= self.config.time_limit_s:
            self.stop_reason = "time_limit"

        metrics = {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "best_val_accuracy": self.best_val_accuracy,
            "lr": lr,
            "epoch_time_s": epoch_time,
            "train_images_per_s": len(self.train_set) / epoch_time,
            "diverged": self.diverged,
        }
        self.history.append(metrics)
        return metrics

    def _train_pass(self, progress: Callable[[int], None] | None) -> tuple[float, float]:
        self.model.train()
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        step = 0
        check_every = 1 if self.device.type == "cpu" else 50
        batches = self.train_set.train_batches(
            self.config.batch_size, self.generator, self.config.augment, self.channels_last
        )
        for images, labels in batches:
            with self._autocast():
                logits = self.model(images)
                loss = F.cross_entropy(logits, labels)
            penalty = l2_penalty(self.model)
            objective = loss if penalty is None else loss + penalty
            # A non-finite loss ends the run as diverged instead of spending the
            # rest of the epoch on NaN weights. On a GPU the check forces a
            # synchronisation, so it runs every `check_every` steps there.
            step += 1
            if step % check_every == 0 and not torch.isfinite(objective).item():
                self.diverged = True
                return DIVERGED_LOSS, 0.0

            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(objective).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()

            total_loss += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            if progress is not None:
                progress(len(labels))
        mean_loss = (total_loss / max(seen, 1)).item()
        if not math.isfinite(mean_loss):
            self.diverged = True
            return DIVERGED_LOSS, 0.0
        return mean_loss, correct.item() / max(seen, 1)

    @torch.no_grad()
    def predict_logits(self, dataset: DeviceDataset) -> torch.Tensor:
        """Return logits for a whole split, in evaluation mode, without gradients, at the evaluation batch size."""
        self.model.eval()
        outputs = []
        for images, _ in dataset.eval_batches(self.config.eval_batch_size, self.channels_last):
            with self._autocast():
                outputs.append(self.model(images).float())
        return torch.cat(outputs)

    def evaluate(self, dataset: DeviceDataset) -> tuple[float, float]:
        """Return the mean cross-entropy (without the L2 term) and the accuracy on a split."""
        logits = self.predict_logits(dataset)
        loss = F.cross_entropy(logits, dataset.labels).item()
        accuracy = (logits.argmax(1) == dataset.labels).float().mean().item()
        return loss, accuracy

    def fit(
        self,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Train until early stopping, divergence or the epoch limit; then restore the best weights if configured."""
        while not self.stopped:
            metrics = self.train_epoch(progress)
            if on_epoch is not None:
                on_epoch(metrics)
        self.finish()
        return self.history

    def finish(self) -> None:
        """Apply the `restore_best` choice once training has stopped."""
        if self.config.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            logger.info("restored the weights of epoch %d (val_accuracy %.4f)", self.best_epoch, self.best_val_accuracy)

    def evaluate_test(self) -> dict[str, Any]:
        """Return test-set metrics. Called once, after every choice has been made on validation."""
        test_set = DeviceDataset(self.data.x_test, self.data.y_test, self.data.mean_image, self.device)
        logits = self.predict_logits(test_set)
        metrics = classification_metrics(
            self.data.y_test, logits.argmax(1).cpu().numpy(), self.data.class_names
        )
        metrics["loss"] = F.cross_entropy(logits, test_set.labels).item()
        return metrics

    def summary(self, test: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the run's result record, as written to metrics.json."""
        last = self.history[-1] if self.history else {}
        result = {
            "model": self.config.model,
            "model_kwargs": self.config.model_kwargs,
            "params": self.params["total"],
            "trainable_params": self.params["trainable"],
            "non_trainable_params": self.params["non_trainable"],
            "train_time_s": self.train_time_s,
            "epochs": self.epoch,
            "stop_reason": self.stop_reason,
            "diverged": self.diverged,
            "weights": "best" if self.config.restore_best else "last",
            "best_epoch": self.best_epoch,
            "val_accuracy": self.best_val_accuracy if self.config.restore_best else last.get("val_accuracy"),
            "best_val_accuracy": self.best_val_accuracy,
            "last_val_accuracy": last.get("val_accuracy"),
            "device": str(self.device),
            "history": self.history,
        }
        if test is not None:
            result.update(
                {
                    "test_accuracy": test["accuracy"],
                    "test_rmse": test["rmse"],
                    "test_loss": test["loss"],
                    "test_macro_f1": test["macro_f1"],
                    "per_class": test["per_class"],
                    "confusion_matrix": test["confusion_matrix"],
                }
            )
        return result

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly: weights, optimiser, schedule, counters, RNG."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "epochs_without_improvement": self.epochs_without_improvement,
            "train_time_s": self.train_time_s,
            "diverged": self.diverged,
            "stop_reason": self.stop_reason,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        self.best_val_accuracy = state["best_val_accuracy"]
        self.best_epoch = state["best_epoch"]
        self.best_state = state["best_state"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
        self.train_time_s = state["train_time_s"]
        self.diverged = state["diverged"]
        self.stop_reason = state["stop_reason"]
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
