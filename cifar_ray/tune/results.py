"""Turning Ray Tune results into the sweep's tables: trials, per-epoch history and the final summary."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import ResultGrid

from cifar_ray.analysis.tables import describe_setup, format_duration, training_setup
from cifar_ray.models import get_spec
from cifar_ray.reference import study_result
from cifar_ray.tune.spaces import describe_config

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "epoch_time_s",
    "train_images_per_s",
    "diverged",
    "time_total_s",
]


def _trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """Flatten a final-stage config, which nests the searched config under `winner`."""
    if "winner" in config:
        return {**config["winner"], **{k: v for k, v in config.items() if k != "winner"}}
    return dict(config)


def collect_trials(grid: ResultGrid, stage: str, max_epochs: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build one row per trial (config, last and best metrics, status, why it stopped) and one per trial per epoch."""
    rows = []
    histories = []
    # A trial that fails before its first result has no config in its Result;
    # Tune's own trial records still have it.
    # NOTE: `_experiment_analysis` is private in Ray 2.60; without it such rows keep an empty config.
    analysis = getattr(grid, "_experiment_analysis", None)
    configs_by_path = {trial.path: trial.config for trial in getattr(analysis, "trials", None) or []}
    for result in grid:
        config = _trial_config(result.config or configs_by_path.get(result.path) or {})
        metrics = result.metrics or {}
        history = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
        trial_id = metrics.get("trial_id") or (Path(result.path).name if result.path else "unknown")
        epochs = int(metrics.get("training_iteration", 0) or 0)

        if result.error is not None:
            status, stop_reason = "ERROR", "error"
        elif metrics.get("diverged"):
            status, stop_reason = "DIVERGED", "diverged"
        elif metrics.get("stop_reason"):
            status, stop_reason = "TERMINATED", metrics["stop_reason"]
        elif epochs < max_epochs:
            # The trainable did not stop itself, so the scheduler (or the stage's time budget) did.
            status, stop_reason = "STOPPED", "scheduler"
        else:
            status, stop_reason = "TERMINATED", "max_epochs"

        best_val = float(history["val_accuracy"].max()) if "val_accuracy" in history else math.nan
        best_epoch = int(history.loc[history["val_accuracy"].idxmax(), "training_iteration"]) if "val_accuracy" in history and len(history) else 0
        row = {
            "stage": stage,
            "trial_id": trial_id,
            "trial_name": Path(result.path).name if result.path else "",
            "status": status,
            "stop_reason": stop_reason,
            "error": _short_error(result.error),
            "model": config.get("model"),
            "family": get_spec(config["model"]).family if config.get("model") else None,
            "architecture": describe_config(config) if config.get("model") else "",
            "params": metrics.get("params"),
            "epochs": epochs,
            "train_time_s": metrics.get("train_time_s"),
            "last_train_loss": metrics.get("train_loss"),
            "last_train_accuracy": metrics.get("train_accuracy"),
            "last_val_loss": metrics.get("val_loss"),
            "last_val_accuracy": metrics.get("val_accuracy"),
            "best_val_accuracy": best_val,
            "best_epoch": best_epoch,
            "diverged": bool(metrics.get("diverged", False)),
            "test_accuracy": metrics.get("test_accuracy"),
            "test_rmse": metrics.get("test_rmse"),
            "test_loss": metrics.get("test_loss"),
            "test_macro_f1": metrics.get("test_macro_f1"),
            "seed": config.get("seed"),
            "path": result.path,
        }
        for key, value in config.items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                row[f"config/{key}"] = value
        rows.append(row)

        if len(history):
            frame = pd.DataFrame({"stage": stage, "trial_id": trial_id, "model": config.get("model")}, index=history.index)
            for column in HISTORY_COLUMNS:
                if column == "epoch":
                    frame[column] = history["training_iteration"] if "training_iteration" in history else history.get("epoch")
                elif column in history:
                    frame[column] = history[column]
            histories.append(frame)
    trials = pd.DataFrame(rows)
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame(columns=["stage", "trial_id", "model", *HISTORY_COLUMNS])
    return trials, history


