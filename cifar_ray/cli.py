"""The `cifar-ray` command: list the registered models, train one without Ray, and more."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from cifar_ray import io
from cifar_ray.config import DataConfig, TrainConfig, to_dict

logger = logging.getLogger("cifar_ray")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that reads a data set."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        help="CIFAR-10 folder or .tar.gz, or a class-folder tree (with or without train/ and test/); "
        "default: $CIFAR_RAY_DATA, then the cache folder",
    )
    group.add_argument("--image-size", type=int, default=32, help="pixels per side images are resized to (default 32)")
    group.add_argument("--train-subset", type=int, help="train on N images drawn stratified; validation and test stay whole")
    group.add_argument("--val-fraction", type=float, default=0.1, help="share of training images held out (default 0.1)")
    group.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share carved out as test set when the tree has no test/ folder (default 0.2)",
    )
    group.add_argument("--drop-empty-classes", action="store_true", help="drop class folders without a valid image")
    group.add_argument("--cache-dir", help="decoded-image cache (default: $CIFAR_RAY_CACHE or ~/.cache/cifar_ray)")
    group.add_argument("--no-download", action="store_true", help="never download CIFAR-10")


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    return DataConfig(
        data=args.data,
        image_size=args.image_size,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        train_subset=args.train_subset,
        seed=args.seed,
        drop_empty_classes=args.drop_empty_classes,
        cache_dir=args.cache_dir,
        download=not args.no_download,
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cifar-ray", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list the registered architectures with their parameter counts")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")

    train = commands.add_parser("train", help="train one registered model without Ray and test it once")
    train.add_argument("model", help="registered architecture name (see `cifar-ray models`)")
    add_data_arguments(train)
    group = train.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=20, help="maximum epochs (default 20; early stopping may end sooner)")
    group.add_argument("--optimizer", choices=["nadam", "sgd"], default="nadam", help="default nadam, as in the study")
    group.add_argument("--lr", type=float, help="initial learning rate (default 1e-3 for nadam, 0.1 for sgd)")
    group.add_argument("--batch-size", type=int, default=32, help="images per step (default 32, as in the study)")
    group.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs (default 3)")
    group.add_argument("--no-early-stopping", action="store_true", help="always train for --epochs")
    group.add_argument(
        "--restore-best", action="store_true", help="keep the best epoch's weights (default: the last, as Keras)"
    )
    group.add_argument("--augment", action="store_true", help="random crop with 4-pixel padding and horizontal flip")
    group.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    group.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU when there is one)")
    group.add_argument("--seed", type=int, default=0, help="seeds the split, the weights and the shuffling (default 0)")
    group.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help='override an architecture argument, e.g. --model-arg filters=[32,64] (repeatable)',
    )
    group.add_argument(
        "--weights",
        help="pretrained models only: a state_dict file with the backbone's starting weights "
        "(default: torchvision's cache folder)",
    )
    group.add_argument(
        "--freeze",
        help='pretrained models only: leading backbone blocks to freeze (an integer) or "all_but_head"',
    )
    train.add_argument("--out", help="output folder (default results/train-MODEL-TIMESTAMP)")

    predict = commands.add_parser("predict", help="classify image files and folders with a saved model, to CSV")
    predict.add_argument("model", help="model file written by `cifar-ray train` (model.pt)")
    predict.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files, or folders read recursively")
    predict.add_argument("--top-k", type=int, default=3, help="classes listed per image, most probable first (default 3)")
    predict.add_argument("--out", default="predictions.csv", help="CSV file to write (default predictions.csv)")
    predict.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    predict.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU when there is one)")

    export = commands.add_parser(
        "export", help="write a saved model as one torch.export archive that needs only torch to run"
    )
    export.add_argument("model", help="model file written by `cifar-ray train` (model.pt)")
    export.add_argument("--out", help="archive to write (default: the model file with the suffix .pt2)")
    return parser


def parse_model_args(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--model-arg {item!r} is not KEY=VALUE; example: --model-arg filters=[32,64]")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"--model-arg {item!r}: {value!r} is not valid JSON; example: filters=[32,64]") from None
    return overrides


def command_models(args: argparse.Namespace) -> int:
    from cifar_ray.models import build_architecture, count_parameters, get_spec, registered_models

    rows = []
    for name in registered_models():
        counts = count_parameters(build_architecture(name))
        rows.append({"name": name, "description": get_spec(name).description, **counts})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    print(f"{'name':<{width}} {'total':>11} {'trainable':>11} {'non-trainable':>14}  description")
    for row in rows:
        print(
            f"{row['name']:<{width}} {row['total']:>11,} {row['trainable']:>11,} {row['non_trainable']:>14,}  {row['description']}"
        )
    return 0


def pretrained_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Turn --weights and --freeze into model arguments, rejecting them for models that are not pretrained."""
    from cifar_ray.models import get_spec

    overrides: dict[str, Any] = {}
    if args.weights:
        overrides["weights"] = args.weights
    if args.freeze:
        overrides["freeze"] = int(args.freeze) if args.freeze.isdigit() else args.freeze
    if overrides and get_spec(args.model).family != "pretrained":
        raise ValueError(
            f"--weights and --freeze apply to pretrained models only, not {args.model!r}; "
            "see `cifar-ray models` for the *_pretrained names"
        )
    return overrides


