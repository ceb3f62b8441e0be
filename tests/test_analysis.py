"""The sweep analysis (cifar_ray.analysis) on the output of a real tiny sweep, intact, damaged and partial.

One `sweeps/cnn_search.py` run per test session (about a minute on 2 CPU
cores) builds the output folder, on a 10-class tree of real CIFAR-10 JPEGs
copied from $CIFAR_RAY_DATA. The damaged and partial cases edit copies of it.
"""

from __future__ import annotations

import json
import math
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import classification_report, confusion_matrix

from cifar_ray.analysis import analyse_sweep
from cifar_ray.analysis.features import conv_feature_maps, last_hidden_activations, tsne_embedding
from cifar_ray.analysis.folder import Skips, load_folder
from cifar_ray.analysis.importance import MIN_TRIALS, hyperparameter_importance
from cifar_ray.analysis.tables import asha_rungs, classification_report_frame, pareto_front
from cifar_ray.data import CACHE_ENV, DATA_ENV
from cifar_ray.models import build_model
from cifar_ray.reference import study_result

REPO = Path(__file__).resolve().parents[1]
TRAIN_PER_CLASS = 80
TEST_PER_CLASS = 40
# Four search trials (the study's four CNNs, which hyperopt evaluates first),
# two epochs so that ASHA can stop some, and the top two retrained.
SWEEP_ARGS = [
    "--profile", "smoke",
    "--num-samples", "4",
    "--max-epochs", "2",
    "--grace-period", "1",
    "--final-epochs", "1",
    "--search-subset", "300",
    "--final-subset", "300",
    "--top-k", "2",
    "--no-analysis",
]  # fmt: skip
MIN_WIDTH, MIN_HEIGHT = 300, 200
CNN_FIGURES = ("confusion_matrix.png", "learning_curves.png", "tsne.png", "feature_maps.png")


