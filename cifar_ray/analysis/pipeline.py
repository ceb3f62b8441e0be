"""`analyse_sweep`: every table, figure and REPORT.md for one sweep output folder.

Each output is produced on its own: one that fails (a missing model file, an
unreadable data source, a plotting error) is logged and listed under
"Skipped" in REPORT.md, and the others are still written.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from cifar_ray import io
from cifar_ray.analysis import features, plots
from cifar_ray.analysis.folder import FinalModelFiles, Skips, SweepFolder, final_model_files, load_folder
from cifar_ray.analysis.importance import Importance, hyperparameter_importance, searched_columns
from cifar_ray.analysis.ray_check import RayCheck, check_stages, checks_frame
from cifar_ray.analysis.report import write_report
from cifar_ray.analysis.tables import (
    SUMMARY_COLUMNS,
    TRIALS_COLUMNS,
    architecture_steps,
    asha_rungs,
    class_f1_table,
    classification_report_frame,
    markdown_table,
    summary_table,
    trials_table,
)
from cifar_ray.checkpoint import load_model
from cifar_ray.reference import STUDY_RESULTS

logger = logging.getLogger(__name__)

ANALYSIS_FOLDER = "analysis"
REPORT_FILE = "REPORT.md"
TSNE_SAMPLES = 2000  # test images in each t-SNE map (seeded, stratified)

Result = TypeVar("Result")


@dataclass
class ModelAnalysis:
    """Outputs for one final trial."""

    files: FinalModelFiles
    row: pd.Series  # the trial's row of trials.parquet
    report: pd.DataFrame | None = None  # classification report (per class and averages)
    confusion: np.ndarray | None = None
    figures: dict[str, Path] = field(default_factory=dict)  # "confusion_matrix", "learning_curves", "tsne", "feature_maps"


@dataclass
class StageAnalysis:
    """Outputs for one search stage."""

    stage: str
    trials: int
    figures: dict[str, Path] = field(default_factory=dict)  # "budget", "parallel_coordinates", "importance"
    importance: Importance | None = None
    importance_note: str = ""  # why importance is missing, when it is


@dataclass
class Analysis:
    """Everything the report is written from."""

    folder: SweepFolder
    skips: Skips
    summary: pd.DataFrame
    trials: pd.DataFrame
    models: list[ModelAnalysis]
    stages: list[StageAnalysis]
    steps: pd.DataFrame
    class_f1: pd.DataFrame
    ray_checks: list[RayCheck]
    tsne_samples: int
    seed: int
    figures: dict[str, Path] = field(default_factory=dict)  # sweep-wide: "accuracy_vs_cost"
    tables: list[Path] = field(default_factory=list)


def analyse_sweep(out: Path, tsne_samples: int = TSNE_SAMPLES, seed: int = 0, embeddings: bool = True) -> dict[str, Any]:
    """Write OUT/analysis/ (tables and figures) and OUT/REPORT.md for the sweep output folder `out`.

    `tsne_samples` test images go into each t-SNE map. `embeddings=False` skips
    the t-SNE maps and feature maps, which are the only outputs that need the
    model files and the data set. OUT/analysis/ is rebuilt from scratch, so no
    output of an earlier run survives next to the new ones. Returns the paths
    written, the skipped outputs with their reasons and the Ray check's outcome.
    """
    started = time.perf_counter()
    out = Path(out)
    skips = Skips()
    folder = load_folder(out, skips)
    target = out / ANALYSIS_FOLDER
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    logger.info("analysing %s: %d trials in stages %s", out, len(folder.trials), folder.trials["stage"].dropna().unique().tolist())

    # Tables of the final models and of every trial.
    final = folder.final
    models = [ModelAnalysis(final_model_files(folder, row), row) for _, row in final.iterrows()]
    summary = summary_table(final, {m.files.trial_id: m.files.metrics for m in models})
    trials = trials_table(folder.trials)
    analysis = Analysis(
        folder=folder,
        skips=skips,
        summary=summary,
        trials=trials,
        models=models,
        stages=[],
        steps=_attempt("architecture steps", skips, lambda: architecture_steps(folder.trials)),
        class_f1=pd.DataFrame(),
        ray_checks=[],
        tsne_samples=tsne_samples,
        seed=seed,
    )
    if analysis.steps is None:
        analysis.steps = pd.DataFrame()
    _write_tables(analysis, target)

    # Per final model: report, confusion matrix, learning curves, then the data-dependent pictures.
    for index, model in enumerate(models, start=1):
        logger.info("model %d/%d: %s", index, len(models), model.files.name)
        _analyse_model_results(analysis, model, target / "models" / model.files.name)
    _write_class_tables(analysis, target)
    if embeddings:
        _analyse_model_internals(analysis, target)
    elif models:
        skips.add("t-SNE maps and feature maps", "turned off (embeddings=False / --no-embeddings)")

    # Sweep-wide pictures.
    _attempt("accuracy against training time and parameters", skips, lambda: _accuracy_vs_cost(analysis, target))
    for stage in folder.search_stages():
        analysis.stages.append(_analyse_stage(analysis, stage, target))

    analysis.ray_checks = check_stages(folder)
    if analysis.ray_checks:
        io.write_csv(target / "ray_check.csv", checks_frame(analysis.ray_checks))
        analysis.tables.append(target / "ray_check.csv")

    report_path = write_report(analysis, out / REPORT_FILE)
    seconds = time.perf_counter() - started
    logger.info("analysis of %s finished in %.1f s with %d output(s) skipped, report %s", out, seconds, len(skips), report_path)
    return {
        "report": report_path,
        "tables": analysis.tables,
        "figures": _all_figures(analysis),
        "skipped": [{"item": skip.item, "reason": skip.reason} for skip in skips],
        "ray_check": [check.as_dict() for check in analysis.ray_checks],
        "seconds": seconds,
    }


def _attempt(item: str, skips: Skips, produce: Callable[[], Result]) -> Result | None:
    """Run one output's producer. On any failure, record the output as skipped and go on with the next."""
    try:
        return produce()
    except (FileNotFoundError, ValueError) as error:
        # Missing files and mismatched data: the message names the value and the fix, so no traceback.
        logger.debug("could not produce %s", item, exc_info=True)
        skips.add(item, str(error))
    except Exception as error:  # one broken output must not cost the others, and the reason goes into the report
        logger.exception("could not produce %s", item)
        skips.add(item, f"{type(error).__name__}: {error}")
    return None


