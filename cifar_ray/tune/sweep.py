"""The sweep driver shared by every script in `sweeps/`.

A sweep has up to two kinds of stage, each one Ray Tune experiment under
`OUT/ray/`. A search per architecture family runs hyperopt behind a
concurrency limit, with ASHA, HyperBand or FIFO. Then one final stage retrains
the chosen configurations from scratch on the whole training split and tests
each once. Finished stages are recorded in `OUT/stages.json`, so `--resume` skips
them and restores an interrupted one with `Tuner.restore`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from cifar_ray import io
from cifar_ray.config import DataConfig
from cifar_ray.tune.profiles import PROFILES, SweepProfile, get_profile

logger = logging.getLogger(__name__)

METRIC = "val_accuracy"
MODE = "max"
SCHEDULERS = ("asha", "hyperband", "fifo")
# Keys every trial reports each epoch (see Trainer.train_epoch and ArchitectureTrainable.step),
# so any of them can drive the search and the scheduler.
REPORTED_METRICS = {
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "best_val_accuracy",
    "lr",
    "epoch_time_s",
    "train_images_per_s",
    "train_time_s",
}


@dataclass
class SweepSpec:
    """The stages and winner selection of one sweep script."""

    name: str  # script name, used for the default output folder
    description: str
    searches: list[str] = field(default_factory=list)  # families searched, in order ("fcnn", "cnn")
    fixed_configs: Callable[[SweepProfile, argparse.Namespace], list[dict[str, Any]]] | None = None  # added to the final stage
    per_model: bool = False  # pick top_k winners per registered model instead of overall
    default_top_k: int | None = None  # replaces the profile's top_k unless --top-k is given


class SweepError(Exception):
    """A setting or state that stops the sweep before it wastes compute. The message names the fix."""


def get_args_parser(spec: SweepSpec) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python sweeps/{spec.name}.py", description=spec.description)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        help="CIFAR-10 folder or .tar.gz, or a class-folder tree (with or without train/ and test/); "
        "default: $CIFAR_RAY_DATA, then the cache folder",
    )
    data.add_argument("--image-size", type=int, default=32, help="pixels per side images are resized to (default 32)")
    data.add_argument("--test-fraction", type=float, default=0.2, help="test share carved from a tree without test/")
    data.add_argument("--drop-empty-classes", action="store_true", help="drop class folders without a valid image")
    data.add_argument("--cache-dir", help="decoded-image cache (default: $CIFAR_RAY_CACHE or ~/.cache/cifar_ray)")

    run = parser.add_argument_group("run")
    run.add_argument("--out", help=f"output folder (default results/{spec.name}-TIMESTAMP)")
    run.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="budget: smoke (minutes, CI), cpu (15 min on 2 cores), paper (the study's widths, GPUs); "
        "default: paper when a GPU is visible, else cpu",
    )
    run.add_argument("--scheduler", choices=SCHEDULERS, default="asha", help="early stopping of search trials (default asha)")
    run.add_argument(
        "--metric",
        default=METRIC,
        help=f"result key that search and scheduler optimise (default {METRIC}); winners are always ranked "
        "by their best val_accuracy",
    )
    run.add_argument("--mode", choices=["max", "min"], default=MODE, help=f"maximise or minimise --metric (default {MODE})")
    run.add_argument("--seed", type=int, default=0, help="seeds the data split, hyperopt and the trials (default 0)")
    run.add_argument("--resume", action="store_true", help="continue the interrupted sweep in --out")
    run.add_argument("--no-analysis", action="store_true", help="skip the plots and REPORT.md at the end")

    budget = parser.add_argument_group("budget (each overrides the profile)")
    budget.add_argument("--num-samples", type=int, help="trials per searched family")
    budget.add_argument("--max-epochs", type=int, help="max_t: epochs a search trial may reach")
    budget.add_argument("--grace-period", type=int, help="epochs before a trial may be stopped")
    budget.add_argument("--reduction-factor", type=int, help="ASHA/HyperBand reduction factor")
    budget.add_argument("--search-subset", type=int, help="training images per search trial (stratified)")
    budget.add_argument("--batch-size", type=int, help="images per optimiser step")
    budget.add_argument("--width-scale", type=float, help="multiplies the searched widths (1.0: the study's)")
    budget.add_argument("--final-epochs", type=int, help="maximum epochs of a final retrain")
    budget.add_argument("--final-subset", type=int, help="training images of a final retrain (default: all)")
    budget.add_argument("--top-k", type=int, help="configurations retrained at the end")
    budget.add_argument("--seeds", type=int, help="final retrains per configuration")

    search = parser.add_argument_group("search space")
    search.add_argument("--optimizer", choices=["nadam", "sgd"], help="optimiser of every trial (default nadam)")
    search.add_argument(
        "--lr-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="searched learning-rate range, log-uniform (default 3e-4 3e-3 for nadam, 1e-3 1e-1 for sgd)",
    )
    search.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="random crop and flip in every trial (default: on for the cpu profile, off otherwise, as in the study)",
    )

    cluster = parser.add_argument_group("resources and cluster")
    cluster.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    cluster.add_argument(
        "--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (default: 1 when a GPU is visible, else 0)"
    )
    cluster.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as the resources allow)")
    cluster.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial from its last checkpoint")
    cluster.add_argument("--checkpoint-every", type=int, default=1, help="epochs between trial checkpoints (default 1)")
    cluster.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else start a local one)")
    cluster.add_argument("--storage", help="where Ray stores experiments: a shared folder or a cloud URI (default OUT/ray)")
    cluster.add_argument(
        "--autoscaler-config",
        help="cluster launcher config of an autoscaling cluster (on a `ray up` head node: "
        "~/ray_bootstrap_config.yaml); resources are then checked against the node types the "
        "autoscaler may start, not only against the running nodes",
    )
    return parser


def _gpu_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_profile(args: argparse.Namespace, spec: SweepSpec) -> SweepProfile:
    name = args.profile or ("paper" if _gpu_visible() else "cpu")
    if args.top_k is None and spec.default_top_k is not None:
        args.top_k = spec.default_top_k
    profile = get_profile(
        name,
        num_samples=args.num_samples,
        max_epochs=args.max_epochs,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        search_subset=args.search_subset,
        batch_size=args.batch_size,
        width_scale=args.width_scale,
        final_epochs=args.final_epochs,
        final_subset=args.final_subset,
        top_k=args.top_k,
        seeds=args.seeds,
        augment=args.augment,
    )
    validate_settings(profile, args)
    return profile


def validate_settings(profile: SweepProfile, args: argparse.Namespace) -> None:
    """Reject impossible settings before anything starts, naming the value and the fix."""
    checks = [
        (profile.num_samples >= 1, f"--num-samples must be at least 1, got {profile.num_samples}"),
        (profile.max_epochs >= 1, f"--max-epochs must be at least 1, got {profile.max_epochs}"),
        (profile.grace_period >= 1, f"--grace-period must be at least 1, got {profile.grace_period}"),
        (
            profile.grace_period <= profile.max_epochs,
            f"--grace-period {profile.grace_period} is above --max-epochs {profile.max_epochs}; "
            "no trial could ever be stopped early. Lower --grace-period or raise --max-epochs",
        ),
        (profile.reduction_factor >= 2, f"--reduction-factor must be at least 2, got {profile.reduction_factor}"),
        (profile.top_k >= 1, f"--top-k must be at least 1, got {profile.top_k}"),
        (profile.seeds >= 1, f"--seeds must be at least 1, got {profile.seeds}"),
        (profile.final_epochs >= 1, f"--final-epochs must be at least 1, got {profile.final_epochs}"),
        (profile.batch_size >= 2, f"--batch-size must be at least 2, got {profile.batch_size}"),
        (profile.width_scale > 0, f"--width-scale must be positive, got {profile.width_scale}"),
        (args.cpus_per_trial > 0, f"--cpus-per-trial must be positive, got {args.cpus_per_trial}"),
        (args.gpus_per_trial is None or args.gpus_per_trial >= 0, f"--gpus-per-trial must be 0 or more, got {args.gpus_per_trial}"),
        (args.max_concurrent is None or args.max_concurrent >= 1, f"--max-concurrent must be at least 1, got {args.max_concurrent}"),
        (args.max_failures >= 0, f"--max-failures must be 0 or more, got {args.max_failures}"),
        (args.checkpoint_every >= 1, f"--checkpoint-every must be at least 1 epoch, got {args.checkpoint_every}"),
        (
            args.metric in REPORTED_METRICS,
            f"--metric {args.metric!r} is not reported by any trial; valid: {', '.join(sorted(REPORTED_METRICS))}",
        ),
        (
            args.lr_range is None or 0 < args.lr_range[0] < args.lr_range[1],
            f"--lr-range needs 0 < LOW < HIGH, got {args.lr_range}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise SweepError(message)


def prepare_output(out: Path, resume: bool) -> None:
    if resume:
        if not (out / "sweep.json").is_file():
            raise SweepError(f"--resume was given but no sweep was found in {out} (sweep.json is missing); check --out")
        return
    if out.exists() and any(out.iterdir()):
        raise SweepError(
            f"output folder {out} already exists and is not empty; pass --resume to continue that sweep, "
            "or --out NEW_FOLDER to start another"
        )
    out.mkdir(parents=True, exist_ok=True)


def start_ray(address: str | None) -> None:
    import ray

    # Ray's usage statistics would otherwise be sent to an external host.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)


def cluster_capacity() -> dict[str, float]:
    """Total and largest-node CPUs and GPUs of the running Ray cluster."""
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    cpus = [node["Resources"].get("CPU", 0.0) for node in nodes]
    gpus = [node["Resources"].get("GPU", 0.0) for node in nodes]
    return {
        "nodes": len(nodes),
        "total_cpus": sum(cpus),
        "total_gpus": sum(gpus),
        "max_node_cpus": max(cpus, default=0.0),
        "max_node_gpus": max(gpus, default=0.0),
    }


def autoscaler_capacity(path: str) -> dict[str, float]:
    """Return the largest node and the total CPUs and GPUs that a cluster launcher config lets the autoscaler reach.

    Counts the head once and every worker type at its max_workers. A node type
    without a `resources` entry counts as 0 CPUs and 0 GPUs.
    """
    import yaml

    config_path = Path(path).expanduser()
    if not config_path.is_file():
        raise SweepError(
            f"--autoscaler-config {config_path} does not exist; on the head node of a `ray up` cluster "
            "it is ~/ray_bootstrap_config.yaml"
        )
    with open(config_path) as file:
        config = yaml.safe_load(file) or {}
    node_types = config.get("available_node_types") or {}
    if not node_types:
        raise SweepError(f"--autoscaler-config {config_path} has no available_node_types; pass a cluster launcher config")

    capacity = {"nodes": 0, "total_cpus": 0.0, "total_gpus": 0.0, "max_node_cpus": 0.0, "max_node_gpus": 0.0}
    for name, node_type in node_types.items():
        if name == config.get("head_node_type"):
            count = 1
        else:
            count = int(node_type.get("max_workers", config.get("max_workers", 0)))
        if count <= 0:
            continue
        resources = node_type.get("resources") or {}
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        capacity["nodes"] += count
        capacity["total_cpus"] += count * cpus
        capacity["total_gpus"] += count * gpus
        capacity["max_node_cpus"] = max(capacity["max_node_cpus"], cpus)
        capacity["max_node_gpus"] = max(capacity["max_node_gpus"], gpus)
    return capacity


def reachable_capacity(running: dict[str, float], autoscaler: dict[str, float]) -> dict[str, float]:
    """Return the larger of what runs now and what the autoscaler may start, field by field."""
    return {key: max(running[key], autoscaler[key]) for key in running}


def check_resources(cpus_per_trial: float, gpus_per_trial: float, capacity: dict[str, float]) -> None:
    """Fail at once when no node could ever run one trial, instead of leaving trials pending forever."""
    if cpus_per_trial > capacity["max_node_cpus"]:
        raise SweepError(
            f"--cpus-per-trial {cpus_per_trial:g} is more than any node has: the largest of "
            f"{capacity['nodes']} node(s) has {capacity['max_node_cpus']:g} CPUs. Lower --cpus-per-trial"
        )
    if gpus_per_trial > capacity["max_node_gpus"]:
        raise SweepError(
            f"--gpus-per-trial {gpus_per_trial:g} is more than any node has: the largest of "
            f"{capacity['nodes']} node(s) has {capacity['max_node_gpus']:g} GPUs. Pass --gpus-per-trial 0 "
            "or add GPU nodes"
        )


def default_concurrency(args: argparse.Namespace, gpus_per_trial: float, capacity: dict[str, float]) -> int:
    if args.max_concurrent:
        return args.max_concurrent
    by_cpu = capacity["total_cpus"] // args.cpus_per_trial
    by_gpu = capacity["total_gpus"] // gpus_per_trial if gpus_per_trial > 0 else math.inf
    return max(1, int(min(by_cpu, by_gpu)))


class SchedulerState(Callback):
    """A Tune callback that keeps the scheduler's state in `path` and reloads it on resume.

    Ray 2.60 saves the searcher with the experiment but rebuilds the scheduler
    from tuner.pkl as it was when the stage started, so ASHA's rung records
    would be lost on `--resume`. The callback and the scheduler are pickled
    together in tuner.pkl, so after a restore the callback refers to the restored
    scheduler and `setup` loads the saved records into it.
    """

    def __init__(self, scheduler: Any, path: Path) -> None:
        self.scheduler = scheduler
        self.path = str(path)

    def setup(self, **info: Any) -> None:
        if os.path.isfile(self.path):
            self.scheduler.restore(self.path)
            logger.info("restored the scheduler's state from %s", self.path)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        io.atomic_write(self.path, self.scheduler.save)


def trial_dirname(trial: Any) -> str:
    """Short trial folder names; Ray's default embeds the whole config and gets unreadable."""
    return f"{trial.trainable_name}_{trial.trial_id}"


