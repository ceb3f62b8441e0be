"""End-to-end checks of the sweep scripts on the real data, with a real local Ray instance.

The CNN sweep runs once per session at tiny settings; its outputs, Ray's
experiment folders and TensorBoard event files are then checked in place.
The other three scripts run at the `smoke` profile, as CI requires.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]

# Tiny enough for about two minutes on 2 cores, large enough for ASHA to stop
# a trial: 4 samples, rungs at epochs 1 and 2.
TINY = [
    "--profile", "smoke",
    "--num-samples", "4",
    "--max-epochs", "3",
    "--grace-period", "1",
    "--reduction-factor", "2",
    "--search-subset", "500",
    "--final-subset", "500",
    "--final-epochs", "2",
    "--top-k", "1",
    "--no-analysis",
]  # fmt: skip


def run_sweep(script: str, out: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / f"{script}.py"), "--out", str(out), *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{script} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="session")
def cnn_sweep(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("cnn_sweep") / "out"
    return out, run_sweep("cnn_search", out, *TINY)


def test_cnn_sweep_writes_outputs(cnn_sweep):
    out, _ = cnn_sweep
    for name in ("sweep.json", "stages.json", "trials.parquet", "history.parquet", "summary.csv", "summary.md"):
        assert (out / name).is_file(), f"missing {name}"
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) == {"search-cnn", "final"}


def test_cnn_sweep_trials_table(cnn_sweep):
    out, _ = cnn_sweep
    trials = pd.read_parquet(out / "trials.parquet")
    search = trials[trials["stage"] == "search-cnn"]
    final = trials[trials["stage"] == "final"]
    assert len(search) == 4
    assert len(final) == 1
    assert set(search["status"]) <= {"TERMINATED", "STOPPED", "DIVERGED", "ERROR"}
    assert (search["status"] == "STOPPED").any(), "ASHA stopped no trial early"
    assert search["config/filters_1"].notna().all(), "flattened config columns are missing"
    assert final["test_accuracy"].between(0, 1).all()
    assert final["model_file"].notna().all()


def test_cnn_sweep_history_matches_epochs(cnn_sweep):
    out, _ = cnn_sweep
    trials = pd.read_parquet(out / "trials.parquet")
    history = pd.read_parquet(out / "history.parquet")
    for _, trial in trials.iterrows():
        rows = history[history["trial_id"] == trial["trial_id"]]
        assert sorted(rows["epoch"]) == list(range(1, trial["epochs"] + 1)), trial["trial_id"]
        assert rows["val_accuracy"].max() == pytest.approx(trial["best_val_accuracy"])


def test_final_winner_is_best_search_trial(cnn_sweep):
    out, _ = cnn_sweep
    trials = pd.read_parquet(out / "trials.parquet")
    search = trials[trials["stage"] == "search-cnn"]
    final = trials[trials["stage"] == "final"]
    best = search.sort_values("best_val_accuracy", ascending=False).iloc[0]
    assert final.iloc[0]["config/search_trial_id"] == best["trial_id"]
    assert final.iloc[0]["epochs"] <= 2


def test_summary_matches_trials(cnn_sweep):
    out, _ = cnn_sweep
    summary = pd.read_csv(out / "summary.csv")
    final = pd.read_parquet(out / "trials.parquet").query("stage == 'final'")
    assert len(summary) == 1
    assert summary.loc[0, "test_accuracy"] == pytest.approx(final.iloc[0]["test_accuracy"])
    assert summary.loc[0, "params"] == final.iloc[0]["params"]
    assert summary.loc[0, "study_test_accuracy"] > 0.7, "the study's figure is missing beside ours"


def test_model_file_loads(cnn_sweep):
    from cifar_ray.checkpoint import load_model

    out, _ = cnn_sweep
    final = pd.read_parquet(out / "trials.parquet").query("stage == 'final'")
    model, metadata = load_model(out / final.iloc[0]["model_file"])
    assert len(metadata["class_names"]) == 10
    assert metadata["mean_image"].shape == (32, 32, 3)


def test_tensorboard_has_every_epoch(cnn_sweep):
    out, _ = cnn_sweep
    trials = pd.read_parquet(out / "trials.parquet")
    for _, trial in trials.iterrows():
        folder = Path(trial["path"])
        assert list(folder.glob("events.out.tfevents.*")), f"no event file in {folder}"
        events = EventAccumulator(str(folder))
        events.Reload()
        tags = [tag for tag in events.Tags()["scalars"] if tag.endswith("val_accuracy") and "best" not in tag]
        assert tags, f"no val_accuracy tag in {folder}"
        steps = [event.step for event in events.Scalars(tags[0])]
        assert sorted(steps) == list(range(1, trial["epochs"] + 1)), f"{trial['trial_id']}: steps {steps}"


def test_sweep_prints_table_and_tensorboard(cnn_sweep):
    out, result = cnn_sweep
    assert "| model |" in result.stdout
    assert f"tensorboard --logdir {out / 'ray'} --host 127.0.0.1" in result.stdout
    assert "profile 'smoke'" in result.stdout


@pytest.mark.slow
def test_hyperband_sweep(real_data_dir, tmp_path):
    run_sweep("cnn_search", tmp_path / "out", *TINY, "--scheduler", "hyperband")
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    assert (trials["stage"] == "final").sum() == 1


@pytest.mark.slow
@pytest.mark.parametrize("script", ["fcnn_search", "resnet_lr", "paper"])
def test_smoke_profile(script, real_data_dir, tmp_path):
    result = run_sweep(script, tmp_path / "out", "--profile", "smoke", "--no-analysis")
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert len(summary) >= 1, result.stdout[-2000:]
    assert summary["test_accuracy"].notna().all()


@pytest.mark.slow
def test_sweep_on_64px_class_tree(real_data_dir, tmp_path):
    """A business-style tree without a split, resized to 64x64: the CNN adapts and the sweep finishes."""
    from PIL import Image

    tree = tmp_path / "photos"
    for name in ("cat", "dog", "ship"):
        (tree / name).mkdir(parents=True)
        for path in sorted((real_data_dir / "train" / name).glob("*.jpg"))[:120]:
            Image.open(path).resize((64, 64)).save(tree / name / path.name)
    result = run_sweep("cnn_search", tmp_path / "out", *TINY, "--data", str(tree), "--image-size", "64")
    assert "cat (" in result.stdout, "class counts are not printed"
    sweep = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert sweep["data"]["class_names"] == ["cat", "dog", "ship"]
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    final = trials[trials["stage"] == "final"]
    assert final["test_accuracy"].notna().all()


def test_predict_with_sweep_model(cnn_sweep, tmp_path, capsys):
    """`cifar-ray predict` with the sweep's retrained model on messy copies of 200 real test images."""
    import numpy as np
    import torch

    from _images import decode_files, real_files, write_messy_copy
    from cifar_ray.checkpoint import load_model
    from cifar_ray.cli import main
    from cifar_ray.data import DeviceDataset

    out, _ = cnn_sweep
    model_path = out / pd.read_parquet(out / "trials.parquet").query("stage == 'final'").iloc[0]["model_file"]
    sources, labels = real_files("test", per_class=20)
    folder = tmp_path / "uploads"
    folder.mkdir()
    messy = [write_messy_copy(source, folder, index)[0] for index, source in enumerate(sources)]
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")

    code = main(["predict", str(model_path), str(folder), "--out", str(tmp_path / "predictions.csv")])

    assert code == 0
    assert "skipped 2" in capsys.readouterr().out
    predictions = pd.read_csv(tmp_path / "predictions.csv").set_index("path")
    assert len(predictions) == len(messy)

    # Accuracy on the messy copies stays close to the same model's accuracy on the clean files.
    model, metadata = load_model(model_path)
    images = decode_files(sources, metadata["image_size"])
    dataset = DeviceDataset(images, labels, metadata["mean_image"], torch.device("cpu"))
    with torch.no_grad():
        clean = torch.cat([model(batch) for batch, _ in dataset.eval_batches(100, channels_last=False)]).argmax(1).numpy()
    names = metadata["class_names"]
    predicted = np.array([names.index(predictions.loc[str(path), "predicted_class"]) for path in messy])
    clean_accuracy = (clean == labels).mean()
    messy_accuracy = (predicted == labels).mean()
    assert abs(messy_accuracy - clean_accuracy) <= 0.08, f"messy {messy_accuracy:.3f} vs clean {clean_accuracy:.3f}"