def _figure(
    figures: dict[str, Path], key: str, item: str, skips: Skips, build: Callable[[], Any], path: Path
) -> None:
    """Draw and save one figure under `figures[key]`, or record it as skipped."""
    saved = _attempt(item, skips, lambda: plots.save_figure(build(), path))
    if saved is not None:
        figures[key] = saved


def _all_figures(analysis: Analysis) -> list[Path]:
    figures = list(analysis.figures.values())
    for model in analysis.models:
        figures += model.figures.values()
    for stage in analysis.stages:
        figures += stage.figures.values()
    return figures


def _write_tables(analysis: Analysis, target: Path) -> None:
    summary, trials = analysis.summary, analysis.trials
    header = "Validation accuracy of the last epoch and of the best epoch; test accuracy of the tested weights.\n\n"
    if len(summary):
        io.write_csv(target / "summary.csv", summary)
        io.write_text(target / "summary.md", "# Final models\n\n" + header + markdown_table(summary, SUMMARY_COLUMNS))
        analysis.tables += [target / "summary.csv", target / "summary.md"]
    else:
        analysis.skips.add("summary table", "no final-stage trial in trials.parquet (the sweep stopped before its final stage)")

    if len(trials):
        io.write_csv(target / "trials.csv", trials)
        io.write_text(target / "trials.md", "# Every trial\n\n" + markdown_table(trials, TRIALS_COLUMNS))
        analysis.tables += [target / "trials.csv", target / "trials.md"]
    if len(analysis.steps):
        io.write_csv(target / "architecture_steps.csv", analysis.steps)
        analysis.tables.append(target / "architecture_steps.csv")

    # Several seeds per configuration: the sweep's own mean and spread over seeds.
    final = analysis.folder.final
    if len(final) and final.groupby("architecture")["trial_id"].count().max() > 1:
        # Imported here because cifar_ray.tune.results imports Ray, which takes seconds.
        from cifar_ray.tune.results import summarise_final

        io.write_csv(target / "summary_by_configuration.csv", summarise_final(final))
        analysis.tables.append(target / "summary_by_configuration.csv")