class StageLog:
    """The record of finished stages, kept in OUT/stages.json."""

    def __init__(self, out: Path):
        self.path = out / "stages.json"
        self.done: dict[str, Any] = io.read_json(self.path) if self.path.is_file() else {}

    def finished(self, stage: str) -> bool:
        return stage in self.done

    def mark(self, stage: str, **info: Any) -> None:
        self.done[stage] = {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        io.write_json(self.path, self.done)


def run_stage(
    name: str,
    trainable: Any,
    param_space: dict[str, Any],
    tune_config: Any,
    storage: str,
    args: argparse.Namespace,
    stages: StageLog,
    callbacks: list[Any] | None = None,
):
    """Run one Tune experiment, or restore it: finished stages are read back, interrupted ones continue."""
    from ray import tune

    path = f"{storage.rstrip('/')}/{name}"
    if stages.finished(name):
        logger.info("stage %s finished earlier; reading its results from %s", name, path)
        return tune.Tuner.restore(path, trainable=trainable).get_results()
    if args.resume and tune.Tuner.can_restore(path):
        print(f"resuming stage {name} from {path}", flush=True)
        # Ray 2.60 restores the searcher's state but rebuilds the scheduler from
        # tuner.pkl; the SchedulerState callback, restored with it, reloads ASHA's records.
        # NOTE: HyperBand has no save/restore in Ray, so its brackets start afresh on resume.
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=2, checkpoint_frequency=args.checkpoint_every, checkpoint_at_end=True
                ),
                failure_config=tune.FailureConfig(max_failures=args.max_failures),
                callbacks=callbacks,
                verbose=1,
            ),
        )
    grid = tuner.fit()
    stages.mark(name, trials=len(grid), errors=len(grid.errors))
    return grid