def command_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cifar_ray.checkpoint import save_model
    from cifar_ray.data import prepare_data
    from cifar_ray.engine import Trainer
    from cifar_ray.models import get_spec

    data_config = data_config_from_args(args)
    train_config = TrainConfig(
        model=args.model,
        model_kwargs={**parse_model_args(args.model_arg), **pretrained_overrides(args)},
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        early_stopping=not args.no_early_stopping,
        patience=args.patience,
        restore_best=args.restore_best,
        augment=args.augment,
        amp=args.amp,
        seed=args.seed,
        device=args.device,
    )
    train_config.validate()
    # Reject an unknown model name before the data is downloaded or decoded.
    get_spec(train_config.model)
    out = Path(args.out or f"results/train-{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")

    data = prepare_data(data_config)
    print(f"data: {data.describe()}")
    trainer = Trainer(train_config, data)
    print(
        f"model: {args.model}, {trainer.params['total']:,} parameters, device {trainer.device}, "
        f"up to {train_config.epochs} epochs"
    )

    # One progress bar per epoch, over images, and a line per finished epoch.
    bar: tqdm | None = None

    def progress(images: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=len(data.y_train), desc=f"epoch {trainer.epoch + 1}", unit="img", leave=False, disable=None)
        bar.update(images)

    def on_epoch(metrics: dict[str, Any]) -> None:
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        print(
            f"epoch {metrics['epoch']:>3}: train_loss {metrics['train_loss']:.4f} train_accuracy "
            f"{metrics['train_accuracy']:.4f} val_loss {metrics['val_loss']:.4f} val_accuracy "
            f"{metrics['val_accuracy']:.4f} lr {metrics['lr']:.2e} ({metrics['epoch_time_s']:.1f} s)",
            flush=True,
        )

    trainer.fit(on_epoch=on_epoch, progress=progress)
    test = trainer.evaluate_test()
    summary = trainer.summary(test)
    summary["class_names"] = data.class_names
    summary["data"] = {"source": data.source, "kind": data.kind, "class_counts": data.class_counts()}
    summary["skipped_files"] = [{"path": s.path, "reason": s.reason} for s in data.skipped]
    summary["train_config"] = to_dict(train_config)
    summary["data_config"] = to_dict(data_config)

    io.write_json(out / "metrics.json", summary)
    save_model(
        out / "model.pt",
        trainer.model,
        train_config.model,
        train_config.model_kwargs,
        data.class_names,
        data.mean_image,
        data.image_size,
        train_config,
        data_config,
        {k: v for k, v in summary.items() if k not in ("history", "per_class", "confusion_matrix")},
    )
    print(
        f"\n{args.model}: test_accuracy {test['accuracy']:.4f}, test_rmse {test['rmse']:.3f}, "
        f"val_accuracy {summary['val_accuracy']:.4f} ({summary['weights']} weights), "
        f"{summary['epochs']} epochs in {summary['train_time_s']:.1f} s, stopped by {summary['stop_reason']}"
    )
    print(f"wrote {out / 'metrics.json'} and {out / 'model.pt'}")
    return 0


def command_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cifar_ray.predict import find_image_files, predict_images

    files = find_image_files(args.inputs)
    with tqdm(total=len(files), desc="predict", unit="img") as bar:
        predictions, skipped = predict_images(
            args.model, files, top_k=args.top_k, batch_size=args.batch_size, device=args.device, progress=bar.update
        )
    io.write_csv(args.out, predictions)

    print(f"classified {len(predictions)} of {len(files)} files, skipped {len(skipped)}; wrote {args.out}")
    for item in skipped:
        print(f"  skipped {item.path}: {item.reason}")
    return 0


def command_export(args: argparse.Namespace) -> int:
    from cifar_ray.export import METADATA_ENTRY, export_model

    out = export_model(args.model, args.out)
    print(
        f"wrote {out}: input uint8 RGB images (N, H, W, 3) at the model's image size, output logits; "
        f"load with torch.export.load and read the {METADATA_ENTRY} entry for class names and input size"
    )
    return 0


COMMANDS = {
    "models": command_models,
    "train": command_train,
    "predict": command_predict,
    "export": command_export,
}


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
