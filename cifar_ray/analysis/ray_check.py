"""Cross-check of the trial table against Ray Tune's own choice of the best trial.

For each stage, Ray's ResultGrid is read back from the experiment folder and
`get_best_result(metric="val_accuracy", mode="max", scope="all")` (the best
epoch of every trial) is compared with the table's row of highest
`best_val_accuracy`. Reading needs no running Ray cluster.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cifar_ray.analysis.folder import SweepFolder

logger = logging.getLogger(__name__)

METRIC = "val_accuracy"
MODE = "max"
SCOPE = "all"
# Ray reports float32 metrics, so the table may contain the same value rounded differently.
TOLERANCE = 1e-6


@dataclass
class RayCheck:
    """Outcome of the comparison for one stage."""

    stage: str
    outcome: str  # "agrees", "disagrees" or "not checked"
    table_trial_id: str | None
    table_best_val_accuracy: float | None
    ray_trial_id: str | None
    ray_best_val_accuracy: float | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_stages(folder: SweepFolder) -> list[RayCheck]:
    """Compare every stage of the trial table with Ray's best result for that stage."""
    checks = []
    for stage in folder.trials["stage"].dropna().unique():
        checks.append(check_stage(folder, str(stage)))
    return checks


def check_stage(folder: SweepFolder, stage: str) -> RayCheck:
    rows = folder.trials[(folder.trials["stage"] == stage) & folder.trials["best_val_accuracy"].notna()]
    if rows.empty:
        return RayCheck(stage, "not checked", None, None, None, None, "no trial of this stage reported val_accuracy")
    best_value = float(rows["best_val_accuracy"].max())
    tied = rows[(rows["best_val_accuracy"] - best_value).abs() <= TOLERANCE]
    table_id = str(tied.iloc[0]["trial_id"])

    def unchecked(note: str) -> RayCheck:
        logger.warning("Ray check of stage %s not done: %s", stage, note)
        return RayCheck(stage, "not checked", table_id, best_value, None, None, note)

    root = folder.ray_root()
    if root is None:
        return unchecked(f"the Ray experiments are stored at {folder.args.get('storage')}, which is not a local folder")
    path = root / stage
    if not path.is_dir():
        return unchecked(f"Ray experiment folder {path} not found")
    try:
        from ray.tune import ExperimentAnalysis, ResultGrid
    except ImportError as error:
        return unchecked(f"Ray cannot be imported ({error})")
    try:
        grid = ResultGrid(ExperimentAnalysis(str(path)))
        best = grid.get_best_result(metric=METRIC, mode=MODE, scope=SCOPE)
    except Exception as error:  # Ray raises RuntimeError, ValueError or pickle errors for unreadable state
        return unchecked(f"Ray could not load {path} ({type(error).__name__}: {error})")

    ray_id = str((best.metrics or {}).get("trial_id") or Path(best.path).name)
    history = best.metrics_dataframe
    if history is not None and METRIC in history:
        ray_value = float(history[METRIC].max())
    else:
        ray_value = float((best.metrics or {}).get(METRIC, math.nan))
    tied_ids = set(tied["trial_id"].astype(str))
    same_value = abs(ray_value - best_value) <= TOLERANCE
    if ray_id in tied_ids and same_value:
        note = f"both pick trial {ray_id}" + (f" (tied with {len(tied_ids) - 1} other trial(s))" if len(tied_ids) > 1 else "")
        return RayCheck(stage, "agrees", table_id, best_value, ray_id, ray_value, note)
    note = (
        f"the table's best is {table_id} ({best_value:.4f}), Ray's get_best_result is {ray_id} ({ray_value:.4f}); "
        "trials.parquet may be out of date with the Ray experiment (an interrupted or resumed stage)"
    )
    logger.warning("Ray check of stage %s: %s", stage, note)
    return RayCheck(stage, "disagrees", table_id, best_value, ray_id, ray_value, note)


def checks_frame(checks: list[RayCheck]) -> pd.DataFrame:
    return pd.DataFrame([check.as_dict() for check in checks])