def _analyse_model_results(analysis: Analysis, model: ModelAnalysis, target: Path) -> None:
    """Write the classification report, confusion matrix and learning curves, from metrics.json and history.parquet."""
    skips, files = analysis.skips, model.files
    metrics = files.metrics or {}
    class_names = list(metrics.get("class_names") or analysis.folder.class_names)
    title = f"{files.model} (trial {files.trial_id})"

    confusion = metrics.get("confusion_matrix")
    if confusion is not None and class_names:
        model.confusion = np.asarray(confusion, dtype=np.int64)
        model.report = classification_report_frame(model.confusion, class_names)
        io.write_csv(target / "classification_report.csv", model.report.reset_index())
        analysis.tables.append(target / "classification_report.csv")
        _figure(
            model.figures,
            "confusion_matrix",
            f"{files.name}: confusion matrix",
            skips,
            lambda: plots.confusion_matrix_figure(model.confusion, class_names, f"{title}: confusion matrix on the test set"),
            target / "confusion_matrix.png",
        )
    else:
        skips.add(f"{files.name}: classification report and confusion matrix", files.metrics_missing or "metrics.json has no confusion matrix")

    history = analysis.folder.history
    epochs = history[(history["stage"] == "final") & (history["trial_id"] == files.trial_id)].sort_values("epoch")
    if epochs.empty and metrics.get("history"):
        epochs = pd.DataFrame(metrics["history"])
    if epochs.empty:
        skips.add(f"{files.name}: learning curves", "no per-epoch history in history.parquet or metrics.json")
        return
    best_epoch = model.row.get("best_epoch")
    _figure(
        model.figures,
        "learning_curves",
        f"{files.name}: learning curves",
        skips,
        lambda: plots.learning_curves_figure(epochs, f"{title}: learning curves", float(best_epoch) if pd.notna(best_epoch) else None),
        target / "learning_curves.png",
    )


def _write_class_tables(analysis: Analysis, target: Path) -> None:
    reports = {model.files.name: model.report for model in analysis.models if model.report is not None}
    class_names = analysis.folder.class_names
    if reports and class_names:
        analysis.class_f1 = class_f1_table(reports, class_names)
        io.write_csv(target / "class_f1.csv", analysis.class_f1.reset_index())
        analysis.tables.append(target / "class_f1.csv")


def _analyse_model_internals(analysis: Analysis, target: Path) -> None:
    """Draw the t-SNE map of the last hidden layer and the conv feature maps of every final model whose file exists."""
    for model in analysis.models:
        if model.files.model_path is None:
            analysis.skips.add(f"{model.files.name}: t-SNE map and feature maps", model.files.model_missing)
    with_files = [model for model in analysis.models if model.files.model_path is not None]
    if not with_files:
        return
    test = _attempt("test images for t-SNE and feature maps", analysis.skips, lambda: features.load_test_images(analysis.folder))
    if test is None:
        for model in with_files:
            analysis.skips.add(f"{model.files.name}: t-SNE map and feature maps", "the test images could not be read (see above)")
        return
    subset = features.stratified_subset(test.labels, analysis.tsne_samples, analysis.seed)
    per_class = features.first_image_per_class(test.labels, len(test.class_names))

    for model in with_files:
        name = model.files.name
        loaded = _attempt(f"{name}: loading the model file", analysis.skips, lambda: load_model(model.files.model_path))
        if loaded is None:
            continue
        network, metadata = loaded
        try:
            features.check_model_matches(test, metadata)
        except ValueError as error:
            analysis.skips.add(f"{name}: t-SNE map and feature maps", str(error))
            continue
        folder = target / "models" / name
        title = f"{model.files.model} (trial {model.files.trial_id})"

        def draw_tsne() -> Path:
            activations = features.last_hidden_activations(network, test.images[subset], metadata["mean_image"])
            embedding = features.tsne_embedding(activations, analysis.seed)
            figure = plots.tsne_figure(
                embedding,
                test.labels[subset],
                test.class_names,
                f"{title}: t-SNE of the last hidden layer ({activations.shape[1]} units)\n"
                f"{len(subset):,} of {len(test.labels):,} test images, stratified, seed {analysis.seed}",
            )
            return plots.save_figure(figure, folder / "tsne.png")

        logger.info("t-SNE of %s on %d test images", name, len(subset))
        path = _attempt(f"{name}: t-SNE map", analysis.skips, draw_tsne)
        if path is not None:
            model.figures["tsne"] = path

        if not hasattr(network, "conv_layers"):
            continue

        def draw_feature_maps() -> Path:
            maps = features.conv_feature_maps(network, test.images[per_class], metadata["mean_image"])
            figure = plots.feature_maps_figure(
                test.images[per_class],
                test.labels[per_class],
                test.class_names,
                maps,
                f"{title}: feature maps, the first test image of each class",
            )
            return plots.save_figure(figure, folder / "feature_maps.png")

        path = _attempt(f"{name}: feature maps", analysis.skips, draw_feature_maps)
        if path is not None:
            model.figures["feature_maps"] = path


