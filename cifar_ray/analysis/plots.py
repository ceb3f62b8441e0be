"""The analysis figures, drawn with matplotlib's object-oriented API and saved as PNG.

Figures are built on `matplotlib.figure.Figure` and rendered by the Agg
canvas, so no display and no pyplot state are involved and the caller's
matplotlib backend is left alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter
from sklearn.metrics import ConfusionMatrixDisplay

from cifar_ray import io
from cifar_ray.analysis.features import FeatureMaps, strongest_channels
from cifar_ray.analysis.importance import RELIABLE_TRIALS, Importance
from cifar_ray.analysis.tables import pareto_front

DPI = 110
STATUS_COLOURS = {
    "TERMINATED": "tab:green",
    "STOPPED": "tab:orange",
    "DIVERGED": "tab:purple",
    "ERROR": "tab:red",
}
OTHER_STATUS_COLOUR = "tab:gray"
# Channels shown per conv layer in the feature-map figure.
FEATURE_MAP_CHANNELS = 4


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Write the figure as PNG atomically, so an interrupted run leaves no half-written image."""
    return io.atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI))


def confusion_matrix_figure(confusion: np.ndarray, class_names: list[str], title: str) -> Figure:
    """Draw the confusion matrix as a heat map, each row divided by its true-class count (so the diagonal is recall)."""
    confusion = np.asarray(confusion, dtype=float)
    totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    figure = new_figure(8.5, 7.5)
    axes = figure.add_subplot()
    display = ConfusionMatrixDisplay(shares, display_labels=class_names)
    display.plot(ax=axes, cmap="Blues", values_format=".2f", colorbar=True, xticks_rotation=45)
    display.im_.set_clim(0, 1)
    axes.set_title(f"{title}\nshare of each true class's test images (rows sum to 1)")
    return figure


def learning_curves_figure(history: pd.DataFrame, title: str, best_epoch: float | None) -> Figure:
    """Plot train and validation accuracy and loss per epoch."""
    figure = new_figure(11, 4.5)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    epochs = history["epoch"]
    # A diverged epoch reports a placeholder loss (cifar_ray.engine.DIVERGED_LOSS) that would flatten the curve.
    diverged = history["diverged"].fillna(False).astype(bool) if "diverged" in history else pd.Series(False, index=history.index)
    for axes, metric, label in ((accuracy_axes, "accuracy", "accuracy"), (loss_axes, "loss", "cross-entropy loss")):
        for split, marker, name in (("train", "o", "train"), ("val", "s", "validation")):
            values = history[f"{split}_{metric}"].where(~diverged)
            axes.plot(epochs, values, marker=marker, label=f"{name} {metric}")
        if best_epoch is not None and not math.isnan(best_epoch):
            axes.axvline(best_epoch, color="gray", linestyle=":", label=f"best validation epoch ({int(best_epoch)})")
        if diverged.any():
            axes.axvline(epochs[diverged].min(), color="tab:red", linestyle="--", label=f"diverged (epoch {int(epochs[diverged].min())})")
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    accuracy_axes.set_title("accuracy")
    loss_axes.set_title("loss")
    figure.suptitle(title)
    return figure


def tsne_figure(embedding: np.ndarray, labels: np.ndarray, class_names: list[str], title: str) -> Figure:
    """Scatter the t-SNE map, one colour per class."""
    figure = new_figure(9, 7)
    axes = figure.add_subplot()
    palette = colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for index, name in enumerate(class_names):
        mask = labels == index
        if mask.any():
            axes.scatter(embedding[mask, 0], embedding[mask, 1], s=6, alpha=0.7, color=palette(index % palette.N), label=name)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_xlabel("t-SNE 1")
    axes.set_ylabel("t-SNE 2")
    axes.legend(title="true class", loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, frameon=False)
    axes.set_title(title)
    return figure


def feature_maps_figure(
    images: np.ndarray, labels: np.ndarray, class_names: list[str], maps: FeatureMaps, title: str
) -> Figure:
    """Show one row per test image: the image, then the strongest channels of the first and of the last conv layer."""
    first_channels = strongest_channels(maps.first, FEATURE_MAP_CHANNELS)
    last_channels = strongest_channels(maps.last, FEATURE_MAP_CHANNELS)
    columns = 1 + len(first_channels) + len(last_channels)
    rows = len(images)
    figure = new_figure(1.25 * columns + 1, 1.25 * rows + 1)
    grid = figure.subplots(rows, columns, squeeze=False)
    for row in range(rows):
        cells = grid[row]
        cells[0].imshow(images[row], interpolation="nearest")
        cells[0].set_ylabel(class_names[labels[row]], rotation=0, ha="right", va="center", fontsize=10)
        for offset, (layer, channels, name) in enumerate(
            ((maps.first, first_channels, "first"), (maps.last, last_channels, "last"))
        ):
            for position, channel in enumerate(channels):
                axes = cells[1 + offset * len(first_channels) + position]
                axes.imshow(layer[row, channel], cmap="viridis", interpolation="nearest")
                if row == 0:
                    axes.set_title(f"{name} conv\nchannel {channel}", fontsize=8)
        for axes in cells:
            axes.set_xticks([])
            axes.set_yticks([])
    grid[0][0].set_title("test image", fontsize=8)
    figure.suptitle(
        f"{title}\nfirst conv: {maps.first_name} ({maps.first.shape[2]}x{maps.first.shape[3]}), "
        f"last conv: {maps.last_name} ({maps.last.shape[2]}x{maps.last.shape[3]}); "
        f"output before activation, {FEATURE_MAP_CHANNELS} strongest channels each, colours scaled per map",
        fontsize=9,
    )
    return figure