def _short_error(error: Exception | None) -> str:
    if error is None:
        return ""
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:500]


def select_winners(trials: pd.DataFrame, top_k: int, per_model: bool) -> list[dict[str, Any]]:
    """Pick the top-k search configurations by best validation accuracy (per registered model when `per_model`).

    Errored and diverged trials are never chosen; the test set plays no part.
    """
    usable = trials[(trials["status"] != "ERROR") & (~trials["diverged"]) & trials["best_val_accuracy"].notna()]
    usable = usable.sort_values("best_val_accuracy", ascending=False)
    if per_model:
        usable = usable.groupby("model", sort=False).head(top_k)
    else:
        usable = usable.head(top_k)
    winners = []
    for _, row in usable.iterrows():
        config = {k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/") and _present(v)}
        config["search_trial_id"] = row["trial_id"]
        config["search_val_accuracy"] = float(row["best_val_accuracy"])
        winners.append(config)
    return winners


def _present(value: Any) -> bool:
    return not (isinstance(value, float) and math.isnan(value))


def summarise_final(final: pd.DataFrame) -> pd.DataFrame:
    """Build the comparison table: one row per retrained configuration (mean and std over seeds), with the study's figures."""
    rows = []
    if final.empty:
        return pd.DataFrame()
    for architecture, group in final.groupby("architecture", sort=False):
        tested = group[group["test_accuracy"].notna()]
        first = group.iloc[0]
        optimizer, early_stopping, _ = training_setup(first)
        study = study_result(first["model"], optimizer, early_stopping)
        accuracies = tested["test_accuracy"].astype(float)
        rows.append(
            {
                "model": first["model"],
                "architecture": architecture,
                "setup": describe_setup(first),
                "params": int(first["params"]) if _present(first["params"]) and first["params"] is not None else None,
                "train_time_s": float(tested["train_time_s"].mean()) if len(tested) else math.nan,
                "epochs": float(tested["epochs"].mean()) if len(tested) else math.nan,
                "val_accuracy": float(tested["last_val_accuracy"].mean()) if len(tested) else math.nan,
                "test_accuracy": float(accuracies.mean()) if len(tested) else math.nan,
                "test_accuracy_std": float(accuracies.std(ddof=1)) if len(tested) > 1 else math.nan,
                "test_rmse": float(tested["test_rmse"].mean()) if len(tested) else math.nan,
                "seeds": len(tested),
                "failed_seeds": len(group) - len(tested),
                "study_params": study.params if study else None,
                "study_train_time_s": study.train_time_s if study else None,
                "study_test_accuracy": study.test_accuracy if study else None,
                "study_test_rmse": study.test_rmse if study else None,
            }
        )
    table = pd.DataFrame(rows).sort_values("test_accuracy", ascending=False, na_position="last")
    return table.reset_index(drop=True)


def format_markdown(table: pd.DataFrame) -> str:
    """Format the summary as a Markdown table. Validation accuracy is the last epoch's (the weights that were tested)."""
    if table.empty:
        return "No final model finished training.\n"
    header = (
        "| model | architecture | setup | params | train time | epochs | val acc (last epoch) | test acc | "
        "test RMSE | seeds | study test acc | study RMSE | study train time |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for _, row in table.iterrows():
        accuracy = _fmt(row["test_accuracy"], 4)
        if _present(row["test_accuracy_std"]):
            accuracy += f" ± {row['test_accuracy_std']:.4f}"
        lines.append(
            f"| {row['model']} | {row['architecture']} | {row['setup']} | {_fmt_int(row['params'])} | "
            f"{format_duration(row['train_time_s'])} | {_fmt(row['epochs'], 1)} | {_fmt(row['val_accuracy'], 4)} | "
            f"{accuracy} | {_fmt(row['test_rmse'], 3)} | {row['seeds']} | {_fmt(row['study_test_accuracy'], 4)} | "
            f"{_fmt(row['study_test_rmse'], 3)} | {format_duration(row['study_train_time_s'])} |"
        )
    return header + "\n".join(lines) + "\n"


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.{digits}f}"


def _fmt_int(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{int(value):,}"
