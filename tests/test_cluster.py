"""Cluster support: the launcher configs against Ray's own schema, and sweeps on a real two-node Ray cluster.

The two-node cluster runs on this machine (two raylets with one CPU each,
listening on 127.0.0.1 only, see tests/_ray_cluster.py). The sweep runs as a
subprocess that joins it with --address, as it would join a cloud cluster.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
import ray
import torch
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from _ray_cluster import LocalCluster
from cifar_ray.checkpoint import load_model
from cifar_ray.data import DATA_ENV
from cifar_ray.tune.results import HISTORY_COLUMNS

REPO = Path(__file__).resolve().parent.parent
LAUNCHER_CONFIGS = ["cluster.yaml", "cluster-gcp.yaml"]
SWEEP = REPO / "sweeps" / "cnn_search.py"

# Columns that cifar_ray/tune/results.py writes to OUT/trials.parquet (plus
# the sweep's model_file) and to OUT/summary.csv, local run or cluster.
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
    "last_val_accuracy",
    "best_val_accuracy",
    "test_accuracy",
    "test_rmse",
    "seed",
    "path",
    "model_file",
]
SUMMARY_COLUMNS = ["model", "architecture", "params", "train_time_s", "epochs", "test_accuracy", "test_rmse", "seeds"]

SMOKE_ARGS = [
    "--profile", "smoke",
    "--num-samples", "2",
    "--max-epochs", "1",
    "--grace-period", "1",
    "--final-epochs", "1",
    "--search-subset", "300",
    "--final-subset", "300",
    "--top-k", "1",
    "--no-analysis",
]  # fmt: skip

# On 2 shared CPU cores, the smoke sweep on the two-node cluster took about
# 35 s with a decoded-image cache and 40 to 80 s without one, and the rejected
# GPU request 10 to 15 s. The limits leave room for a busier machine.
SWEEP_TIMEOUT_S = 240
FAIL_FAST_LIMIT_S = 60


def load_config(name: str) -> dict[str, Any]:
    with open(REPO / name) as file:
        return yaml.safe_load(file)


def prepared(config: dict[str, Any]) -> dict[str, Any]:
    """The config as `ray up` validates it: merged with the provider's defaults, setup commands combined."""
    return prepare_config(copy.deepcopy(config))


def ray_example_config(provider: str) -> dict[str, Any]:
    path = Path(ray.__file__).parent / "autoscaler" / provider / "defaults.yaml"
    with open(path) as file:
        return yaml.safe_load(file)


# ---------------------------------------------------------------------------
# Launcher configs, checked offline with Ray's own validator (ray-schema.json
# plus the head-type and worker-count checks that `ray up` runs). Nothing here
# contacts a cloud, because `ray up` calls the provider only after these
# checks, in a bootstrap step that the tests leave out.


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_valid(name: str):
    validate_config(prepared(load_config(name)))


@pytest.mark.parametrize("provider", ["aws", "gcp"])
def test_ray_example_config_valid(provider: str):
    # Ray's own example config passing shows that the validator accepts a known-good file.
    validate_config(prepared(ray_example_config(provider)))


def test_validator_rejects_broken_config():
    misspelled = load_config("cluster.yaml")
    misspelled["available_node_types"]["worker_gpu"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepared(misspelled))

    fractional = load_config("cluster.yaml")
    fractional["available_node_types"]["worker_gpu"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError, match="0.5"):
        validate_config(prepared(fractional))

    unknown_head = load_config("cluster.yaml")
    unknown_head["head_node_type"] = "head_gpu"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepared(unknown_head))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_layout(name: str):
    config = prepared(load_config(name))
    node_types = config["available_node_types"]
    head = node_types[config["head_node_type"]]
    workers = {key: value for key, value in node_types.items() if key != config["head_node_type"]}

    assert head["resources"].get("GPU", 0) == 0, f"{name}: the head node should have no GPU"
    assert list(workers) == ["worker_gpu"], f"{name}: expected one worker type, got {sorted(workers)}"
    gpu_worker = workers["worker_gpu"]
    assert gpu_worker["min_workers"] == 0, f"{name}: GPU workers should start only on demand"
    assert gpu_worker["max_workers"] >= 1, f"{name}: the GPU worker type can never start"
    assert gpu_worker["resources"].get("GPU", 0) >= 1, f"{name}: the worker type declares no GPU"

    # Every node installs the project from the copied working tree.
    assert config["file_mounts"] == {"~/cifar-ray": "."}, f"{name}: file_mounts {config['file_mounts']}"
    for role in ("head_setup_commands", "worker_setup_commands"):
        commands = " ".join(config[role])
        assert "~/cifar-ray" in commands, f"{name}: {role} does not install the project"
        assert f"ray[default]=={ray.__version__}" in commands, (
            f"{name}: {role} should pin the local Ray version {ray.__version__}, because `ray up` "
            "and the cluster must run the same one"
        )
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start, f"{name}: the dashboard should listen on loopback only"


