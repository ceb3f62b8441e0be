"""REPORT.md: the sweep's findings for a reader deciding which architecture to build.

Every number is computed from the files in the output folder (sweep.json,
trials.parquet, history.parquet, the models' metrics.json) or taken from the
study's table in cifar_ray.reference. Figures are linked relative to the report.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from cifar_ray import io
from cifar_ray.analysis.importance import RELIABLE_TRIALS
from cifar_ray.analysis.tables import (
    ARCHITECTURE_STEPS,
    SUMMARY_COLUMNS,
    TRIALS_COLUMNS,
    asha_rungs,
    confused_pairs,
    format_duration,
    format_float,
    format_int,
    format_number,
    format_signed,
    format_text,
    is_missing,
    markdown_table,
    mutual_confusions,
    pareto_front,
    status_counts,
)

if TYPE_CHECKING:
    from cifar_ray.analysis.pipeline import Analysis, ModelAnalysis, StageAnalysis

# Figures of one final model, in the order the report shows them.
MODEL_FIGURES = {
    "confusion_matrix": "Confusion matrix",
    "learning_curves": "Learning curves",
    "tsne": "t-SNE of the last hidden layer",
    "feature_maps": "Feature maps of the first and last conv layers",
}
STAGE_FIGURES = {
    "budget": "Scheduler budget",
    "parallel_coordinates": "Hyperparameters against validation accuracy",
    "importance": "Hyperparameter importance",
}


def write_report(analysis: Analysis, path: Path) -> Path:
    """Write REPORT.md for an `Analysis` to `path`."""
    report = _Report(analysis, path.parent)
    sections = [
        report.header(),
        report.recommendation(),
        report.final_models(),
        report.architecture_steps(),
        report.classes(),
        report.study_comparison(),
        report.models(),
        report.search(),
        report.ray_check(),
        report.skipped(),
    ]
    return io.write_text(path, "\n\n".join(section.strip() for section in sections if section) + "\n")


class _Report:
    def __init__(self, analysis: Analysis, root: Path):
        self.analysis = analysis
        self.folder = analysis.folder
        self.root = root
        self.sweep = self.folder.sweep
        self.profile = self.folder.profile
        self.summary: pd.DataFrame = analysis.summary
        self.tested = self.summary[self.summary["test_accuracy"].notna()] if len(self.summary) else self.summary

    def link(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.root)).as_posix()

    def image(self, path: Path | None, alt: str) -> str:
        if path is None:
            return f"*{alt}: not produced, see [Skipped](#skipped).*"
        return f"![{alt}]({self.link(path)})"

    def split_counts(self) -> dict[str, int]:
        counts = (self.sweep.get("data") or {}).get("class_counts") or {}
        return {split: sum(values.values()) for split, values in counts.items()}

    # Sections, in report order.

    def header(self) -> str:
        sweep, profile, args = self.sweep, self.profile, self.folder.args
        data = sweep.get("data") or {}
        resources = sweep.get("resources") or {}
        versions = sweep.get("versions") or {}
        counts = self.split_counts()
        lines = [
            f"# Sweep analysis: {sweep.get('script', 'sweep')}",
            "",
            f"Written {time.strftime('%Y-%m-%d %H:%M')} by cifar_ray.analysis from the files in this folder: sweep.json, "
            "trials.parquet, history.parquet and the models' files under models/. Rerun with "
            f"`python analysis/analyse.py {self.root}`. "
            "Tables and figures are under [analysis/](analysis/).",
            "",
            f"- Script `{sweep.get('script')}`, profile `{profile.get('name')}`, scheduler `{args.get('scheduler')}`, "
            f"seed {args.get('seed')}, started {sweep.get('started_at', 'at an unrecorded time')}.",
            f"- Data: `{data.get('source') or 'source not recorded'}` ({data.get('kind') or 'kind not recorded'}), "
            f"{len(self.folder.class_names)} classes; "
            f"final retrains: {format_int(counts.get('train'))} training, {format_int(counts.get('val'))} validation and "
            f"{format_int(counts.get('test'))} test images; search trials: "
            f"{format_int(profile.get('search_subset')) if profile.get('search_subset') else 'all'} training images.",
            f"- Budget: {profile.get('num_samples')} trials per searched family, up to {profile.get('max_epochs')} epochs "
            f"(grace period {profile.get('grace_period')}, reduction factor {profile.get('reduction_factor')}); "
            f"top {profile.get('top_k')} retrained for up to {format_count(profile.get('final_epochs'), 'epoch')} "
            f"(patience {profile.get('final_patience')}) with {format_count(profile.get('seeds'), 'seed')}; width scale {profile.get('width_scale')}.",
            f"- Machine: {format_number(resources.get('total_cpus'))} CPUs and {format_number(resources.get('total_gpus'))} GPUs on "
            f"{resources.get('nodes', '?')} node(s), {resources.get('cpu', '?')} CPU and {resources.get('gpu', 0)} GPU per trial, "
            f"up to {resources.get('concurrency', '?')} trials at once. "
            + ", ".join(f"{name} {version}" for name, version in versions.items())
            + ".",
        ]
        return "\n".join(lines)

    def recommendation(self) -> str:
        lines = ["## Which architecture to build", ""]
        tested = self.tested
        if tested.empty:
            return "\n".join(lines + [self._no_final_model()])

        best = tested.iloc[0]
        lines.append(
            f"Highest test accuracy: **{best['model']}** (trial {best['trial_id']}), {best['test_accuracy']:.4f}, "
            f"with {format_int(best['params'])} parameters after {format_duration(best['train_time_s'])} of training "
            f"({format_count(best['epochs'], 'epoch')}). Architecture: `{best['architecture']}`."
        )
        front = tested[pareto_front(tested["train_time_s"].astype(float), tested["test_accuracy"].astype(float))]
        front = front.sort_values("train_time_s")
        if len(front) > 1:
            lines += ["", "Models no other model beats on both test accuracy and training time (the Pareto front), cheapest first:", ""]
            for _, row in front.iterrows():
                lines.append("- " + self._against_best(row, best))
        elif len(tested) > 1:
            lines += ["", f"{best['model']} is also the fastest to train of the {len(tested)} tested models, so no other model trades accuracy for time."]

        test_images = self.split_counts().get("test")
        if test_images:
            accuracy = float(best["test_accuracy"])
            error = math.sqrt(accuracy * (1 - accuracy) / test_images)
            lines += [
                "",
                f"With {test_images:,} test images, a test accuracy near {accuracy:.2f} has a binomial standard error of "
                f"{error:.4f}; smaller differences between models are not evidence of a better architecture.",
            ]
        seeds = int(self.profile.get("seeds") or 1)
        if seeds == 1:
            lines.append(
                "Each configuration was retrained with one seed, so the seed-to-seed spread is not measured; "
                "rerun with `--seeds 3` before acting on small differences."
            )
        resources = self.sweep.get("resources") or {}
        if (resources.get("concurrency") or 1) > 1:
            lines.append(
                f"Training times were measured with up to {resources['concurrency']} trials sharing "
                f"{format_number(resources.get('total_cpus'))} CPUs and {format_number(resources.get('total_gpus'))} GPUs, so they compare "
                "models within this sweep, not on other hardware."
            )
        return "\n".join(lines)

    def _no_final_model(self) -> str:
        trials = self.folder.trials
        searched = trials[(trials["stage"] != "final") & trials["best_val_accuracy"].notna()]
        if searched.empty:
            return "No trial reached a validation accuracy, so there is nothing to choose from yet."
        top = searched.sort_values("best_val_accuracy", ascending=False).iloc[0]
        return (
            "No final model was tested (the sweep has no finished final stage), so no test accuracy is available. "
            f"The best search trial so far is **{top['model']}** (trial {top['trial_id']}, `{top['architecture']}`) with "
            f"a best validation accuracy of {top['best_val_accuracy']:.4f} at epoch {format_int(top['best_epoch'])}. "
            f"That is a search figure (on {format_int(self.profile.get('search_subset')) if self.profile.get('search_subset') else 'all'} "
            f"training images, at most {self.profile.get('max_epochs')} epochs), not a test result."
        )

    def _against_best(self, row: pd.Series, best: pd.Series) -> str:
        text = f"**{row['model']}** (trial {row['trial_id']}): {row['test_accuracy']:.4f} in {format_duration(row['train_time_s'])}"
        if row["trial_id"] == best["trial_id"]:
            return text + ", the most accurate"
        time_saved = 1 - float(row["train_time_s"]) / float(best["train_time_s"]) if best["train_time_s"] else math.nan
        params = 1 - float(row["params"]) / float(best["params"]) if best["params"] else math.nan
        text += f": {float(best['test_accuracy']) - float(row['test_accuracy']):.4f} below the best for {time_saved:.0%} less training time"
        if not math.isnan(params):
            text += f" and {params:.0%} fewer parameters" if params >= 0 else f" and {-params:.0%} more parameters"
        return text

    def final_models(self) -> str:
        lines = ["## Final models on the test set", ""]
        if self.summary.empty:
            return "\n".join(lines + ["No final-stage trial in trials.parquet: the sweep stopped before its final stage."])
        lines += [
            "One row per final trial, failed ones included with their status. `val acc (last epoch)` is the validation "
            "accuracy of the last epoch trained, `val acc (best epoch)` the highest of any epoch (what Ray ranks trials by); "
            "`tested weights` says which epoch's weights the test accuracy belongs to. The study's figures sit beside ours "
            "where the model and its training setup are among the study's runs (cifar_ray/reference.py). "
            f"Also as [CSV]({self.link(self.folder.out / 'analysis' / 'summary.csv')}).",
            "",
            markdown_table(self.summary, SUMMARY_COLUMNS),
        ]
        if (self.folder.out / "analysis" / "summary_by_configuration.csv").is_file():
            lines.append(
                "Mean and standard deviation over seeds per configuration: "
                f"[summary_by_configuration.csv]({self.link(self.folder.out / 'analysis' / 'summary_by_configuration.csv')})."
            )
        lines += ["", self.image(self.analysis.figures.get("accuracy_vs_cost"), "Test accuracy against training time and parameters")]
        return "\n".join(lines)

    def architecture_steps(self) -> str:
        steps: pd.DataFrame = self.analysis.steps
        lines = ["## What each step of depth and regularisation bought", ""]
        if steps.empty:
            trained = sorted(self.folder.trials["model"].dropna().unique())
            ladder = ", ".join(f"{a} → {b}" for a, b, _ in ARCHITECTURE_STEPS)
            return "\n".join(lines + [f"No step of the study's ladder ({ladder}) has both ends in this sweep; its models: {', '.join(trained) or 'none'}."])
        lines += [
            "Each model's best trial, compared with the next model up the study's ladder on the same metric and training "
            "setup: the final test accuracy where both were retrained, otherwise the best search validation accuracy (a "
            "rougher ranking: search trials are short, on a training subset, and some were stopped early). The study's "
            "difference is between its test accuracies.",
            "",
            markdown_table(
                steps,
                {
                    "step": ("step", format_text),
                    "change": ("change", format_text),
                    "setup": ("setup", format_text),
                    "metric": ("compared on", format_text),
                    "from_value": ("before", format_float(4)),
                    "to_value": ("after", format_float(4)),
                    "difference": ("our difference", format_signed(4)),
                    "study_difference": ("study's difference", format_signed(4)),
                    "from_params": ("params before", format_int),
                    "to_params": ("params after", format_int),
                    "from_train_time_s": ("train time before", format_duration),
                    "to_train_time_s": ("train time after", format_duration),
                },
            ),
        ]
        return "\n".join(lines)

    def classes(self) -> str:
        lines = ["## Classes that stay hard", ""]
        class_f1: pd.DataFrame = self.analysis.class_f1
        if class_f1.empty:
            return "\n".join(lines + ["No final model has a confusion matrix (metrics.json), so per-class results are unavailable."])
        models = [c for c in class_f1.columns if c != "mean"]
        hardest = ", ".join(f"{name} ({value:.2f})" for name, value in class_f1["mean"].head(3).items())
        easiest = ", ".join(f"{name} ({value:.2f})" for name, value in class_f1["mean"].iloc[::-1].head(3).items())
        lines += [
            f"F1 score per class on the test set, averaged over {format_count(len(models), 'final model')}: hardest {hardest}; easiest {easiest}.",
            "",
            markdown_table(class_f1, {c: (c, format_float(3)) for c in class_f1.columns}, index="class"),
        ]
        best = self._best_model_with_confusion()
        if best is not None:
            class_names = list((best.files.metrics or {}).get("class_names") or self.folder.class_names)
            pairs = mutual_confusions(best.confusion, class_names)
            mistakes = confused_pairs(best.confusion, class_names)
            lines += [
                "",
                f"Most confused pairs of the most accurate model, {best.files.name} (count of test images, both directions "
                "summed): " + "; ".join(f"{r['class_a']} ↔ {r['class_b']} ({r['count']})" for _, r in pairs.iterrows()) + ".",
                "",
                markdown_table(
                    mistakes,
                    {
                        "true_class": ("true class", format_text),
                        "predicted_class": ("predicted as", format_text),
                        "count": ("images", format_int),
                        "share_of_true_class": ("share of the true class", format_float(3)),
                    },
                ),
            ]
        return "\n".join(lines)

    def _best_model_with_confusion(self) -> ModelAnalysis | None:
        candidates = [m for m in self.analysis.models if m.confusion is not None and pd.notna(m.row.get("test_accuracy"))]
        return max(candidates, key=lambda m: float(m.row["test_accuracy"]), default=None)

    def study_comparison(self) -> str:
        lines = ["## Our numbers against the study's", ""]
        matched = self.tested[self.tested["study_test_accuracy"].notna()] if len(self.tested) else self.tested
        if matched.empty:
            lines.append(
                "No tested final model matches one of the study's runs (its nine models with Nadam and early stopping, "
                "the ResNet with SGD, and experiment 10's SGD runs without early stopping)."
            )
        else:
            table = matched.assign(
                accuracy_difference=matched["test_accuracy"] - matched["study_test_accuracy"],
                params_ratio=matched["params"] / matched["study_params"],
                time_ratio=matched["train_time_s"] / matched["study_train_time_s"],
            )
            lines += [
                markdown_table(
                    table,
                    {
                        "model": ("model", format_text),
                        "trial_id": ("trial", format_text),
                        "setup": ("setup", format_text),
                        "test_accuracy": ("our test acc", format_float(4)),
                        "study_test_accuracy": ("study test acc", format_float(4)),
                        "accuracy_difference": ("difference", format_signed(4)),
                        "params_ratio": ("our params / study's", format_float(3)),
                        "time_ratio": ("our train time / study's", format_float(3)),
                    },
                ),
            ]
        lines += ["", "Why our numbers differ, from this sweep's settings (sweep.json):", ""]
        lines += [f"- {reason}" for reason in self._differences()]
        return "\n".join(lines)

    def _differences(self) -> list[str]:
        profile, data = self.profile, self.sweep.get("data") or {}
        reasons = []

        source, kind = data.get("source"), data.get("kind")
        file_type = _image_file_type(source) if kind in ("split-tree", "class-tree") else None
        if kind == "cifar-python":
            reasons.append(f"Data: the CIFAR-10 Python release at `{source}`, the same images the study used.")
        elif file_type in (".jpg", ".jpeg"):
            reasons.append(
                f"Data: JPEG files under `{source}`, a lossy re-encoding of CIFAR-10; the study used the original files, "
                "so part of any accuracy gap is compression loss."
            )
        else:
            reasons.append(
                f"Data: an image-folder tree at `{source}` ({file_type or 'file type not checked: folder not readable'}), "
                "not the CIFAR-10 release the study used."
            )

        scale = profile.get("width_scale")
        if scale is not None and scale != 1.0:
            ratios = (self.tested["params"] / self.tested["study_params"]).dropna() if len(self.tested) else pd.Series(dtype=float)
            ratio_text = f"; our final models have {ratios.min():.3f}–{ratios.max():.3f} of the study's parameters" if len(ratios) else ""
            reasons.append(
                f"Width: searched filter and unit counts were scaled by {scale} (profile `{profile.get('name')}`){ratio_text}. "
                "Narrower networks fit less, so accuracy is lower and training faster."
            )

        counts = self.split_counts()
        subset = profile.get("final_subset")
        reasons.append(
            f"Training images: the final retrains saw {format_int(counts.get('train'))} training images"
            + (f" (`--final-subset {subset}`)" if subset else " (the whole training split less validation)")
            + f", and search trials {format_int(profile.get('search_subset')) if profile.get('search_subset') else 'the whole split'}."
        )

        final = self.folder.final
        ran = final["epochs"].dropna()
        if ran.empty:
            epochs_text = "have no epoch count"
        elif ran.min() == ran.max():
            epochs_text = f"ran {int(ran.min())} epochs"
        else:
            epochs_text = f"ran {int(ran.min())}–{int(ran.max())} epochs"
        limit = profile.get("final_time_limit_s")
        reasons.append(
            f"Training length: final retrains {epochs_text}, limited to {profile.get('final_epochs')} epochs "
            f"(early-stopping patience {profile.get('final_patience')}"
            + (f", training-time cap {format_duration(limit)}" if limit else "")
            + f"); search trials to {profile.get('max_epochs')} epochs. Shorter training leaves accuracy on the table, "
            "most for the regularised and deeper models, which learn more slowly."
        )

        if "config/augment" in final and final["config/augment"].fillna(False).astype(bool).any():
            augmented = int(final["config/augment"].fillna(False).astype(bool).sum())
            reasons.append(
                f"Augmentation: {augmented} of {len(final)} final retrains used random crops and flips, which the study "
                "did not use. Augmented images are harder to fit, so in short trainings augmentation can cost accuracy "
                "that it repays over more epochs."
            )

        resources = self.sweep.get("resources") or {}
        matched = self.tested[self.tested["study_train_time_s"].notna()] if len(self.tested) else self.tested
        time_text = ""
        if len(matched):
            ratios = matched["train_time_s"] / matched["study_train_time_s"]
            time_text = f"; our training times are {ratios.min():.3g}–{ratios.max():.3g} times the study's"
        reasons.append(
            f"Hardware: {format_number(resources.get('total_cpus'))} CPUs and {format_number(resources.get('total_gpus'))} GPUs with up to "
            f"{resources.get('concurrency', '?')} trials at once, against the study's single GPU{time_text}. "
            "Times reflect network size, data and hardware together, so compare them within one sweep."
        )
        reasons.append(
            f"Batch size {profile.get('batch_size')} and {format_count(profile.get('seeds'), 'seed')} per configuration; the study reports one run per model."
        )
        return reasons

    def models(self) -> str:
        if not self.analysis.models:
            return ""
        lines = ["## Each final model", ""]
        for model in self.analysis.models:
            row = model.row
            lines += [
                f"### {model.files.name}",
                "",
                f"`{row['architecture']}`. Status {row['status']}, {format_int(row['params'])} parameters, "
                f"{format_count(row['epochs'], 'epoch')} in {format_duration(row['train_time_s'])}, test accuracy "
                f"{format_float(4)(row['test_accuracy'])}.",
                "",
            ]
            if model.report is not None:
                lines += [
                    "Classification report on the test set (scikit-learn):",
                    "",
                    markdown_table(
                        model.report,
                        {
                            "precision": ("precision", format_float(3)),
                            "recall": ("recall", format_float(3)),
                            "f1-score": ("F1", format_float(3)),
                            "support": ("images", format_int),
                        },
                        index="class",
                    ),
                ]
            else:
                lines += ["*Classification report: not produced, see [Skipped](#skipped).*", ""]
            for key, title in MODEL_FIGURES.items():
                if key == "feature_maps" and str(row.get("family")) == "fcnn":
                    continue  # a fully connected net has no conv layers
                lines += [self.image(model.figures.get(key), f"{title}, {model.files.name}"), ""]
        return "\n".join(lines)

    def search(self) -> str:
        trials = self.folder.trials
        lines = ["## The search", ""]
        if trials.empty:
            return "\n".join(lines + ["No trial table (trials.parquet) could be read."])
        counts = status_counts(trials)
        lines += [
            "Trials per stage and status. TERMINATED: the trial ended itself (max_t, early stopping or its time limit); "
            "STOPPED: the scheduler or the stage's time budget ended it; ERROR: the trial raised an exception; "
            "DIVERGED: its loss became NaN or infinite.",
            "",
            markdown_table(counts, {c: (c, format_int) for c in counts.columns}, index="stage"),
        ]
        scheduler = self.folder.args.get("scheduler")
        for stage in self.analysis.stages:
            stage_trials = trials[trials["stage"] == stage.stage]
            stopped = int((stage_trials["status"] == "STOPPED").sum())
            full = int((stage_trials["epochs"] >= (self.profile.get("max_epochs") or 0)).sum())
            lines += ["", f"### {stage.stage}", ""]
            stopper = scheduler if not self.profile.get("search_time_budget_s") else (
                f"{scheduler} or the stage's {format_duration(self.profile['search_time_budget_s'])} time budget"
            )
            budget = f"{stage.trials} trials: {full} reached max_t ({self.profile.get('max_epochs')} epochs), {stopped} stopped early by {stopper}"
            if scheduler == "asha":
                rungs = asha_rungs(int(self.profile.get("grace_period") or 1), int(self.profile.get("reduction_factor") or 2), int(self.profile.get("max_epochs") or 1))
                budget += f", which compares trials at epochs {', '.join(map(str, rungs))}"
            epochs_run = int(stage_trials["epochs"].fillna(0).sum())
            budget += f". They ran {epochs_run} epochs in all, against {stage.trials * int(self.profile.get('max_epochs') or 0)} without early stopping."
            lines += [budget, ""]
            for key, title in STAGE_FIGURES.items():
                if key == "importance" and stage.importance is None:
                    continue  # the importance text below gives the reason
                lines += [self.image(stage.figures.get(key), f"{title}, {stage.stage}"), ""]
            lines.append(self._importance_text(stage))
        lines += ["", "### Every trial", "", markdown_table(self.analysis.trials, TRIALS_COLUMNS)]
        return "\n".join(lines)

    def _importance_text(self, stage: StageAnalysis) -> str:
        importance = stage.importance
        if importance is None:
            return f"Hyperparameter importance not computed: {stage.importance_note or 'see Skipped'}."
        top = importance.frame.head(3)
        ranking = ", ".join(f"{r['hyperparameter']} ({r['permutation_mean']:.3f})" for _, r in top.iterrows())
        oob = "not available" if math.isnan(importance.oob_r2) else f"{importance.oob_r2:.2f}"
        text = (
            f"Random-forest permutation importance from {importance.trials} trials (drop in R² of best_val_accuracy when "
            f"a column is shuffled, measured on the trials themselves): {ranking}. Out-of-bag R² of the forest: {oob}."
        )
        if not importance.reliable:
            text += (
                f" With fewer than {RELIABLE_TRIALS} trials this ranking is indicative only: another search of the same "
                "size can order it differently."
            )
        return text

    def ray_check(self) -> str:
        lines = ["## Check against Ray Tune", ""]
        checks = self.analysis.ray_checks
        if not checks:
            return "\n".join(lines + ["No stage to check."])
        agreeing = sum(check.outcome == "agrees" for check in checks)
        lines += [
            "For each stage, Ray's ResultGrid was read back from its experiment folder and "
            "`get_best_result(metric=\"val_accuracy\", mode=\"max\", scope=\"all\")` compared with the trial table's "
            f"highest `best_val_accuracy` (best epoch). {agreeing} of {len(checks)} stage(s) agree.",
            "",
            "| stage | outcome | table's best trial | its best val acc | Ray's best trial | its best val acc | note |",
            "|---|---|---|---:|---|---:|---|",
        ]
        for check in checks:
            lines.append(
                f"| {check.stage} | {check.outcome} | {format_text(check.table_trial_id)} | "
                f"{format_float(4)(check.table_best_val_accuracy)} | {format_text(check.ray_trial_id)} | "
                f"{format_float(4)(check.ray_best_val_accuracy)} | {format_text(check.note)} |"
            )
        return "\n".join(lines)

    def skipped(self) -> str:
        lines = ["## Skipped", ""]
        skips = list(self.analysis.skips)
        if not skips:
            return "\n".join(lines + ["Nothing was skipped."])
        lines.append("Missing inputs and the outputs this analysis could not produce, with the reason:")
        lines.append("")
        lines += [f"- **{format_text(skip.item)}**: {format_text(skip.reason)}" for skip in skips]
        return "\n".join(lines)


def format_count(number: Any, noun: str) -> str:
    """Format a count with its noun, e.g. `3 epochs` or `1 epoch`. A missing number prints as an en dash."""
    if is_missing(number):
        return f"– {noun}s"
    return f"{int(number):,} {noun}" + ("" if int(number) == 1 else "s")


def _image_file_type(source: str | None) -> str | None:
    """Return the extension of the first file found under the data folder, e.g. ".jpg", or None when it cannot be read."""
    if not source or not Path(source).is_dir():
        return None
    for _folder, _subfolders, files in os.walk(source):
        for name in sorted(files):
            if not name.startswith("."):
                return Path(name).suffix.lower() or None
    return None
