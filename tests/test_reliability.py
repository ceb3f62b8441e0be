"""Faults injected into real sweeps on a real local Ray instance, and how much work each one costs.

The tests kill a trial's worker and a whole sweep driver with SIGKILL, make
trials diverge or fail in setup, request impossible resources, and kill a
result-file writer halfway. Every sweep runs as a script in its own process
group, with a Ray temp folder of its own, so a test kills only processes it
started and cleans up only its own leftovers. The data is a 10-class tree of
real CIFAR-10 JPEGs copied from $CIFAR_RAY_DATA. docs/RELIABILITY.md records
what these tests measured.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from cifar_ray import io
from cifar_ray.checkpoint import load_model
from cifar_ray.config import DataConfig
from cifar_ray.data import prepare_data
from cifar_ray.engine import DIVERGED_LOSS, Trainer
from cifar_ray.tune.sweep import run
from cifar_ray.tune.trainables import STATE_FILE, train_config_from_trial

REPO = Path(__file__).resolve().parents[1]
SWEEP_SCRIPT = REPO / "sweeps" / "cnn_search.py"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# 2,250 training and 250 validation images after the 10% validation split.
TRAIN_PER_CLASS = 250
TEST_PER_CLASS = 20

# Upper bounds for one sweep on 2 shared CPU cores. The measured times are in docs/RELIABILITY.md.
SWEEP_TIMEOUT_S = 300
REJECTION_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def sweep_data(tmp_path_factory, make_split_tree) -> tuple[Path, Path]:
    """The image tree and a decoded-image cache shared by every sweep of this module."""
    root = tmp_path_factory.mktemp("reliability")
    tree = make_split_tree(root / "tree", CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS)
    return tree, root / "cache"


def processes_using(folder: str) -> dict[int, str]:
    """Live processes whose command line or environment names `folder`, with their command lines.

    Each test gives its Ray instance a temp folder of its own through
    RAY_TMPDIR, so the processes found are the ones that test started.
    """
    needle = folder.encode()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:  # the process ended while being read, or belongs to another user
            continue
        if needle in cmdline or needle in environ:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


@pytest.fixture
def ray_temp_dir():
    """Create a short RAY_TMPDIR for this test alone, and kill the Ray processes left under it afterwards.

    Ray puts Unix sockets under it, whose paths may not exceed 107 bytes, so it
    lives directly under /tmp rather than under pytest's deeper tmp_path.
    """
    folder = tempfile.mkdtemp(prefix="cr-", dir="/tmp")
    yield folder
    for pid in processes_using(folder):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class SweepProcess:
    """A sweep script started as the leader of its own process group, with its output in `log`."""

    process: subprocess.Popen
    out: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, characters: int = 4000) -> str:
        return self.output()[-characters:]

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep in {self.out} did not finish within {timeout:.0f} s; output:\n{self.tail()}")


@pytest.fixture
def start_sweep(sweep_data, ray_temp_dir, tmp_path):
    """Return a function that starts `sweeps/cnn_search.py` on the test tree. Sweeps still running at teardown are killed."""
    tree, cache = sweep_data
    started: list[SweepProcess] = []

    def start(out: Path, *flags: str) -> SweepProcess:
        log = tmp_path / f"{out.name}-{len(started)}.log"
        command = [
            str(SWEEP_SCRIPT),
            "--data", str(tree),
            "--cache-dir", str(cache),
            "--profile", "smoke",
            "--no-analysis",
            "--out", str(out),
            *flags,
        ]  # fmt: skip
        with open(log, "w") as handle:
            process = subprocess.Popen(
                [sys.executable, *command],
                cwd=REPO,
                env=sweep_environment(ray_temp_dir),
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        sweep = SweepProcess(process, out, log)
        started.append(sweep)
        return sweep

    yield start
    for sweep in started:
        if sweep.process.poll() is None:
            os.killpg(sweep.process.pid, signal.SIGKILL)
            sweep.process.wait()


def sweep_environment(ray_temp_dir: str) -> dict[str, str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": ray_temp_dir, "PYTHONUNBUFFERED": "1"}
    # The sweep must start its own local Ray instance, never join one named by the environment.
    env.pop("RAY_ADDRESS", None)
    return env


def wait_until(condition: Callable[[], Any], timeout: float, description: str, sweep: SweepProcess) -> Any:
    """Poll `condition` every 50 ms until it returns a true value. Fail if the sweep exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if sweep.process.poll() is not None:
            pytest.fail(f"the sweep exited ({sweep.process.returncode}) before {description}; output:\n{sweep.tail()}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {description}; output:\n{sweep.tail()}")