@pytest.fixture(scope="session")
def sweep_folder(tmp_path_factory, real_data_dir, make_split_tree) -> Path:
    """Output folder of a real tiny CNN sweep. Tests treat it as read-only and analyse copies."""
    root = tmp_path_factory.mktemp("sweep")
    classes = sorted(entry.name for entry in os.scandir(real_data_dir / "train") if entry.is_dir())
    tree = make_split_tree(root / "data", classes, TRAIN_PER_CLASS, TEST_PER_CLASS)
    out = root / "out"
    env = {**os.environ, DATA_ENV: str(tree), CACHE_ENV: str(root / "cache"), "RAY_USAGE_STATS_ENABLED": "0"}
    completed = subprocess.run(
        [sys.executable, "sweeps/cnn_search.py", *SWEEP_ARGS, "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert completed.returncode == 0, (
        f"the tiny sweep failed with exit code {completed.returncode}\n"
        f"stdout (end):\n{completed.stdout[-4000:]}\nstderr (end):\n{completed.stderr[-4000:]}"
    )
    return out


def copy_sweep(source: Path, target: Path) -> Path:
    """Copy a sweep folder without any earlier analysis output."""
    return Path(shutil.copytree(source, target, ignore=shutil.ignore_patterns("analysis", "REPORT.md")))


@pytest.fixture(scope="session")
def analysed(sweep_folder, tmp_path_factory) -> tuple[Path, dict]:
    out = copy_sweep(sweep_folder, tmp_path_factory.mktemp("analysed") / "out")
    return out, analyse_sweep(out)


@pytest.fixture(scope="session")
def damaged(sweep_folder, tmp_path_factory) -> tuple[Path, dict, str, str]:
    """A copy with one final model file deleted and the weakest search trial marked ERROR."""
    out = copy_sweep(sweep_folder, tmp_path_factory.mktemp("damaged") / "out")
    trials = pd.read_parquet(out / "trials.parquet")
    final = trials[trials["stage"] == "final"]
    deleted = final.iloc[0]
    (out / deleted["model_file"]).unlink()

    search = trials[trials["stage"] != "final"]
    failed = search["best_val_accuracy"].idxmin()
    trials.loc[failed, ["status", "stop_reason", "error"]] = ["ERROR", "error", "RuntimeError: injected failure"]
    trials.to_parquet(out / "trials.parquet", index=False)
    model_name = f"{deleted['model']}-{deleted['trial_id']}"
    return out, analyse_sweep(out), model_name, str(trials.loc[failed, "trial_id"])


@pytest.fixture(scope="session")
def search_only(sweep_folder, tmp_path_factory) -> tuple[Path, dict]:
    """A copy as a sweep leaves it when stopped after its search stage: no final rows, models or summary."""
    out = copy_sweep(sweep_folder, tmp_path_factory.mktemp("search_only") / "out")
    trials = pd.read_parquet(out / "trials.parquet")
    trials[trials["stage"] != "final"].drop(columns=["model_file"]).to_parquet(out / "trials.parquet", index=False)
    history = pd.read_parquet(out / "history.parquet")
    history[history["stage"] != "final"].to_parquet(out / "history.parquet", index=False)
    for name in ("summary.csv", "summary.md"):
        (out / name).unlink()
    shutil.rmtree(out / "models")
    shutil.rmtree(out / "ray" / "final")
    stages = json.loads((out / "stages.json").read_text())
    stages.pop("final")
    (out / "stages.json").write_text(json.dumps(stages))
    return out, analyse_sweep(out)


def assert_valid_pngs(folder: Path) -> list[Path]:
    pngs = sorted(folder.rglob("*.png"))
    assert pngs, f"no PNG written under {folder}"
    for path in pngs:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG", f"{path} is {image.format}, not PNG"
            width, height = image.size
        assert width >= MIN_WIDTH, f"{path} is only {width} pixels wide"
        assert height >= MIN_HEIGHT, f"{path} is only {height} pixels high"
    return pngs


def final_rows(out: Path) -> pd.DataFrame:
    trials = pd.read_parquet(out / "trials.parquet")
    return trials[trials["stage"] == "final"]


# The intact sweep.


@pytest.mark.slow
def test_every_png_valid(analysed):
    out, _ = analysed

    assert_valid_pngs(out / "analysis")


@pytest.mark.slow
def test_expected_figures(analysed):
    out, result = analysed

    for _, row in final_rows(out).iterrows():
        folder = out / "analysis" / "models" / f"{row['model']}-{row['trial_id']}"
        for name in CNN_FIGURES:
            assert (folder / name).is_file(), f"{folder / name} missing"
    for name in ("accuracy_vs_cost.png", "budget_search-cnn.png", "parallel_coordinates_search-cnn.png", "importance_search-cnn.png"):
        assert (out / "analysis" / name).is_file(), f"{name} missing; skipped: {result['skipped']}"
    assert set(map(Path, result["figures"])) == set((out / "analysis").rglob("*.png"))


@pytest.mark.slow
def test_nothing_skipped_when_intact(analysed):
    _, result = analysed

    assert result["skipped"] == []


@pytest.mark.slow
def test_summary_matches_trials(analysed):
    out, _ = analysed
    summary = pd.read_csv(out / "analysis" / "summary.csv", dtype={"trial_id": str}).set_index("trial_id")
    final = final_rows(out)

    assert len(summary) == len(final)
    for _, row in final.iterrows():
        line = summary.loc[row["trial_id"]]
        assert line["model"] == row["model"]
        assert line["test_accuracy"] == pytest.approx(row["test_accuracy"])
        assert line["params"] == row["params"]
        assert line["train_time_s"] == pytest.approx(row["train_time_s"])
        assert line["last_val_accuracy"] == pytest.approx(row["last_val_accuracy"])
        assert line["best_val_accuracy"] == pytest.approx(row["best_val_accuracy"])


@pytest.mark.slow
def test_summary_study_figures(analysed):
    out, _ = analysed
    summary = pd.read_csv(out / "analysis" / "summary.csv")

    for _, line in summary.iterrows():
        study = study_result(line["model"])
        assert study is not None, f"the study has a Nadam, early-stopping row for {line['model']}"
        assert line["study_test_accuracy"] == pytest.approx(study.test_accuracy)
        assert line["study_params"] == study.params
        assert line["study_train_time_s"] == pytest.approx(study.train_time_s)


@pytest.mark.slow
def test_summary_markdown_names_epochs(analysed):
    out, _ = analysed
    header = (out / "analysis" / "summary.md").read_text().split("\n| model")[1].splitlines()[0]

    assert "val acc (last epoch)" in header
    assert "val acc (best epoch)" in header
    assert "tested weights" in header


@pytest.mark.slow
def test_report_mentions_final_models(analysed):
    out, _ = analysed
    report = (out / "REPORT.md").read_text()

    for _, row in final_rows(out).iterrows():
        assert f"{row['model']}-{row['trial_id']}" in report
        assert f"{row['test_accuracy']:.4f}" in report


@pytest.mark.slow
def test_report_links_resolve(analysed):
    out, _ = analysed
    report = (out / "REPORT.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)

    assert len(images) >= 4
    for link in images:
        assert not Path(link).is_absolute(), f"{link} should be relative to REPORT.md"
        assert (out / link).is_file(), f"REPORT.md links to missing {link}"


@pytest.mark.slow
def test_ray_check_agrees(analysed):
    out, result = analysed
    trials = pd.read_parquet(out / "trials.parquet")

    assert {check["stage"] for check in result["ray_check"]} == set(trials["stage"])
    for check in result["ray_check"]:
        assert check["outcome"] == "agrees", check
        stage = trials[trials["stage"] == check["stage"]]
        assert check["table_trial_id"] == stage.loc[stage["best_val_accuracy"].idxmax(), "trial_id"]
    assert "## Check against Ray Tune" in (out / "REPORT.md").read_text()


@pytest.mark.slow
def test_trials_table_keeps_every_trial(analysed):
    out, _ = analysed
    trials = pd.read_parquet(out / "trials.parquet")
    table = pd.read_csv(out / "analysis" / "trials.csv", dtype={"trial_id": str})

    assert sorted(table["trial_id"]) == sorted(trials["trial_id"])
    statuses = dict(zip(table["trial_id"], table["status"]))
    for _, row in trials.iterrows():
        assert statuses[row["trial_id"]].startswith(row["status"])


@pytest.mark.slow
def test_analysis_rerun_replaces_outputs(sweep_folder, tmp_path):
    out = copy_sweep(sweep_folder, tmp_path / "out")
    analyse_sweep(out, embeddings=False)
    stale = out / "analysis" / "stale.png"
    shutil.copyfile(next((out / "analysis").glob("*.png")), stale)

    result = analyse_sweep(out, embeddings=False)

    assert not stale.exists(), "a rerun should not leave outputs of an earlier run"
    assert any("turned off" in skip["reason"] for skip in result["skipped"])
    assert (out / "analysis" / "summary.csv").is_file()


# A damaged sweep: one final model file deleted, one search trial marked ERROR.


@pytest.mark.slow
def test_damaged_lists_skips(damaged):
    out, result, model_name, _ = damaged
    skipped = {skip["item"]: skip["reason"] for skip in result["skipped"]}

    assert f"{model_name}: t-SNE map and feature maps" in skipped
    assert "not found" in skipped[f"{model_name}: t-SNE map and feature maps"]
    skipped_section = (out / "REPORT.md").read_text().split("## Skipped")[1]
    assert model_name in skipped_section


@pytest.mark.slow
def test_damaged_keeps_other_outputs(damaged):
    out, _, model_name, _ = damaged
    analysis = out / "analysis"

    assert_valid_pngs(analysis)
    # The confusion matrix and learning curves come from metrics.json and history.parquet, not the model file.
    assert (analysis / "models" / model_name / "confusion_matrix.png").is_file()
    assert (analysis / "models" / model_name / "learning_curves.png").is_file()
    assert not (analysis / "models" / model_name / "tsne.png").exists()
    for _, row in final_rows(out).iterrows():
        name = f"{row['model']}-{row['trial_id']}"
        if name != model_name:
            assert (analysis / "models" / name / "tsne.png").is_file()
    for name in ("summary.csv", "trials.csv", "accuracy_vs_cost.png", "budget_search-cnn.png"):
        assert (analysis / name).is_file(), f"{name} missing"


@pytest.mark.slow
def test_damaged_shows_error_trial(damaged):
    out, _, _, failed_id = damaged
    table = pd.read_csv(out / "analysis" / "trials.csv", dtype={"trial_id": str}).set_index("trial_id")

    assert table.loc[failed_id, "status"] == "ERROR: RuntimeError: injected failure"
    assert failed_id in (out / "REPORT.md").read_text()


# A sweep stopped after its search stage.


@pytest.mark.slow
def test_search_only_folder(search_only):
    out, result = search_only
    report = (out / "REPORT.md").read_text()

    assert "No final model was tested" in report
    assert not (out / "analysis" / "summary.csv").exists()
    assert (out / "analysis" / "budget_search-cnn.png").is_file()
    assert (out / "analysis" / "trials.csv").is_file()
    assert any(skip["item"] == "summary table" for skip in result["skipped"])
    assert [check["outcome"] for check in result["ray_check"]] == ["agrees"]
    assert_valid_pngs(out / "analysis")


# Parts that need no sweep.


def test_pareto_front_cases():
    costs = pd.Series([10.0, 20.0, 30.0, 15.0, math.nan])
    accuracies = pd.Series([0.5, 0.7, 0.6, 0.5, 0.9])

    front = pareto_front(costs, accuracies)

    assert front.tolist() == [True, True, False, False, False]


def test_asha_rungs_cases():
    assert asha_rungs(1, 3, 30) == [1, 3, 9, 27]
    assert asha_rungs(1, 2, 2) == [1, 2]
    assert asha_rungs(3, 3, 2) == []


def test_report_from_confusion_matches_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 3, 200))
    names = ["cat", "dog", "ship"]
    expected = classification_report(y_true, y_pred, target_names=names, output_dict=True)

    frame = classification_report_frame(confusion_matrix(y_true, y_pred), names)

    for name in names:
        assert frame.loc[name, "f1-score"] == pytest.approx(expected[name]["f1-score"])
        assert frame.loc[name, "support"] == expected[name]["support"]
    assert frame.loc["macro avg", "precision"] == pytest.approx(expected["macro avg"]["precision"])
    assert frame.loc["accuracy", "f1-score"] == pytest.approx(expected["accuracy"])