def test_aws_workers_are_spot_with_bucket_access():
    worker = load_config("cluster.yaml")["available_node_types"]["worker_gpu"]["node_config"]
    assert worker["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "IamInstanceProfile" in worker, "workers write checkpoints to S3 and need an instance profile"


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_has_no_credentials(name: str):
    text = (REPO / name).read_text().lower()
    for marker in ("aws_access_key_id", "aws_secret_access_key", "secret", "password", "private_key_id", "akia"):
        assert marker not in text, f"{name} contains {marker!r}; credentials belong in the local credential chain"


# ---------------------------------------------------------------------------
# Sweeps on a real two-node cluster.


@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[LocalCluster]:
    # A short path, because Ray's Unix socket paths under it are limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    cluster = LocalCluster(root, nodes=2, cpus_per_node=1)
    try:
        cluster.start()
        print(f"\ntwo-node Ray cluster at {cluster.address} started in {cluster.start_time_s:.1f} s")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def run_sweep(cluster: LocalCluster, args: list[str], env: dict[str, str], timeout_s: float) -> tuple[subprocess.CompletedProcess, float]:
    """Run sweeps/cnn_search.py against the cluster; return the finished process and its wall time in seconds."""
    started = time.perf_counter()
    try:
        result = subprocess.run(
            [sys.executable, str(SWEEP), "--address", cluster.address, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as error:
        # The partial output comes back as bytes even in text mode.
        output = error.stdout or b""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        pytest.fail(
            f"the sweep did not finish within {timeout_s:.0f} s; last output:\n{output[-3000:]}\n"
            f"cluster log:\n{cluster.log_tail()}"
        )
    return result, time.perf_counter() - started


def trial_node_ids(storage: Path) -> dict[str, set[str]]:
    """Node ids reported by each trial, read from the result.json files Tune wrote to the shared storage."""
    node_ids = {}
    for results in sorted(storage.glob("*/*/result.json")):
        trial = f"{results.parent.parent.name}/{results.parent.name}"
        node_ids[trial] = {json.loads(line)["node_id"] for line in results.read_text().splitlines() if line.strip()}
    return node_ids


def test_cluster_listens_on_loopback_only(two_node_cluster: LocalCluster):
    addresses = two_node_cluster.listening_addresses()
    assert addresses, "found no listening socket of the cluster's processes"
    assert addresses == {"127.0.0.1"}, f"the cluster listens on {sorted(addresses)}; it must use 127.0.0.1 only"


@pytest.mark.slow
def test_sweep_on_two_nodes(two_node_cluster: LocalCluster, real_data_dir: Path, tmp_path: Path):
    storage = tmp_path / "ray"
    out = tmp_path / "out"
    env = {**two_node_cluster.environment(), DATA_ENV: str(real_data_dir)}
    result, wall_s = run_sweep(
        two_node_cluster, [*SMOKE_ARGS, "--storage", str(storage), "--out", str(out)], env, SWEEP_TIMEOUT_S
    )
    print(f"\nsmoke sweep on 2 nodes: {wall_s:.1f} s (data decoded into an empty cache)")
    assert result.returncode == 0, (
        f"sweep exited with {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    assert "2 node(s), 2 CPUs" in result.stdout, f"the sweep did not see both nodes:\n{result.stdout[-2000:]}"

    # Placement: the two search trials run at once (1 CPU each, 1 CPU per
    # node), so they must have used both raylets. All nodes share one IP
    # address here, so only the trials' node_id distinguishes them.
    node_ids = trial_node_ids(storage)
    assert len(node_ids) == 3, f"expected 2 search trials and 1 final trial in {storage}, found {sorted(node_ids)}"
    used = set().union(*node_ids.values())
    assert used <= set(two_node_cluster.node_ids), f"trials ran on unknown nodes {used - set(two_node_cluster.node_ids)}"
    assert len(used) == 2, f"all trials ran on one node: {node_ids}"

    # The outputs have the form of a local run (see test_sweeps.py).
    for name in ("sweep.json", "stages.json", "trials.parquet", "history.parquet", "summary.csv", "summary.md"):
        assert (out / name).is_file(), f"missing {name}"
    assert set(json.loads((out / "stages.json").read_text())) == {"search-cnn", "final"}

    trials = pd.read_parquet(out / "trials.parquet")
    missing = [column for column in TRIAL_COLUMNS if column not in trials.columns]
    assert not missing, f"trials.parquet lacks {missing}"
    assert sorted(trials["stage"]) == ["final", "search-cnn", "search-cnn"]
    assert (trials["status"] != "ERROR").all(), f"failed trials:\n{trials[['trial_id', 'error']]}"
    assert trials["path"].str.startswith(str(storage)).all(), f"trial paths outside --storage: {list(trials['path'])}"
    assert trials["config/filters_1"].notna().all(), "flattened config columns are missing"
    for path in trials["path"]:
        assert list(Path(path).glob("events.out.tfevents.*")), f"no TensorBoard event file in {path}"

    history = pd.read_parquet(out / "history.parquet")
    assert list(history.columns) == ["stage", "trial_id", "model", *HISTORY_COLUMNS]
    assert len(history) == 3, f"expected one epoch per trial, got {len(history)} rows"

    summary = pd.read_csv(out / "summary.csv")
    missing = [column for column in SUMMARY_COLUMNS if column not in summary.columns]
    assert not missing, f"summary.csv lacks {missing}"
    assert len(summary) == 1
    assert 0 <= summary.loc[0, "test_accuracy"] <= 1

    final = trials[trials["stage"] == "final"].iloc[0]
    model_path = out / final["model_file"]
    assert model_path.is_file(), f"{model_path} was not exported"
    assert model_path.with_suffix(".metrics.json").is_file()
    model, metadata = load_model(model_path)
    assert metadata["model_name"] == final["model"]
    assert len(metadata["class_names"]) == 10
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_gpu_request_fails_fast(
    two_node_cluster: LocalCluster, make_split_tree: Callable[..., Path], tmp_path: Path
):
    # A small tree keeps data preparation out of the timing: the check runs
    # once the data is ready, so with the whole data set it would include the decoding.
    data = make_split_tree(tmp_path / "data", ["airplane", "cat", "ship"], train_per_class=20, test_per_class=3)
    env = two_node_cluster.environment()
    result, wall_s = run_sweep(
        two_node_cluster,
        [*SMOKE_ARGS, "--data", str(data), "--gpus-per-trial", "1", "--out", str(tmp_path / "out")],
        env,
        FAIL_FAST_LIMIT_S * 2,
    )
    print(f"\nimpossible GPU request rejected after {wall_s:.1f} s, Python start and Ray connect included")
    assert result.returncode == 2, f"exit code {result.returncode}\nstderr:\n{result.stderr[-3000:]}"
    assert wall_s < FAIL_FAST_LIMIT_S, f"the rejection took {wall_s:.1f} s"
    message = result.stderr
    assert "--gpus-per-trial 1" in message, message
    assert "2 node(s)" in message, message
    assert "has 0 GPUs" in message, message
    assert not (tmp_path / "out" / "ray").exists(), "a Tune experiment started despite the impossible request"
