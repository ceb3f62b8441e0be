"""Hyperparameter importance of one search stage, with scikit-learn.

A random forest learns `best_val_accuracy` from the trials' `config/*`
columns. Importance is the drop in R² when one column is shuffled
(`permutation_importance`, on the trials themselves because a search has too
few to hold some out), shown beside the forest's impurity importance.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

logger = logging.getLogger(__name__)

TARGET = "best_val_accuracy"
# Fewer trials than this leave too few points to fit a forest and shuffle its columns.
MIN_TRIALS = 4
# NOTE: this is a judgement, not a measured threshold. With fewer trials the
# ranking can change from one search to the next, so it is reported as indicative only.
RELIABLE_TRIALS = 20
# Config keys that are bookkeeping or fixed by the sweep, not searched.
NOT_SEARCHED = {"seed", "epochs", "batch_size", "patience", "final", "search_trial_id", "search_val_accuracy", "time_limit_s"}


@dataclass
class Importance:
    """Importance of each searched hyperparameter, most important first."""

    stage: str
    frame: pd.DataFrame  # hyperparameter, permutation_mean, permutation_std, impurity
    trials: int  # trials the forest learned from
    oob_r2: float  # out-of-bag R² of the forest: how much of the accuracy spread the hyperparameters explain
    reliable: bool  # at least RELIABLE_TRIALS trials


def searched_columns(trials: pd.DataFrame) -> list[str]:
    """Return the config/* columns whose value varies between the trials."""
    columns = []
    for column in trials.columns:
        if not column.startswith("config/") or column.removeprefix("config/") in NOT_SEARCHED:
            continue
        if trials[column].nunique(dropna=True) > 1:
            columns.append(column)
    return columns


def hyperparameter_importance(trials: pd.DataFrame, stage: str, seed: int = 0) -> Importance | str:
    """Fit the forest on one stage's trials. Return the importances, or the reason they cannot be computed."""
    usable = trials[trials[TARGET].notna()]
    columns = searched_columns(usable)
    if len(usable) < MIN_TRIALS:
        return f"only {len(usable)} trial(s) with a validation accuracy; at least {MIN_TRIALS} are needed"
    if not columns:
        return "no hyperparameter varies between the trials"
    if usable[TARGET].nunique() < 2:
        return "every trial reached the same validation accuracy"

    features = usable[columns].copy()
    categorical = [c for c in columns if not pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c])]
    numeric = [c for c in columns if c not in categorical]
    for column in categorical:
        features[column] = features[column].astype(str)
    model = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [
                        ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), categorical),
                        ("numeric", SimpleImputer(strategy="median", keep_empty_features=True), numeric),
                    ]
                ),
            ),
            ("forest", RandomForestRegressor(n_estimators=300, min_samples_leaf=1, oob_score=True, random_state=seed)),
        ]
    )
    target = usable[TARGET].astype(float).to_numpy()
    with warnings.catch_warnings():
        # With a handful of trials some never fall out of bag, so scikit-learn warns and the OOB score is rough.
        warnings.simplefilter("ignore", UserWarning)
        model.fit(features, target)
    permutation = permutation_importance(model, features, target, n_repeats=20, random_state=seed)

    forest = model.named_steps["forest"]
    impurity = dict(zip(categorical + numeric, forest.feature_importances_))
    frame = pd.DataFrame(
        {
            "hyperparameter": [c.removeprefix("config/") for c in columns],
            "permutation_mean": permutation.importances_mean,
            "permutation_std": permutation.importances_std,
            "impurity": [impurity[c] for c in columns],
        }
    ).sort_values("permutation_mean", ascending=False, ignore_index=True)
    oob = float(getattr(forest, "oob_score_", math.nan))
    logger.info("importance of %d hyperparameters from %d trials of %s (OOB R² %.2f)", len(columns), len(usable), stage, oob)
    return Importance(stage=stage, frame=frame, trials=len(usable), oob_r2=oob if np.isfinite(oob) else math.nan, reliable=len(usable) >= RELIABLE_TRIALS)