def accuracy_vs_cost_figure(summary: pd.DataFrame, study: pd.DataFrame, title: str) -> Figure:
    """Plot test accuracy against training time and against parameter count, with our Pareto front marked.

    `summary` has one row per tested final trial (model, train_time_s, params,
    test_accuracy), and `study` has the study's rows (key, train_time_s, params, test_accuracy).
    """
    figure = new_figure(13, 5.5)
    panels = figure.subplots(1, 2, sharey=True)
    for axes, cost, label in ((panels[0], "train_time_s", "training time (s, log scale)"), (panels[1], "params", "parameters (log scale)")):
        front = pareto_front(summary[cost].astype(float), summary["test_accuracy"].astype(float))
        axes.scatter(summary[cost], summary["test_accuracy"], s=40, color="tab:blue", zorder=3, label="ours: final test accuracy")
        on_front = summary[front].sort_values(cost)
        axes.step(on_front[cost], on_front["test_accuracy"], where="post", color="tab:blue", alpha=0.5, zorder=2)
        axes.scatter(
            on_front[cost], on_front["test_accuracy"], s=160, facecolors="none", edgecolors="tab:red", linewidths=1.5, zorder=4,
            label="Pareto front (ours)",
        )
        for _, row in summary.iterrows():
            axes.annotate(row["model"], (row[cost], row["test_accuracy"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if len(study):
            axes.scatter(
                study[cost], study["test_accuracy"], s=40, marker="s", facecolors="none", edgecolors="gray", zorder=3,
                label="study (Keras, one GPU)",
            )
            for _, row in study.iterrows():
                axes.annotate(row["key"], (row[cost], row["test_accuracy"]), textcoords="offset points", xytext=(5, -10), fontsize=7, color="gray")
        axes.set_xscale("log")
        # Minor-tick labels of a log axis spanning a few decades overlap each other.
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel(label)
        axes.grid(alpha=0.3, which="both")
    panels[0].set_ylabel("test accuracy")
    panels[0].legend(loc="lower right", fontsize=8)
    figure.suptitle(title)
    return figure


def parallel_coordinates_figure(trials: pd.DataFrame, columns: list[str], title: str) -> Figure:
    """Draw one line per trial across its hyperparameters, ending at its best validation accuracy and coloured by it.

    Each axis is scaled to the range of its column. A positive column that
    spans more than two decades (learning rate, L2) is drawn on a log scale.
    Trials without a validation accuracy (errors) are grey and dashed.
    """
    axes_columns = columns + ["best_val_accuracy"]
    scaled = pd.DataFrame(index=trials.index)
    tick_labels = []
    for column in axes_columns:
        values = trials[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            categories = sorted(values.dropna().astype(str).unique())
            codes = values.astype(str).map({name: i for i, name in enumerate(categories)}).astype(float)
            span = max(len(categories) - 1, 1)
            scaled[column] = codes / span
            tick_labels.append([(i / span, name) for i, name in enumerate(categories)])
            continue
        numbers = values.astype(float)
        low, high = numbers.min(), numbers.max()
        logarithmic = low > 0 and high / low > 100
        transformed = np.log10(numbers) if logarithmic else numbers
        t_low, t_high = transformed.min(), transformed.max()
        span = (t_high - t_low) or 1.0
        scaled[column] = (transformed - t_low) / span
        tick_labels.append([(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")] + ([(0.5, "log")] if logarithmic else []))

    figure = new_figure(max(8, 1.3 * len(axes_columns) + 2), 5.5)
    axes = figure.add_subplot()
    colour_map = colormaps["viridis"]
    accuracy = trials["best_val_accuracy"].astype(float)
    norm = Normalize(vmin=accuracy.min(), vmax=accuracy.max() if accuracy.max() > accuracy.min() else accuracy.min() + 1e-9)
    positions = np.arange(len(axes_columns))
    for index, row in scaled.iterrows():
        value = accuracy[index]
        if math.isnan(value):
            axes.plot(positions, row.to_numpy(), color="gray", linestyle="--", alpha=0.7)
        else:
            axes.plot(positions, row.to_numpy(), color=colour_map(norm(value)), alpha=0.85, linewidth=1.6)
    for position, labels in zip(positions, tick_labels):
        axes.axvline(position, color="black", linewidth=0.8)
        for height, text in labels:
            axes.text(position + 0.04, height, text, fontsize=7, va="center", bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
    axes.set_xticks(positions)
    axes.set_xticklabels([c.removeprefix("config/") for c in axes_columns], rotation=30, ha="right")
    axes.set_yticks([])
    axes.set_ylim(-0.05, 1.05)
    axes.set_xlim(-0.2, len(axes_columns) - 0.5)
    colour_bar = figure.colorbar(ScalarMappable(norm=norm, cmap=colour_map), ax=axes)
    colour_bar.set_label("best validation accuracy (best epoch)")
    axes.set_title(title)
    return figure


def budget_figure(trials: pd.DataFrame, history: pd.DataFrame, rungs: list[int], max_t: int, scheduler: str, title: str) -> Figure:
    """Picture the scheduler's budget: validation accuracy per epoch of every trial, and the epochs each one ran."""
    figure = new_figure(13, max(4.5, 0.3 * len(trials) + 2))
    curves, bars = figure.subplots(1, 2, width_ratios=[3, 2])
    for _, trial in trials.iterrows():
        colour = STATUS_COLOURS.get(trial["status"], OTHER_STATUS_COLOUR)
        epochs = history[history["trial_id"] == trial["trial_id"]].sort_values("epoch")
        if len(epochs):
            curves.plot(epochs["epoch"], epochs["val_accuracy"], color=colour, alpha=0.6, marker="o", markersize=3)
            curves.plot(epochs["epoch"].iloc[-1], epochs["val_accuracy"].iloc[-1], marker="X", markersize=9, color=colour)
    for rung in rungs:
        for axes in (curves, bars):
            axes.axvline(rung, color="gray", linestyle="--", linewidth=0.9)
    for axes in (curves, bars):
        axes.axvline(max_t, color="black", linestyle="-", linewidth=0.9)
    curves.set_xlabel("epoch (training_iteration)")
    curves.set_ylabel("validation accuracy")
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.grid(alpha=0.3)
    curves.set_title("validation accuracy per epoch; X: where the trial ended")

    ordered = trials.sort_values("best_val_accuracy", ascending=True, na_position="first")
    labels = [f"{row['trial_id']} {row['model']}" for _, row in ordered.iterrows()]
    colours = [STATUS_COLOURS.get(status, OTHER_STATUS_COLOUR) for status in ordered["status"]]
    bars.barh(np.arange(len(ordered)), ordered["epochs"].fillna(0).astype(float), color=colours)
    for position, (_, row) in enumerate(ordered.iterrows()):
        value = row["best_val_accuracy"]
        text = "no result" if pd.isna(value) else f"{value:.3f}"
        bars.text(float(row["epochs"] or 0) + 0.05, position, text, va="center", fontsize=7)
    bars.set_yticks(np.arange(len(ordered)))
    bars.set_yticklabels(labels, fontsize=7)
    bars.set_xlabel("epochs run (label: best validation accuracy)")
    bars.xaxis.set_major_locator(MaxNLocator(integer=True))
    bars.set_xlim(0, max_t * 1.25 + 0.5)
    bars.set_title("epochs each trial ran, best trial on top")

    handles = [Line2D([], [], color=colour, linewidth=6, label=status) for status, colour in STATUS_COLOURS.items()]
    handles.append(Line2D([], [], color="black", label=f"max_t ({max_t} epochs)"))
    if rungs:
        handles.append(Line2D([], [], color="gray", linestyle="--", label=f"{scheduler.upper()} rungs ({', '.join(map(str, rungs))})"))
    curves.legend(handles=handles, fontsize=8, loc="lower right")
    figure.suptitle(title)
    return figure


def importance_figure(importance: Importance, title: str) -> Figure:
    """Plot permutation importance (with its spread over repeats) beside the forest's impurity importance."""
    frame = importance.frame.iloc[::-1]
    figure = new_figure(12, max(3.5, 0.45 * len(frame) + 2))
    permutation, impurity = figure.subplots(1, 2, sharey=True)
    positions = np.arange(len(frame))
    permutation.barh(positions, frame["permutation_mean"], xerr=frame["permutation_std"], color="tab:blue", alpha=0.8)
    permutation.set_yticks(positions)
    permutation.set_yticklabels(frame["hyperparameter"])
    permutation.set_xlabel("drop in R² when shuffled (mean ± std over 20 repeats)")
    permutation.set_title("permutation importance")
    permutation.axvline(0, color="black", linewidth=0.8)
    impurity.barh(positions, frame["impurity"], color="tab:green", alpha=0.8)
    impurity.set_xlabel("share of impurity decrease")
    impurity.set_title("impurity importance (random forest)")
    caveat = (
        f"{importance.trials} trials, out-of-bag R² {importance.oob_r2:.2f}"
        if not math.isnan(importance.oob_r2)
        else f"{importance.trials} trials, out-of-bag R² not available"
    )
    if not importance.reliable:
        caveat += f"; fewer than {RELIABLE_TRIALS} trials, so indicative only"
    figure.suptitle(f"{title}\n{caveat}")
    return figure