def _accuracy_vs_cost(analysis: Analysis, target: Path) -> None:
    tested = analysis.summary[analysis.summary["test_accuracy"].notna()] if len(analysis.summary) else analysis.summary
    if tested.empty:
        analysis.skips.add("accuracy against training time and parameters", "no final model has a test accuracy")
        return
    study = pd.DataFrame(
        [
            {"key": r.key, "train_time_s": r.train_time_s, "params": r.params, "test_accuracy": r.test_accuracy}
            for r in STUDY_RESULTS
        ]
    )
    figure = plots.accuracy_vs_cost_figure(
        tested, study, f"{analysis.folder.sweep.get('script', 'sweep')}: test accuracy against training cost (ours vs the study)"
    )
    analysis.figures["accuracy_vs_cost"] = plots.save_figure(figure, target / "accuracy_vs_cost.png")


def _analyse_stage(analysis: Analysis, stage: str, target: Path) -> StageAnalysis:
    """Draw the budget picture, parallel coordinates and hyperparameter importance of one search stage."""
    folder, skips = analysis.folder, analysis.skips
    trials = folder.trials[folder.trials["stage"] == stage]
    history = folder.history[folder.history["stage"] == stage]
    result = StageAnalysis(stage=stage, trials=len(trials))
    profile, args = folder.profile, folder.args
    max_t = int(profile.get("max_epochs") or trials["epochs"].max() or 1)
    scheduler = str(args.get("scheduler") or "asha")

    # ASHA compares trials at fixed rungs. HyperBand's brackets each have their own, so only max_t is drawn for it.
    rungs = asha_rungs(int(profile.get("grace_period") or 1), int(profile.get("reduction_factor") or 2), max_t) if scheduler == "asha" else []
    _figure(
        result.figures,
        "budget",
        f"{stage}: scheduler budget",
        skips,
        lambda: plots.budget_figure(trials, history, rungs, max_t, scheduler, f"{stage}: the {scheduler.upper()} scheduler's budget ({len(trials)} trials)"),
        target / f"budget_{stage}.png",
    )

    columns = searched_columns(trials)
    if columns and len(trials) >= 2:
        _figure(
            result.figures,
            "parallel_coordinates",
            f"{stage}: parallel coordinates",
            skips,
            lambda: plots.parallel_coordinates_figure(trials, columns, f"{stage}: hyperparameters of each trial and its best validation accuracy"),
            target / f"parallel_coordinates_{stage}.png",
        )
    else:
        skips.add(
            f"{stage}: parallel coordinates",
            f"{len(trials)} trial(s) and {len(columns)} varying hyperparameter(s); at least 2 trials and 1 varying hyperparameter are needed",
        )

    importance = _attempt(f"{stage}: hyperparameter importance", skips, lambda: hyperparameter_importance(trials, stage, analysis.seed))
    if isinstance(importance, str):
        result.importance_note = importance
        skips.add(f"{stage}: hyperparameter importance", importance)
    elif importance is not None:
        result.importance = importance
        io.write_csv(target / f"importance_{stage}.csv", importance.frame)
        analysis.tables.append(target / f"importance_{stage}.csv")
        _figure(
            result.figures,
            "importance",
            f"{stage}: importance figure",
            skips,
            lambda: plots.importance_figure(importance, f"{stage}: which hyperparameters drove best_val_accuracy"),
            target / f"importance_{stage}.png",
        )
    return result