def build_scheduler(kind: str, profile: SweepProfile):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler

    if kind == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=profile.max_epochs,
            grace_period=profile.grace_period,
            reduction_factor=profile.reduction_factor,
        )
    if kind == "hyperband":
        return HyperBandScheduler(
            time_attr="training_iteration", max_t=profile.max_epochs, reduction_factor=profile.reduction_factor
        )
    return FIFOScheduler()


def search_stage(
    family: str,
    profile: SweepProfile,
    args: argparse.Namespace,
    data: Any,
    resources: dict[str, float],
    concurrency: int,
    storage: str,
    stages: StageLog,
):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.hyperopt import HyperOptSearch

    from cifar_ray.tune.spaces import SPACES
    from cifar_ray.tune.trainables import TRAINABLES

    space, points = SPACES[family](profile.width_scale)
    optimizer = args.optimizer or "nadam"
    lr_range = args.lr_range or ((1e-3, 1e-1) if optimizer == "sgd" else None)
    if lr_range is not None:
        space["lr"] = tune.loguniform(*lr_range)
        points = [{**point, "lr": min(max(point["lr"], lr_range[0]), lr_range[1])} for point in points]
    param_space = {
        **space,
        "optimizer": optimizer,
        "augment": profile.augment,
        "epochs": profile.max_epochs,
        "batch_size": profile.batch_size,
        "patience": 3,
        "seed": args.seed,
    }
    searcher = HyperOptSearch(
        points_to_evaluate=points[: profile.num_samples],
        random_state_seed=args.seed,
        n_initial_points=max(1, min(20, profile.num_samples // 2)),
    )
    # HyperBand pauses whole brackets; a limit below the bracket size would hold
    # paused trials as live forever, so HyperBand gets every sample at once.
    limit = profile.num_samples if args.scheduler == "hyperband" else concurrency
    trainable = tune.with_resources(tune.with_parameters(TRAINABLES[family], data=data), resources)
    scheduler = build_scheduler(args.scheduler, profile)
    callbacks = []
    if args.scheduler == "asha":
        callbacks.append(SchedulerState(scheduler, Path(args.out_path) / f"scheduler-search-{family}.pkl"))
    tune_config = tune.TuneConfig(
        metric=args.metric,
        mode=args.mode,
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=limit),
        scheduler=scheduler,
        num_samples=profile.num_samples,
        time_budget_s=profile.search_time_budget_s,
        reuse_actors=False,
        trial_dirname_creator=trial_dirname,
    )
    return run_stage(f"search-{family}", trainable, param_space, tune_config, storage, args, stages, callbacks)


def final_stage(
    winners: list[dict[str, Any]],
    profile: SweepProfile,
    args: argparse.Namespace,
    data: Any,
    resources: dict[str, float],
    concurrency: int,
    storage: str,
    stages: StageLog,
):
    from ray import tune

    from cifar_ray.tune.trainables import ArchitectureTrainable

    for winner in winners:
        # A searched configuration carries the search's epoch limit; the final
        # retrain replaces it. Fixed configurations keep the length they set.
        if "search_trial_id" in winner:
            winner["epochs"] = profile.final_epochs
            winner["patience"] = profile.final_patience
        winner.setdefault("epochs", profile.final_epochs)
        winner.setdefault("patience", profile.final_patience)
        winner.setdefault("batch_size", profile.batch_size)
        winner.setdefault("augment", profile.augment)
        winner.setdefault("seed", args.seed)
        if profile.final_time_limit_s is not None:
            winner.setdefault("time_limit_s", profile.final_time_limit_s)
    param_space = {
        "winner": tune.grid_search(winners),
        "seed": tune.grid_search([args.seed + i for i in range(profile.seeds)]),
        "final": True,
    }
    trainable = tune.with_resources(tune.with_parameters(ArchitectureTrainable, data=data), resources)
    tune_config = tune.TuneConfig(
        metric=args.metric,
        mode=args.mode,
        max_concurrent_trials=concurrency,
        reuse_actors=False,
        trial_dirname_creator=trial_dirname,
    )
    return run_stage("final", trainable, param_space, tune_config, storage, args, stages)


def export_models(grid: Any, out: Path) -> dict[str, str]:
    """Copy each final trial's model file out of its last checkpoint into OUT/models/."""
    from cifar_ray.tune.trainables import MODEL_FILE, TEST_METRICS_FILE

    models = out / "models"
    models.mkdir(exist_ok=True)
    exported = {}
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id")
        if result.checkpoint is None or trial_id is None:
            continue
        with result.checkpoint.as_directory() as directory:
            source = Path(directory) / MODEL_FILE
            if not source.is_file():
                logger.warning("final trial %s has no model file in its last checkpoint", trial_id)
                continue
            model = (result.config.get("winner") or {}).get("model", "model")
            target = models / f"{model}-{trial_id}.pt"
            io.atomic_write(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
            metrics_file = Path(directory) / TEST_METRICS_FILE
            if metrics_file.is_file():
                io.atomic_write(
                    target.with_suffix(".metrics.json"), lambda tmp, source=metrics_file: shutil.copyfile(source, tmp)
                )
            exported[trial_id] = str(target.relative_to(out))
    return exported


def write_tables(out: Path, trials: pd.DataFrame, history: pd.DataFrame) -> None:
    io.write_parquet(out / "trials.parquet", trials)
    io.write_parquet(out / "history.parquet", history)


def print_header(spec: SweepSpec, profile: SweepProfile, args: argparse.Namespace, out: Path, data_text: str) -> None:
    stages = [f"search {family}: {profile.num_samples} trials, {args.scheduler}, up to {profile.max_epochs} epochs" for family in spec.searches]
    print(f"{spec.name}: profile {profile.name!r} ({'GPU' if _gpu_visible() else 'CPU'} visible)")
    for line in stages:
        print(f"  {line}, on {profile.search_subset or 'all'} training images")
    print(
        f"  final: top {profile.top_k}{' per model' if spec.per_model else ''} retrained, up to {profile.final_epochs} epochs"
        f" (patience {profile.final_patience}), {profile.seeds} seed(s), on {profile.final_subset or 'all'} training images"
    )
    print(f"  augmentation (random crop + flip): {'on' if profile.augment else 'off'}; batch size {profile.batch_size}")
    if profile.search_time_budget_s:
        print(f"  budget: each search stage stops after {profile.search_time_budget_s:.0f} s")
    if profile.final_time_limit_s:
        print(f"  budget: each final retrain stops after the epoch that passes {profile.final_time_limit_s:.0f} s of training")
    print(f"  data: {data_text}")
    print(f"  output: {out}", flush=True)


def run(spec: SweepSpec, argv: list[str] | None = None) -> int:
    """Entry point of every sweep script."""
    args = get_args_parser(spec).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return _run(spec, args)
    except (SweepError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(spec: SweepSpec, args: argparse.Namespace) -> int:
    from cifar_ray.data import prepare_data
    from cifar_ray.tune.results import collect_trials, format_markdown, select_winners, summarise_final

    started = time.perf_counter()
    profile = resolve_profile(args, spec)
    out = Path(args.out or f"results/{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    prepare_output(out, args.resume)
    args.out_path = str(out)
    storage = args.storage or str(out / "ray")

    # Resources are checked before the data is decoded, so an impossible request fails in seconds.
    start_ray(args.address)
    capacity = cluster_capacity()
    if args.autoscaler_config:
        capacity = reachable_capacity(capacity, autoscaler_capacity(args.autoscaler_config))
    gpus_per_trial = args.gpus_per_trial
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if capacity["total_gpus"] > 0 else 0.0
    check_resources(args.cpus_per_trial, gpus_per_trial, capacity)
    concurrency = default_concurrency(args, gpus_per_trial, capacity)
    resources = {"cpu": args.cpus_per_trial, "gpu": gpus_per_trial}

    # Data is decoded once (or read from the cache) here in the driver; trials
    # receive it through Ray's object store.
    data_config = DataConfig(
        data=args.data,
        image_size=args.image_size,
        test_fraction=args.test_fraction,
        seed=args.seed,
        drop_empty_classes=args.drop_empty_classes,
        cache_dir=args.cache_dir,
    )
    final_data = prepare_data(dataclasses.replace(data_config, train_subset=profile.final_subset))
    search_data = (
        prepare_data(dataclasses.replace(data_config, train_subset=profile.search_subset))
        if spec.searches
        else None
    )
    counts = final_data.class_counts()
    print_header(spec, profile, args, out, final_data.describe())
    print("  classes: " + ", ".join(f"{name} ({counts['train'][name]})" for name in final_data.class_names), flush=True)
    print(
        f"  ray: {capacity['nodes']:.0f} node(s), {capacity['total_cpus']:g} CPUs, {capacity['total_gpus']:g} GPUs; "
        f"{args.cpus_per_trial:g} CPU + {gpus_per_trial:g} GPU per trial, up to {concurrency} at once",
        flush=True,
    )

    if not args.resume:
        io.write_json(
            out / "sweep.json",
            {
                "script": spec.name,
                "argv": sys.argv[1:],
                "args": vars(args),
                "profile": dataclasses.asdict(profile),
                "data": {"source": final_data.source, "kind": final_data.kind, "class_names": final_data.class_names, "class_counts": counts},
                "resources": {**resources, "concurrency": concurrency, **capacity},
                "versions": _versions(),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
    stages = StageLog(out)

    # Search stages: one Tune experiment per family.
    all_trials, all_history = [], []
    for family in spec.searches:
        grid = search_stage(family, profile, args, search_data, resources, concurrency, storage, stages)
        trials, history = collect_trials(grid, f"search-{family}", profile.max_epochs)
        all_trials.append(trials)
        all_history.append(history)
        write_tables(out, pd.concat(all_trials, ignore_index=True), pd.concat(all_history, ignore_index=True))
        _print_search(family, trials)

    # Final stage: the winners (and any fixed configurations) retrained and tested once.
    winners = []
    if spec.searches:
        winners = select_winners(pd.concat(all_trials, ignore_index=True), profile.top_k, spec.per_model)
        if not winners:
            raise SweepError(
                "every search trial failed or diverged, so there is nothing to retrain; see the status and error "
                f"columns of {out / 'trials.parquet'}, and lower the learning rate range (--lr-range) if trials diverged"
            )
    if spec.fixed_configs is not None:
        winners += spec.fixed_configs(profile, args)
    grid = final_stage(winners, profile, args, final_data, resources, concurrency, storage, stages)
    trials, history = collect_trials(grid, "final", profile.final_epochs)
    exported = export_models(grid, out)
    trials["model_file"] = trials["trial_id"].map(exported)
    all_trials.append(trials)
    all_history.append(history)
    trials_frame = pd.concat(all_trials, ignore_index=True)
    write_tables(out, trials_frame, pd.concat(all_history, ignore_index=True))

    summary = summarise_final(trials)
    io.write_csv(out / "summary.csv", summary)
    markdown = format_markdown(summary)
    io.write_text(out / "summary.md", f"# {spec.name}: final models on the test set\n\n" + markdown)

    if not args.no_analysis:
        _run_analysis(out)

    print("\n" + markdown)
    print(f"finished in {(time.perf_counter() - started) / 60:.1f} min; results in {out}")
    print(f"watch or review the curves: tensorboard --logdir {storage} --host 127.0.0.1")
    return 0


def _print_search(family: str, trials: pd.DataFrame) -> None:
    counts = trials["status"].value_counts().to_dict()
    best = trials.sort_values("best_val_accuracy", ascending=False).head(3)
    print(f"\nsearch {family}: {len(trials)} trials, " + ", ".join(f"{v} {k.lower()}" for k, v in counts.items()))
    for _, row in best.iterrows():
        print(f"  val_accuracy {row['best_val_accuracy']:.4f} after {row['epochs']} epochs: {row['architecture']}")
    print(flush=True)


def _run_analysis(out: Path) -> None:
    try:
        from cifar_ray.analysis import analyse_sweep
    except ImportError:
        logger.info("analysis package not available; skipping plots and REPORT.md")
        return
    try:
        analyse_sweep(out)
    except Exception:  # the sweep's own results are already written; a plotting failure must not hide them
        logger.exception("analysis of %s failed; rerun it alone with `python analysis/analyse.py %s`", out, out)


def _versions() -> dict[str, str]:
    import numpy
    import ray
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "ray": ray.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
    }