def read_results(trial_dir: Path) -> list[dict[str, Any]]:
    """The results Tune recorded for one trial, one dict per reported epoch, in order."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the driver is appending this line right now
            break
    return rows


def snapshot_statuses(experiment: Path) -> tuple[dict[str, str], float]:
    """Trial statuses in Tune's latest experiment snapshot, the state Tuner.restore starts from, and the snapshot's mtime."""
    snapshots = sorted(experiment.glob("experiment_state-*.json"))
    if not snapshots:
        return {}, 0.0
    try:
        modified = snapshots[-1].stat().st_mtime
        state = json.loads(snapshots[-1].read_text())
    except (OSError, json.JSONDecodeError):  # Tune is rewriting the snapshot
        return {}, 0.0
    statuses = {}
    for trial_json, _ in state["trial_data"]:
        trial = json.loads(trial_json)
        statuses[trial["trial_id"]] = trial["status"]
    return statuses, modified


def load_sweep_spec(path: Path):
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SPEC


# Impossible requests.


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--num-samples", "0"], "--num-samples must be at least 1, got 0"),
        (["--metric", "val_acc"], "--metric 'val_acc' is not reported by any trial; valid: "),
        (["--grace-period", "5", "--max-epochs", "2"], "--grace-period 5 is above --max-epochs 2"),
    ],
    ids=["num_samples_0", "unknown_metric", "grace_above_max_t"],
)
def test_impossible_setting_rejected_before_data(flags, expected, tmp_path, capsys):
    out = tmp_path / "out"
    # A data path that does not exist: a check that ran after data loading would report it instead.
    missing = tmp_path / "no-such-data"
    started = time.perf_counter()

    code = run(load_sweep_spec(SWEEP_SCRIPT), ["--profile", "smoke", "--data", str(missing), "--out", str(out), *flags])

    elapsed = time.perf_counter() - started
    error = capsys.readouterr().err
    assert code == 2, error
    assert expected in error
    assert str(missing) not in error, "the data was looked up before the settings were checked"
    assert not (out / "sweep.json").exists(), "a rejected sweep recorded itself"
    assert elapsed < 10, f"rejection took {elapsed:.1f} s"


def test_existing_output_rejected_without_resume(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "trials.parquet").write_bytes(b"earlier results")

    code = run(load_sweep_spec(SWEEP_SCRIPT), ["--profile", "smoke", "--data", str(tmp_path / "missing"), "--out", str(out)])

    error = capsys.readouterr().err
    assert code == 2, error
    assert str(out) in error
    assert "--resume" in error, "the message should say how to continue the sweep"
    assert "--out" in error, "the message should say how to write elsewhere"
    assert (out / "trials.parquet").read_bytes() == b"earlier results"


def test_resume_without_sweep_rejected(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()

    code = run(load_sweep_spec(SWEEP_SCRIPT), ["--profile", "smoke", "--out", str(out), "--resume"])

    error = capsys.readouterr().err
    assert code == 2, error
    assert "sweep.json" in error
    assert "--out" in error


def impossible_resources() -> list[tuple[list[str], str]]:
    cpus = max(64, 2 * (os.cpu_count() or 1))
    gpus = torch.cuda.device_count() + 1
    return [
        (["--cpus-per-trial", str(cpus)], rf"--cpus-per-trial {cpus} is more than any node has: the largest of 1 node\(s\) has \d+ CPUs"),
        (["--gpus-per-trial", str(gpus)], rf"--gpus-per-trial {gpus} is more than any node has: the largest of 1 node\(s\) has \d+ GPUs"),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "pattern"), impossible_resources(), ids=["cpus", "gpus"])
def test_impossible_resources_rejected(flags, pattern, start_sweep, tmp_path, ray_temp_dir):
    out = tmp_path / "out"
    # The last --data wins: a path that does not exist, so a check after data loading would report it instead.
    missing = tmp_path / "no-such-data"
    started = time.perf_counter()

    sweep = start_sweep(out, *flags, "--data", str(missing))
    code = sweep.wait(REJECTION_TIMEOUT_S)

    elapsed = time.perf_counter() - started
    output = sweep.output()
    assert code == 2, output[-4000:]
    assert re.search(pattern, output), output[-4000:]
    assert str(missing) not in output, "the data was looked up before the resources were checked"
    assert not (out / "sweep.json").exists(), "the rejected sweep recorded itself"
    assert not (out / "ray").exists(), "a Tune experiment started"
    print(f"rejected {' '.join(flags)} after {elapsed:.1f} s")
    # Ray was started only to read the cluster's size, and the driver's exit shut it down.
    time.sleep(2)
    assert processes_using(ray_temp_dir) == {}, "Ray processes outlived the rejected sweep"


# Trial faults.


@pytest.mark.slow
def test_trial_killed_mid_epoch_resumes_from_checkpoint(start_sweep, sweep_data, tmp_path):
    """SIGKILL of a trial's worker during epoch 3 of 4: Tune restores the trial from its epoch-2 checkpoint."""
    epochs = 4
    search_subset = 1500
    out = tmp_path / "out"
    # 1,500 images at 0.4 of the study's widths: an epoch took 4.3 to 5.5 s on one core of a loaded
    # 2-core machine, long enough to kill it midway.
    sweep = start_sweep(
        out,
        "--scheduler", "fifo",
        "--num-samples", "1",
        "--max-epochs", str(epochs),
        "--width-scale", "0.4",
        "--search-subset", str(search_subset),
        "--final-subset", "300",
        "--final-epochs", "1",
        "--top-k", "1",
        "--max-failures", "2",
        "--checkpoint-every", "1",
    )  # fmt: skip
    experiment = out / "ray" / "search-cnn"

    def second_checkpoint() -> Path | None:
        for trial_dir in experiment.glob("CNNTrainable_*"):
            if (trial_dir / "checkpoint_000001").is_dir() and read_results(trial_dir):
                return trial_dir
        return None

    # checkpoint_000001 contains the state after epoch 2, and Tune starts epoch 3 as soon as it is saved.
    trial_dir = wait_until(second_checkpoint, SWEEP_TIMEOUT_S, "the trial's second checkpoint", sweep)
    first = read_results(trial_dir)[0]
    victim = first["pid"]
    time.sleep(first["epoch_time_s"] / 4)
    # Ray names a trial's worker after its actor class, here the tune.with_resources wrapper.
    assert re.match(r"ray::\w*Trainable", command_line(victim)), f"pid {victim} is not the trial's worker"
    os.kill(victim, signal.SIGKILL)

    code = sweep.wait(SWEEP_TIMEOUT_S)
    assert code == 0, sweep.tail()

    rows = read_results(trial_dir)
    before = [row["epoch"] for row in rows if row["pid"] == victim]
    after = [row for row in rows if row["pid"] != victim]
    resumed = after[0]
    print(f"killed pid {victim} during epoch 3; epochs reported before {before}, after {[row['epoch'] for row in after]}")
    assert before == [1, 2], f"the kill missed epoch 3: the killed worker reported epochs {before}"
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 1)), "an epoch was lost or reported twice"
    assert len({row["pid"] for row in after}) == 1, "the trial was restarted more than once"
    # Restored from checkpoint_000001 (after epoch 2): only epoch 3, the one in flight, ran again.
    assert resumed["epoch"] == 3
    assert resumed["iterations_since_restore"] == 1, "the trial continued instead of being restored"
    assert all(row["training_iteration"] == row["epoch"] for row in rows)
    assert rows[-1]["epoch"] == epochs
    assert rows[-1]["done"] is True
    assert not Path(f"/proc/{victim}").exists()
    assert "Failure # 1" in (trial_dir / "error.txt").read_text()

    # The same run without the kill, in this process: the restored epochs must match it, lr included.
    reference = reference_history(trial_dir, sweep_data, search_subset)
    for row in rows:
        expected = reference[row["epoch"] - 1]
        assert row["lr"] == pytest.approx(expected["lr"], rel=1e-12), f"lr of epoch {row['epoch']}"
        assert row["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-4), f"train_loss of epoch {row['epoch']}"
        assert row["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-4), f"val_loss of epoch {row['epoch']}"
    assert resumed["lr"] < reference[0]["lr"], "the learning-rate schedule restarted"

    trials = pd.read_parquet(out / "trials.parquet")
    search = trials[trials["stage"] == "search-cnn"].iloc[0]
    assert search["status"] == "TERMINATED"
    assert search["error"] == ""
    history = pd.read_parquet(out / "history.parquet")
    assert history[history["stage"] == "search-cnn"]["epoch"].tolist() == list(range(1, epochs + 1))


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def reference_history(trial_dir: Path, sweep_data: tuple[Path, Path], search_subset: int) -> list[dict[str, Any]]:
    """Train the trial's configuration without interruption, on one thread like the trial, and return its history."""
    tree, cache = sweep_data
    config = json.loads((trial_dir / "params.json").read_text())
    # The search data exactly as the sweep driver prepares it (seed 0).
    data = prepare_data(DataConfig(data=str(tree), cache_dir=str(cache), train_subset=search_subset))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(train_config_from_trial(config), data)
        return trainer.fit()
    finally:
        torch.set_num_threads(threads)


# Driver faults.


@pytest.mark.slow
def test_driver_killed_mid_sweep_resumes(start_sweep, ray_temp_dir, tmp_path):
    """SIGKILL of the sweep's whole process group while a trial trains, then the same command with --resume."""
    num_samples = 6
    epochs = 4
    out = tmp_path / "out"
    flags = [
        "--scheduler", "fifo",
        "--num-samples", str(num_samples),
        "--max-epochs", str(epochs),
        "--max-concurrent", "1",
        "--width-scale", "0.3",
        "--search-subset", "600",
        "--final-subset", "300",
        "--final-epochs", "1",
        "--top-k", "1",
    ]  # fmt: skip
    sweep = start_sweep(out, *flags)
    experiment = out / "ray" / "search-cnn"

    def finished_and_running() -> tuple[set[str], Path] | None:
        """A snapshot with a finished trial, fewer than num_samples trials, and a running one's checkpoint after epoch 2 or later.

        Tune writes a snapshot at most every 10 s, and also after a trial's
        num_to_keep (2) checkpoints. A kill before the snapshot contains the
        running trial's latest checkpoint would send it back more than one epoch.
        """
        statuses, modified = snapshot_statuses(experiment)
        finished = {trial_id for trial_id, status in statuses.items() if status == "TERMINATED"}
        if not finished or len(statuses) >= num_samples:
            return None
        for trial_id, status in statuses.items():
            trial_dir = experiment / f"CNNTrainable_{trial_id}"
            checkpoints = sorted(trial_dir.glob("checkpoint_*"))
            rows = read_results(trial_dir)
            if (
                status == "RUNNING"
                and checkpoints
                and checkpoints[-1].name >= "checkpoint_000001"
                and modified > checkpoints[-1].stat().st_mtime
                and rows
                and not rows[-1]["done"]
            ):
                return finished, trial_dir
        return None

    finished, running = wait_until(finished_and_running, SWEEP_TIMEOUT_S, "a finished and a running trial", sweep)
    group = sweep.process.pid
    os.killpg(group, signal.SIGKILL)
    sweep.process.wait()
    before = {trial_dir.name: read_results(trial_dir) for trial_dir in experiment.glob("CNNTrainable_*")}

    # What Ray leaves behind: its daemons in the killed group die with it, but
    # workers run in sessions of their own and may outlive the driver.
    time.sleep(2)
    leftovers = processes_using(ray_temp_dir)
    print(f"after killing process group {group}: {len(leftovers)} leftover process(es): {list(leftovers.values())}")
    for pid in leftovers:
        assert os.getpgid(pid) != group, f"pid {pid} of the killed process group survived"
        os.kill(pid, signal.SIGKILL)

    resumed = start_sweep(out, *flags, "--resume")
    code = resumed.wait(SWEEP_TIMEOUT_S)
    assert code == 0, resumed.tail()
    output = resumed.output()
    assert "resuming stage search-cnn" in output
    assert "--host 127.0.0.1" in output, "the printed TensorBoard command should bind to the loopback address"

    # The searcher's state came back: it created the missing trials and stopped at num_samples.
    trials = pd.read_parquet(out / "trials.parquet")
    search = trials[trials["stage"] == "search-cnn"]
    created_before = {name.split("_")[-1] for name in before}
    assert created_before <= set(search["trial_id"])
    assert len(search) == num_samples, search[["trial_id", "status"]]
    assert len(created_before) < num_samples
    assert search["trial_id"].is_unique

    # Trials finished before the kill kept their results and did not run again.
    for trial_id in finished:
        name = f"CNNTrainable_{trial_id}"
        assert read_results(experiment / name) == before[name], f"finished trial {trial_id} ran again"

    # The running trial continued from its last checkpoint: at most one epoch ran twice.
    rows = read_results(running)
    killed_pid = before[running.name][-1]["pid"]
    after = [row for row in rows if row["pid"] != killed_pid]
    print(f"running trial {running.name}: epochs before the kill {[r['epoch'] for r in before[running.name]]}, after {[r['epoch'] for r in after]}")
    assert rows[: len(before[running.name])] == before[running.name]
    assert after[0]["iterations_since_restore"] == 1
    assert after[0]["epoch"] >= 2, "the running trial restarted from scratch"
    assert after[0]["epoch"] >= before[running.name][-1]["epoch"], "more than one epoch ran twice"
    assert after[-1]["epoch"] == epochs

    # The final outputs are complete.
    for name in ("trials.parquet", "history.parquet", "summary.csv", "summary.md", "stages.json"):
        assert (out / name).is_file(), f"{name} is missing"
    assert set(io.read_json(out / "stages.json")) == {"search-cnn", "final"}
    final = trials[trials["stage"] == "final"]
    assert len(final) == 1
    assert final["status"].tolist() == ["TERMINATED"]
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 1
    models = sorted((out / "models").glob("*.pt"))
    assert len(models) == 1
    model, metadata = load_model(models[0])
    assert metadata["class_names"] == CLASSES
    assert not list(out.rglob("*.tmp")), "a temporary file of an atomic write remained"


# Divergence and trial errors.

# The sweep driver as a script, with one fixed configuration whose setup fails
# (no conv layer can have 0 filters), and a dump of ASHA's rungs once it returns.
PROBE_SCRIPT = '''\
import json
import sys
from pathlib import Path

from cifar_ray.tune import sweep

rungs_file, invalid_config, *argv = sys.argv[1:]
schedulers = []
build_scheduler = sweep.build_scheduler


def build_and_keep(kind, profile):
    scheduler = build_scheduler(kind, profile)
    schedulers.append(scheduler)
    return scheduler


sweep.build_scheduler = build_and_keep
spec = sweep.SweepSpec(
    name="reliability_probe",
    description="cnn search plus one invalid fixed configuration",
    searches=["cnn"],
    fixed_configs=lambda profile, args: [json.loads(invalid_config)],
)
code = sweep.run(spec, argv)
rungs = [
    {"milestone": milestone, "recorded": recorded, "cutoff": bracket.cutoff(recorded)}
    for scheduler in schedulers
    for bracket in getattr(scheduler, "_brackets", [])
    for milestone, recorded in bracket._rungs
]
Path(rungs_file).write_text(json.dumps(rungs))
sys.exit(code)
'''
INVALID_CONFIG = {"model": "cnn2", "filters_1": 0, "filters_2": 16, "dense_units": 32, "lr": 1e-3}


@dataclass
class ProbeSweep:
    out: Path
    code: int
    output: str
    rungs: list[dict[str, Any]]
    trials: pd.DataFrame
    history: pd.DataFrame


@pytest.fixture(scope="module")
def diverging_sweep(sweep_data, tmp_path_factory) -> ProbeSweep:
    """An ASHA search of 8 CNNs with SGD at learning rates up to 10, then the winner and an invalid configuration retrained.

    With seed 0, hyperopt's random start draws lr 2.7 and 2.9 among the
    trials. At batch size 16, the loss of the second one turns non-finite in
    its first epoch.
    """
    tree, cache = sweep_data
    root = tmp_path_factory.mktemp("diverging")
    probe = root / "probe.py"
    probe.write_text(PROBE_SCRIPT)
    rungs_file = root / "rungs.json"
    out = root / "out"
    ray_temp_dir = tempfile.mkdtemp(prefix="cr-", dir="/tmp")
    command = [
        sys.executable, str(probe), str(rungs_file), json.dumps(INVALID_CONFIG),
        "--data", str(tree),
        "--cache-dir", str(cache),
        "--profile", "smoke",
        "--no-analysis",
        "--out", str(out),
        "--optimizer", "sgd",
        "--lr-range", "1e-3", "10",
        "--num-samples", "8",
        "--max-epochs", "2",
        "--grace-period", "1",
        "--reduction-factor", "2",
        "--batch-size", "16",
        "--search-subset", "600",
        "--final-subset", "300",
        "--final-epochs", "1",
        "--top-k", "1",
        "--max-failures", "1",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command,
            cwd=REPO,
            env=sweep_environment(ray_temp_dir),
            capture_output=True,
            text=True,
            timeout=SWEEP_TIMEOUT_S,
            start_new_session=True,
        )
    finally:
        for pid in processes_using(ray_temp_dir):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_temp_dir, ignore_errors=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return ProbeSweep(
        out=out,
        code=result.returncode,
        output=output,
        rungs=json.loads(rungs_file.read_text()),
        trials=pd.read_parquet(out / "trials.parquet"),
        history=pd.read_parquet(out / "history.parquet"),
    )


@pytest.mark.slow
def test_diverged_trials_recorded_finite(diverging_sweep):
    trials = diverging_sweep.trials
    search = trials[trials["stage"] == "search-cnn"]
    diverged = search[search["status"] == "DIVERGED"]
    assert len(diverged) >= 1, f"no trial diverged; learning rates: {search['config/lr'].round(4).tolist()}"
    assert diverged["diverged"].all()
    assert (diverged["stop_reason"] == "diverged").all()
    assert (diverged["last_val_loss"] == DIVERGED_LOSS).all()
    assert (diverged["last_val_accuracy"] == 0).all()
    assert (diverged["error"] == "").all(), "a diverged trial was recorded as an error"

    history = diverging_sweep.history
    for column in ("train_loss", "val_loss", "val_accuracy"):
        assert np.isfinite(history[column].astype(float)).all(), f"a reported {column} is not finite"


@pytest.mark.slow
def test_asha_cutoffs_finite_with_diverged(diverging_sweep):
    trials = diverging_sweep.trials
    search = trials[trials["stage"] == "search-cnn"]
    diverged_ids = set(search.loc[search["status"] == "DIVERGED", "trial_id"])
    recorded = {}
    for rung in diverging_sweep.rungs:
        recorded.update(rung["recorded"])
        assert all(math.isfinite(value) for value in rung["recorded"].values()), rung
        assert rung["cutoff"] is None or math.isfinite(rung["cutoff"]), rung
    assert recorded, "ASHA recorded no result; the probe did not see the sweep's scheduler"
    for trial_id in diverged_ids:
        assert recorded.get(trial_id) == 0.0, f"diverged trial {trial_id} was not ranked with val_accuracy 0"
    # ASHA still let the better trials run to max_t.
    assert (search["status"] == "TERMINATED").any(), search[["trial_id", "status", "epochs"]]


@pytest.mark.slow
def test_diverged_never_chosen(diverging_sweep):
    trials = diverging_sweep.trials
    search = trials[trials["stage"] == "search-cnn"]
    diverged_ids = set(search.loc[search["diverged"], "trial_id"])
    final = trials[trials["stage"] == "final"]
    winners = final[final["config/search_trial_id"].notna()]
    assert len(winners) == 1
    assert not set(winners["config/search_trial_id"]) & diverged_ids


@pytest.mark.slow
def test_setup_error_recorded_others_finish(diverging_sweep):
    final = diverging_sweep.trials[diverging_sweep.trials["stage"] == "final"]
    # A trial that fails before its first result reports no config to Tune, and
    # its folder contains no params.json, so only the error message identifies it.
    failed = final[final["status"] == "ERROR"]
    assert len(failed) == 1, final[["trial_id", "status", "error"]]
    assert failed["stop_reason"].item() == "error"
    assert "filters must be positive integers, got [0, 16]" in failed["error"].item()
    # --max-failures 1: Tune tried the trial twice before recording the error.
    error_log = (Path(failed["path"].item()) / "error.txt").read_text()
    assert "Failure # 2" in error_log
    assert "Failure # 3" not in error_log

    others = final[final["status"] != "ERROR"]
    assert len(others) == 1
    assert (others["status"] == "TERMINATED").all()
    assert others["test_accuracy"].notna().all()
    assert diverging_sweep.code == 0


# Data safety.

# Writes a new parquet file over TARGET through io.atomic_write, but stops
# halfway through the temporary file and waits to be killed.
HALF_WRITE_SCRIPT = '''\
import sys
import time

import pandas as pd

from cifar_ray import io

target, payload_file = sys.argv[1:]
payload = open(payload_file, "rb").read()


def write_half_then_hang(temporary):
    with open(temporary, "wb") as handle:
        handle.write(payload[: len(payload) // 2])
        handle.flush()
    print("halfway", flush=True)
    time.sleep(600)


io.atomic_write(target, write_half_then_hang)
'''


def test_killed_parquet_write_keeps_previous(tmp_path):
    target = tmp_path / "trials.parquet"
    previous = pd.DataFrame({"trial_id": ["a", "b"], "val_accuracy": [0.5, 0.6]})
    io.write_parquet(target, previous)
    replacement = pd.DataFrame({"trial_id": [f"t{i}" for i in range(200_000)], "val_accuracy": np.linspace(0, 1, 200_000)})
    payload = tmp_path / "replacement.parquet"
    replacement.to_parquet(payload, index=False)
    script = tmp_path / "half_write.py"
    script.write_text(HALF_WRITE_SCRIPT)

    writer = subprocess.Popen([sys.executable, str(script), str(target), str(payload)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "halfway"
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()

    pd.testing.assert_frame_equal(pd.read_parquet(target), previous)
    # SIGKILL leaves the hidden temporary file behind, never a damaged target.
    leftovers = list(tmp_path.glob(".trials.parquet.*.tmp"))
    assert len(leftovers) == 1


def test_result_writers_leave_no_temporary(tmp_path):
    frame = pd.DataFrame({"model": ["cnn2"], "test_accuracy": [0.7]})
    written = [
        io.write_parquet(tmp_path / "trials.parquet", frame),
        io.write_csv(tmp_path / "summary.csv", frame),
        io.write_json(tmp_path / "stages.json", {"final": {"trials": 1}}),
        io.write_text(tmp_path / "summary.md", "# summary\n"),
    ]
    # Twice, so that the second round replaces existing files.
    written += [
        io.write_parquet(tmp_path / "trials.parquet", frame),
        io.write_csv(tmp_path / "summary.csv", frame),
    ]

    assert sorted(path.name for path in tmp_path.iterdir()) == ["stages.json", "summary.csv", "summary.md", "trials.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(written[0]), frame)
    assert pd.read_csv(written[1]).equals(frame)
    umask = os.umask(0)
    os.umask(umask)
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, f"{path.name} has mode {oct(path.stat().st_mode)}"


def test_checkpoint_loads_weights_only(tmp_path, make_split_tree):
    tree = make_split_tree(tmp_path / "tree", CLASSES[:3], train_per_class=20, test_per_class=4)
    data = prepare_data(DataConfig(data=str(tree), cache_dir=str(tmp_path / "cache"), download=False))
    config = {"model": "cnn2", "filters_1": 8, "filters_2": 16, "dense_units": 32, "epochs": 3, "batch_size": 16, "seed": 0}
    trainer = Trainer(train_config_from_trial(config), data)
    trainer.train_epoch()
    path = tmp_path / STATE_FILE
    torch.save(trainer.state_dict(), path)

    state = torch.load(path, map_location="cpu", weights_only=True)

    restored = Trainer(train_config_from_trial(config), data)
    restored.load_state_dict(state)
    assert restored.epoch == 1
    assert restored.scheduler.last_epoch == trainer.scheduler.last_epoch
    assert restored.optimizer.param_groups[0]["lr"] == trainer.optimizer.param_groups[0]["lr"]
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[name], tensor), name


# Loaders that can run code stored in the file they read.
UNSAFE_CALLS = {"pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads", "yaml.load", "yaml.unsafe_load", "pd.read_pickle"}


def call_name(node: ast.Call) -> str:
    """The dotted name of a call such as `torch.load(...)`, or "" for other callees."""
    parts = []
    target = node.func
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if isinstance(target, ast.Name):
        parts.append(target.id)
        return ".".join(reversed(parts))
    return ""


def is_true(node: ast.Call, keyword: str) -> bool:
    return any(k.arg == keyword and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords)


def test_package_reads_files_with_safe_loaders():
    sources = sorted((REPO / "cifar_ray").rglob("*.py"))
    assert sources
    problems = []
    loads = 0
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = call_name(node)
            where = f"{path.relative_to(REPO)}:{node.lineno} {name}"
            if name in UNSAFE_CALLS:
                problems.append(where)
            elif name == "torch.load":
                loads += 1
                if not is_true(node, "weights_only"):
                    problems.append(where + " without weights_only=True")
            elif name in ("np.load", "numpy.load") and is_true(node, "allow_pickle"):
                problems.append(where + " with allow_pickle=True")
    assert not problems, "unsafe loaders: " + "; ".join(problems)
    assert loads >= 2, "expected the checkpoint and model loaders among the torch.load calls"