def test_importance_too_few_trials():
    trials = pd.DataFrame({"config/lr": [1e-3, 2e-3, 3e-3], "best_val_accuracy": [0.3, 0.4, 0.5]})

    reason = hyperparameter_importance(trials.head(MIN_TRIALS - 1), "search-cnn")

    assert isinstance(reason, str)
    assert f"at least {MIN_TRIALS}" in reason


def test_importance_finds_driving_column():
    rng = np.random.default_rng(0)
    lr = rng.uniform(1e-4, 1e-2, 40)
    trials = pd.DataFrame(
        {
            "config/lr": lr,
            "config/dense_units": rng.integers(128, 512, 40),
            "config/seed": 0,
            "best_val_accuracy": 0.3 + 20 * lr + rng.normal(0, 0.005, 40),
        }
    )

    importance = hyperparameter_importance(trials, "search-cnn")

    assert not isinstance(importance, str), importance
    assert importance.frame.iloc[0]["hyperparameter"] == "lr"
    assert "seed" not in set(importance.frame["hyperparameter"]), "a constant column is not a searched hyperparameter"
    assert importance.reliable


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("fcnn3", {"hidden_units": [24, 12]}),
        ("cnn3_reg", {"filters": [8, 8, 16], "dense_units": 12}),
        ("resnet", {"stage_widths": [4, 8, 16], "blocks_per_stage": 1}),
    ],
)
def test_model_internals_shapes(name, kwargs):
    model = build_model(name, **kwargs).eval()
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    mean_image = np.full((32, 32, 3), 0.5, dtype=np.float32)

    activations = last_hidden_activations(model, images, mean_image)

    width = {"fcnn3": 12, "cnn3_reg": 12, "resnet": 16}[name]
    assert activations.shape == (5, width)
    assert np.isfinite(activations).all()
    if hasattr(model, "conv_layers"):
        first, last = model.conv_layers()[0], model.conv_layers()[-1]
        maps = conv_feature_maps(model, images, mean_image)
        assert maps.first.shape[:2] == (5, first.out_channels)
        assert maps.last.shape[:2] == (5, last.out_channels)
        assert all(not module._forward_hooks for module in model.modules()), "hooks must be removed afterwards"


def test_tsne_embedding_shape():
    activations = np.random.default_rng(0).normal(size=(60, 80)).astype(np.float32)

    embedding = tsne_embedding(activations, seed=0)

    assert embedding.shape == (60, 2)
    assert np.isfinite(embedding).all()


def test_folder_without_sweep_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="sweep.json"):
        load_folder(tmp_path, Skips())


def test_cli_missing_folder(tmp_path, capsys):
    cli = runpy.run_path(str(REPO / "analysis" / "analyse.py"), run_name="analyse")

    exit_code = cli["main"](cli["get_args_parser"]().parse_args([str(tmp_path / "nowhere")]))

    assert exit_code == 2
    assert "sweep.json" in capsys.readouterr().err