@pytest.mark.slow
def test_pretrained_sweep_from_local_weights(real_data_dir, tmp_path, monkeypatch):
    """The pretrained search reads its starting weights from a torchvision cache folder the test fills itself."""
    import torch
    import torchvision

    from cifar_ray.models.pretrained import hub_checkpoint_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for architecture in ("resnet18", "mobilenet_v3_small"):
        path = hub_checkpoint_path(architecture)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(getattr(torchvision.models, architecture)(weights=None).state_dict(), path)

    run_sweep("pretrained_search", tmp_path / "out", *TINY)

    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    search = trials[trials["stage"] == "search-pretrained"]
    assert (search["status"] != "ERROR").all(), search["error"].tolist()
    assert set(search["model"]) <= {"resnet18_pretrained", "mobilenet_v3_small_pretrained"}
    final = trials[trials["stage"] == "final"]
    assert final["test_accuracy"].notna().all()


def test_scheduler_state_saved(cnn_sweep):
    """ASHA's rung records are kept beside the sweep, so `--resume` can reload them into the restored scheduler."""
    from ray.tune.schedulers import ASHAScheduler

    from cifar_ray.tune.sweep import SchedulerState

    out, _ = cnn_sweep
    path = out / "scheduler-search-cnn.pkl"
    assert path.is_file(), "the scheduler's state was not saved"
    fresh = ASHAScheduler(time_attr="training_iteration", max_t=3, grace_period=1, reduction_factor=2)
    SchedulerState(fresh, path).setup()
    recorded = sum(len(records) for bracket in fresh._brackets for _, records in bracket._rungs)
    assert recorded >= 4, f"only {recorded} rung records restored"
