"""Reading a sweep's output folder: its settings, the trial and epoch tables, and each final model's files.

A folder may be partial (a sweep stopped after its search stage) or damaged
(a trial failed, a model file is missing). Whatever cannot be read is recorded
as a `Skip` with its reason, and the analysis carries on with the rest.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cifar_ray import io

logger = logging.getLogger(__name__)

# Columns of trials.parquet that the analysis reads (written by cifar_ray.tune.results.collect_trials).
# A folder from a partial or older sweep may lack some, and those are added as missing values.
TRIAL_COLUMNS = [
    "stage",
    "trial_id",
    "status",
    "stop_reason",
    "error",
    "model",
    "family",
    "architecture",
    "params",
    "epochs",
    "train_time_s",
    "last_train_loss",
    "last_train_accuracy",
    "last_val_loss",
    "last_val_accuracy",
    "best_val_accuracy",
    "best_epoch",
    "diverged",
    "test_accuracy",
    "test_rmse",
    "test_loss",
    "test_macro_f1",
    "seed",
    "model_file",
]
HISTORY_COLUMNS = ["stage", "trial_id", "model", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]
FINAL_STAGE = "final"


@dataclass(frozen=True)
class Skip:
    """An output the analysis could not produce, and why."""

    item: str
    reason: str


@dataclass
class Skips:
    """Skipped outputs in the order they occurred. Each is also logged as a warning."""

    items: list[Skip] = field(default_factory=list)

    def add(self, item: str, reason: str) -> None:
        logger.warning("skipped %s: %s", item, reason)
        self.items.append(Skip(item, reason))

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class FinalModelFiles:
    """The files a sweep exported for one final trial. A path is None when its file is missing, and *_missing gives the reason."""

    trial_id: str
    model: str
    model_path: Path | None
    metrics_path: Path | None
    metrics: dict[str, Any] | None  # contents of <model>-<trial_id>.metrics.json
    model_missing: str = ""  # why model_path is None
    metrics_missing: str = ""  # why metrics_path is None

    @property
    def name(self) -> str:
        return f"{self.model}-{self.trial_id}"


@dataclass
class SweepFolder:
    """Everything the analysis reads from one output folder."""

    out: Path
    sweep: dict[str, Any]  # sweep.json: script, args, profile, data, resources, versions
    stages: dict[str, Any]  # stages.json: the finished stages, empty when the file is missing
    trials: pd.DataFrame  # one row per trial of every stage
    history: pd.DataFrame  # one row per trial per epoch

    @property
    def profile(self) -> dict[str, Any]:
        return self.sweep.get("profile") or {}

    @property
    def args(self) -> dict[str, Any]:
        return self.sweep.get("args") or {}

    @property
    def class_names(self) -> list[str]:
        return list((self.sweep.get("data") or {}).get("class_names") or [])

    @property
    def final(self) -> pd.DataFrame:
        return self.trials[self.trials["stage"] == FINAL_STAGE]

    def search_stages(self) -> list[str]:
        """Names of the search stages in the trial table, in their order of appearance."""
        stages = self.trials["stage"].dropna().unique().tolist()
        return [stage for stage in stages if stage != FINAL_STAGE]

    def ray_root(self) -> Path | None:
        """Return the local folder that contains the Ray experiments, or None when they are stored at a remote URI."""
        storage = self.args.get("storage")
        if not storage:
            return self.out / "ray"
        if "://" in storage and not storage.startswith("file://"):
            return None
        return Path(storage.removeprefix("file://"))


def load_folder(out: Path, skips: Skips) -> SweepFolder:
    """Read sweep.json, stages.json, trials.parquet and history.parquet from `out`.

    Raises FileNotFoundError when `out` has no sweep.json, since without it the
    folder is not a sweep's output. A missing trials.parquet is rebuilt, with
    the epoch table, from the Ray experiments under OUT/ray when they can be read.
    """
    out = Path(out)
    sweep_file = out / "sweep.json"
    if not sweep_file.is_file():
        raise FileNotFoundError(
            f"{out} is not a sweep output folder: {sweep_file} not found. Pass the --out folder of a "
            "sweeps/*.py run"
        )
    sweep = io.read_json(sweep_file)
    stages = io.read_json(out / "stages.json") if (out / "stages.json").is_file() else {}
    folder = SweepFolder(out=out, sweep=sweep, stages=stages, trials=pd.DataFrame(), history=pd.DataFrame())

    trials_file = out / "trials.parquet"
    history_file = out / "history.parquet"
    ray_history = pd.DataFrame()
    if trials_file.is_file():
        trials = pd.read_parquet(trials_file)
    else:
        trials, ray_history = _tables_from_ray(folder, skips)
    folder.trials = _with_columns(trials, TRIAL_COLUMNS)
    folder.trials["status"] = folder.trials["status"].fillna("UNKNOWN")

    if history_file.is_file():
        history = pd.read_parquet(history_file)
    elif len(ray_history):
        skips.add("history.parquet", f"{history_file} not found; the epoch table was rebuilt from the Ray experiments")
        history = ray_history
    else:
        skips.add("history.parquet", f"{history_file} not found; learning curves fall back to each model's metrics.json")
        history = pd.DataFrame()
    folder.history = _with_columns(history, HISTORY_COLUMNS)
    return folder


def _with_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    for column in columns:
        if column not in frame.columns:
            frame[column] = math.nan
    return frame


def _tables_from_ray(folder: SweepFolder, skips: Skips) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rebuild the trial and epoch tables from the Ray experiment folders, as the sweep itself builds them."""
    empty = pd.DataFrame(), pd.DataFrame()
    root = folder.ray_root()
    if root is None or not root.is_dir():
        skips.add("trials.parquet", f"{folder.out / 'trials.parquet'} not found and no Ray experiments under {root}")
        return empty
    try:
        from ray.tune import ExperimentAnalysis, ResultGrid

        from cifar_ray.tune.results import collect_trials
    except ImportError as error:
        skips.add("trials.parquet", f"{folder.out / 'trials.parquet'} not found and Ray cannot be imported ({error})")
        return empty

    # Search stages first and the final stage last, the order the sweep runs them in.
    stages = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (p.name == FINAL_STAGE, p.name))
    trial_frames, history_frames = [], []
    for path in stages:
        stage = path.name
        max_epochs = folder.profile.get("final_epochs" if stage == FINAL_STAGE else "max_epochs", 0)
        try:
            grid = ResultGrid(ExperimentAnalysis(str(path)))
            trials, history = collect_trials(grid, stage, int(max_epochs or 0))
        except Exception as error:  # Ray raises several types for damaged experiment state
            skips.add(f"trials of stage {stage}", f"Ray experiment {path} could not be read ({type(error).__name__}: {error})")
            continue
        trial_frames.append(trials)
        history_frames.append(history)
    if not trial_frames:
        skips.add("trials.parquet", f"{folder.out / 'trials.parquet'} not found and no Ray experiment under {root} could be read")
        return empty
    skips.add("trials.parquet", f"{folder.out / 'trials.parquet'} not found; the trial table was rebuilt from the Ray experiments under {root}")
    return pd.concat(trial_frames, ignore_index=True), pd.concat(history_frames, ignore_index=True)


def final_model_files(folder: SweepFolder, row: pd.Series) -> FinalModelFiles:
    """Locate the model file and metrics.json of one final trial, with the reason for any that is missing."""
    trial_id = str(row["trial_id"])
    model = str(row["model"])
    recorded = row.get("model_file")
    if isinstance(recorded, str) and recorded:
        model_path = folder.out / recorded
    else:
        model_path = folder.out / "models" / f"{model}-{trial_id}.pt"
    metrics_path = model_path.with_suffix(".metrics.json")
    files = FinalModelFiles(trial_id=trial_id, model=model, model_path=model_path, metrics_path=metrics_path, metrics=None)

    failed = f"the trial failed ({row.get('error') or 'no error message recorded'})" if row["status"] == "ERROR" else ""
    if metrics_path.is_file():
        files.metrics = io.read_json(metrics_path)
    else:
        files.metrics_path = None
        files.metrics_missing = failed or f"{metrics_path} not found"
    if not model_path.is_file():
        files.model_path = None
        files.model_missing = failed or f"{model_path} not found"
    return files
