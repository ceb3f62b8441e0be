"""The analysis tables: final models beside the study, every trial with its status, and derived comparisons.

Every value is copied or computed from trials.parquet and the models'
metrics.json files, and the study's figures come from cifar_ray.reference.
Validation accuracy always names its epoch: `last_val_accuracy` is the last
epoch's (the weights that were tested, unless a run restored its best epoch)
and `best_val_accuracy` the best epoch's, which Ray ranks trials by.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report

from cifar_ray.reference import study_result

# Steps of the study's architecture ladder: what one change of depth,
# regularisation or family bought. Names are registered models.
ARCHITECTURE_STEPS = [
    ("fcnn2", "fcnn3", "one more dense layer"),
    ("fcnn2", "fcnn2_l2", "L2 on the 2-layer FCNN"),
    ("fcnn3", "fcnn3_l2", "L2 on the 3-layer FCNN"),
    ("fcnn3", "cnn2", "convolutions instead of dense layers"),
    ("cnn2", "cnn3", "one more conv layer"),
    ("cnn2", "cnn2_reg", "dropout and L2 on the 2-conv CNN"),
    ("cnn3", "cnn3_reg", "dropout and L2 on the 3-conv CNN"),
    ("cnn3_reg", "resnet", "a 20-layer ResNet instead of the 3-conv CNN"),
]


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def training_setup(row: pd.Series) -> tuple[str, bool, int | None]:
    """Return the optimiser, whether early stopping was on, and the epoch limit of a trial row.

    A search configuration carries no optimiser or stopping keys, so the
    TrainConfig defaults apply: Nadam with early stopping.
    """
    optimizer = row.get("config/optimizer")
    optimizer = "nadam" if is_missing(optimizer) or not optimizer else str(optimizer)
    early_stopping = row.get("config/early_stopping")
    early_stopping = True if is_missing(early_stopping) else bool(early_stopping)
    epochs = row.get("config/epochs")
    epochs = None if is_missing(epochs) else int(epochs)
    return optimizer, early_stopping, epochs


def describe_setup(row: pd.Series) -> str:
    optimizer, early_stopping, epochs = training_setup(row)
    if early_stopping:
        return f"{optimizer}, early stopping"
    return f"{optimizer}, {epochs} epochs" if epochs else f"{optimizer}, fixed epochs"


def study_columns(row: pd.Series) -> dict[str, Any]:
    """Return the study's figures for the same model and training setup, or missing values when it has none."""
    optimizer, early_stopping, _ = training_setup(row)
    study = study_result(str(row["model"]), optimizer, early_stopping) if not is_missing(row.get("model")) else None
    return {
        "study_setup": study.setup if study else None,
        "study_params": study.params if study else None,
        "study_train_time_s": study.train_time_s if study else None,
        "study_test_accuracy": study.test_accuracy if study else None,
        "study_test_rmse": study.test_rmse if study else None,
    }


def status_text(row: pd.Series) -> str:
    """Return the status with the reason the trial stopped, e.g. `STOPPED (scheduler)` or `ERROR: <message>`."""
    status = str(row["status"])
    if status == "ERROR":
        error = row.get("error")
        return f"ERROR: {error}" if isinstance(error, str) and error else "ERROR"
    reason = row.get("stop_reason")
    return f"{status} ({reason})" if isinstance(reason, str) and reason else status


def summary_table(final: pd.DataFrame, metrics_by_trial: dict[str, dict[str, Any] | None]) -> pd.DataFrame:
    """Build one row per final trial, failed ones included, with the study's figures beside ours.

    `metrics_by_trial` maps a trial id to its metrics.json contents, or None
    when the file is missing. Its `weights` entry records which epoch's weights were tested.
    """
    rows = []
    for _, row in final.iterrows():
        metrics = metrics_by_trial.get(str(row["trial_id"])) or {}
        rows.append(
            {
                "model": row["model"],
                "trial_id": row["trial_id"],
                "architecture": row["architecture"],
                "setup": describe_setup(row),
                "status": status_text(row),
                "seed": row["seed"],
                "params": row["params"],
                "train_time_s": row["train_time_s"],
                "epochs": row["epochs"],
                "best_epoch": row["best_epoch"],
                "last_val_accuracy": row["last_val_accuracy"],
                "best_val_accuracy": row["best_val_accuracy"],
                "tested_weights": _tested_weights(metrics, row),
                "test_accuracy": row["test_accuracy"],
                "test_rmse": row["test_rmse"],
                "test_macro_f1": row["test_macro_f1"],
                **study_columns(row),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values("test_accuracy", ascending=False, na_position="last").reset_index(drop=True)


def _tested_weights(metrics: dict[str, Any], row: pd.Series) -> str:
    weights = metrics.get("weights")
    if weights == "best":
        return f"best epoch ({metrics.get('best_epoch', row['best_epoch'])})"
    if weights == "last":
        return "last epoch"
    restore_best = row.get("config/restore_best")
    if not is_missing(restore_best):
        return "best epoch" if bool(restore_best) else "last epoch"
    return "not recorded"


def trials_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Return every trial of every stage with its status. No trial is dropped, whatever its outcome."""
    columns = [
        "stage",
        "trial_id",
        "model",
        "architecture",
        "params",
        "epochs",
        "train_time_s",
        "last_val_accuracy",
        "best_val_accuracy",
        "best_epoch",
        "test_accuracy",
    ]
    table = trials[columns].copy()
    table.insert(2, "status", trials.apply(status_text, axis=1) if len(trials) else pd.Series(dtype=str))
    order = {stage: index for index, stage in enumerate(trials["stage"].dropna().unique())}
    table["_stage_order"] = table["stage"].map(order)
    table = table.sort_values(["_stage_order", "best_val_accuracy"], ascending=[True, False], na_position="last")
    return table.drop(columns="_stage_order").reset_index(drop=True)


def status_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Count the trials per stage and status."""
    if trials.empty:
        return pd.DataFrame()
    return trials.groupby(["stage", "status"], sort=False).size().unstack(fill_value=0)


def pareto_front(costs: pd.Series, accuracies: pd.Series) -> pd.Series:
    """Mark the points no other point beats on both cost (lower is better) and accuracy (higher is better)."""
    valid = costs.notna() & accuracies.notna()
    front = pd.Series(False, index=costs.index)
    best_so_far = -math.inf
    # Cheapest first. Among equal costs the most accurate comes first, so only it can join the front.
    order = pd.DataFrame({"cost": costs[valid], "accuracy": accuracies[valid]}).sort_values(
        ["cost", "accuracy"], ascending=[True, False]
    )
    for index, point in order.iterrows():
        if point["accuracy"] > best_so_far:
            front[index] = True
            best_so_far = point["accuracy"]
    return front


def asha_rungs(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """Epochs at which Ray's ASHAScheduler (one bracket) compares trials: grace_period * reduction_factor**k <= max_t."""
    if grace_period < 1 or reduction_factor < 2:
        return []
    rungs = []
    milestone = grace_period
    while milestone <= max_t:
        rungs.append(milestone)
        milestone *= reduction_factor
    return rungs


def classification_report_frame(confusion: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Rebuild scikit-learn's classification report from a confusion matrix (rows: true class)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    labels = np.arange(len(class_names))
    y_true = np.repeat(np.repeat(labels, len(labels)), confusion.ravel())
    y_pred = np.repeat(np.tile(labels, len(labels)), confusion.ravel())
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=class_names, output_dict=True, zero_division=0
    )
    accuracy = report.pop("accuracy", None)
    frame = pd.DataFrame(report).T
    frame.index.name = "class"
    frame["support"] = frame["support"].astype(int)
    if accuracy is not None:
        frame.loc["accuracy"] = [math.nan, math.nan, accuracy, int(confusion.sum())]
    return frame


def class_f1_table(reports: dict[str, pd.DataFrame], class_names: list[str]) -> pd.DataFrame:
    """Tabulate the F1 score per class (rows) and final model (columns), with their mean, hardest class first."""
    table = pd.DataFrame({name: report.loc[class_names, "f1-score"] for name, report in reports.items()})
    table.index.name = "class"
    table["mean"] = table.mean(axis=1)
    return table.sort_values("mean")


def confused_pairs(confusion: np.ndarray, class_names: list[str], top: int = 5) -> pd.DataFrame:
    """Return the most frequent mistakes: true class, predicted class, count and share of the true class's images."""
    confusion = np.asarray(confusion, dtype=np.int64)
    totals = confusion.sum(axis=1)
    rows = []
    for true_index, predicted_index in zip(*np.nonzero(~np.eye(len(class_names), dtype=bool))):
        count = int(confusion[true_index, predicted_index])
        if count:
            rows.append(
                {
                    "true_class": class_names[true_index],
                    "predicted_class": class_names[predicted_index],
                    "count": count,
                    "share_of_true_class": count / totals[true_index] if totals[true_index] else math.nan,
                }
            )
    frame = pd.DataFrame(rows, columns=["true_class", "predicted_class", "count", "share_of_true_class"])
    return frame.sort_values("count", ascending=False).head(top).reset_index(drop=True)


def mutual_confusions(confusion: np.ndarray, class_names: list[str], top: int = 3) -> pd.DataFrame:
    """Return the class pairs mixed up most in either direction, with the summed count of both mistakes."""
    confusion = np.asarray(confusion, dtype=np.int64)
    both_ways = confusion + confusion.T
    rows = [
        {"class_a": class_names[i], "class_b": class_names[j], "count": int(both_ways[i, j])}
        for i, j in zip(*np.triu_indices(len(class_names), k=1))
        if both_ways[i, j]
    ]
    frame = pd.DataFrame(rows, columns=["class_a", "class_b", "count"])
    return frame.sort_values("count", ascending=False).head(top).reset_index(drop=True)


def architecture_steps(trials: pd.DataFrame) -> pd.DataFrame:
    """Compare the two ends of each step of the study's ladder, in our sweep and in the study.

    Both ends of a step are compared on the same metric and training setup: the
    final test accuracy when both models were retrained, else the best search
    validation accuracy when both were searched. Each model's best trial counts.
    """
    ours = _best_per_model(trials)
    rows = []
    for source, target, change in ARCHITECTURE_STEPS:
        for (setup, metric), values in ours.items():
            if source not in values or target not in values:
                continue
            before, after = values[source], values[target]
            study_before = study_result(source, *before["study_key"])
            study_after = study_result(target, *after["study_key"])
            rows.append(
                {
                    "step": f"{source} → {target}",
                    "change": change,
                    "setup": setup,
                    "metric": metric,
                    "from_value": before["value"],
                    "to_value": after["value"],
                    "difference": after["value"] - before["value"],
                    "from_params": before["params"],
                    "to_params": after["params"],
                    "from_train_time_s": before["train_time_s"],
                    "to_train_time_s": after["train_time_s"],
                    "study_difference": (
                        study_after.test_accuracy - study_before.test_accuracy if study_before and study_after else None
                    ),
                }
            )
    return pd.DataFrame(rows)


def _best_per_model(trials: pd.DataFrame) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """Collect, for each (setup, metric), the best trial of each model as {model: {value, params, train_time_s, study_key}}."""
    grouped: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    final = trials[(trials["stage"] == "final") & trials["test_accuracy"].notna()]
    search = trials[(trials["stage"] != "final") & trials["best_val_accuracy"].notna() & (trials["status"] != "ERROR")]
    for frame, metric, column in ((final, "test accuracy (final)", "test_accuracy"), (search, "best val accuracy (search)", "best_val_accuracy")):
        for _, row in frame.sort_values(column, ascending=False).iterrows():
            optimizer, early_stopping, _ = training_setup(row)
            values = grouped.setdefault((describe_setup(row), metric), {})
            values.setdefault(
                str(row["model"]),
                {
                    "value": float(row[column]),
                    "params": row["params"],
                    "train_time_s": row["train_time_s"],
                    "study_key": (optimizer, early_stopping),
                },
            )
    return grouped


# Formatting for Markdown. A missing value prints as an en dash.


def format_float(digits: int) -> Callable[[Any], str]:
    return lambda value: "–" if is_missing(value) else f"{float(value):.{digits}f}"


def format_signed(digits: int) -> Callable[[Any], str]:
    return lambda value: "–" if is_missing(value) else f"{float(value):+.{digits}f}"


def format_number(value: Any) -> str:
    return "–" if is_missing(value) else f"{float(value):g}"


def format_int(value: Any) -> str:
    return "–" if is_missing(value) else f"{int(value):,}"


def format_duration(seconds: Any) -> str:
    if is_missing(seconds):
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def format_text(value: Any) -> str:
    return "–" if is_missing(value) else str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, columns: dict[str, tuple[str, Callable[[Any], str]]], index: str | None = None) -> str:
    """Render `frame` as a Markdown table. `columns` maps a column to its header and formatter.

    `index`, when given, is the header of a first column that contains the frame's index.
    """
    headers = ([index] if index else []) + [header for header, _ in columns.values()]
    numeric = [False] * (1 if index else 0) + [
        pd.api.types.is_numeric_dtype(frame[column]) if column in frame else False for column in columns
    ]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if is_number else "---" for is_number in numeric) + "|",
    ]
    for label, row in frame.iterrows():
        cells = [format_text(label)] if index else []
        cells += [formatter(row.get(column)) for column, (_, formatter) in columns.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SUMMARY_COLUMNS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "model": ("model", format_text),
    "trial_id": ("trial", format_text),
    "architecture": ("architecture", format_text),
    "setup": ("setup", format_text),
    "status": ("status", format_text),
    "params": ("params", format_int),
    "train_time_s": ("train time", format_duration),
    "epochs": ("epochs", format_int),
    "last_val_accuracy": ("val acc (last epoch)", format_float(4)),
    "best_val_accuracy": ("val acc (best epoch)", format_float(4)),
    "tested_weights": ("tested weights", format_text),
    "test_accuracy": ("test acc", format_float(4)),
    "test_rmse": ("test RMSE", format_float(3)),
    "study_setup": ("study setup", format_text),
    "study_params": ("study params", format_int),
    "study_train_time_s": ("study train time", format_duration),
    "study_test_accuracy": ("study test acc", format_float(4)),
    "study_test_rmse": ("study RMSE", format_float(3)),
}

TRIALS_COLUMNS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "stage": ("stage", format_text),
    "trial_id": ("trial", format_text),
    "status": ("status", format_text),
    "model": ("model", format_text),
    "params": ("params", format_int),
    "epochs": ("epochs run", format_int),
    "train_time_s": ("train time", format_duration),
    "last_val_accuracy": ("val acc (last epoch)", format_float(4)),
    "best_val_accuracy": ("val acc (best epoch)", format_float(4)),
    "best_epoch": ("best epoch", format_int),
    "test_accuracy": ("test acc", format_float(4)),
}
