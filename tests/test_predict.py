"""`cifar-ray predict` on real CIFAR-10 test images made messy the way uploaded photos are."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _images import decode_files, one_torch_thread, real_files, small_bundle, write_messy_copy  # noqa: F401

from cifar_ray.checkpoint import load_model, save_model
from cifar_ray.cli import main
from cifar_ray.config import TrainConfig
from cifar_ray.data import DeviceDataset
from cifar_ray.engine import Trainer
from cifar_ray.model_card import NOT_RECORDED, card_paths
from cifar_ray.predict import find_image_files, predict_images

# A model file to test instead of the quickly trained one, e.g. a full `cifar-ray train` result.
TEST_MODEL_ENV = "CIFAR_RAY_TEST_MODEL"

# 198 images and 2 unreadable files: 200 files in the folder.
NUM_IMAGES = 198

# Messy copies may differ in accuracy from the originals by at most this much.
# Grayscale, WebP and re-encoded JPEGs change some pixels, so some predictions
# legitimately change; a preprocessing mismatch changes most of them.
ACCURACY_TOLERANCE = 0.08

# Forms whose decoded pixels equal the original's, so their predictions must too.
LOSSLESS_FORMS = ("copy", "rgba_png", "exif_rotated", "upper_case", "bmp")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model file: $CIFAR_RAY_TEST_MODEL, or a small CNN trained for 2 epochs on 5,000 real images."""
    if os.environ.get(TEST_MODEL_ENV):
        return Path(os.environ[TEST_MODEL_ENV])

    data = small_bundle(train_per_class=500, val_per_class=50, test_per_class=20)
    config = TrainConfig(
        model="cnn2",
        model_kwargs={"filters": [16, 32], "dense_units": 64},
        epochs=2,
        batch_size=64,
        early_stopping=False,
        device="cpu",
    )
    trainer = Trainer(config, data)
    trainer.fit()
    summary = trainer.summary(trainer.evaluate_test())
    summary["data"] = {"source": data.source, "kind": data.kind, "class_counts": data.class_counts()}
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(
        path,
        trainer.model,
        config.model,
        config.model_kwargs,
        data.class_names,
        data.mean_image,
        data.image_size,
        train_config=config,
        metrics={k: v for k, v in summary.items() if k not in ("history", "per_class", "confusion_matrix")},
    )
    return path


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """198 real test images in eight messy forms, plus an empty .jpg and a text file; returns the folder and a table of the images."""
    folder = tmp_path_factory.mktemp("uploads")
    sources, labels = real_files("test", per_class=20)
    records = []
    for index, (source, label) in enumerate(zip(sources[:NUM_IMAGES], labels[:NUM_IMAGES])):
        path, form = write_messy_copy(source, folder, index)
        records.append({"path": str(path), "source": str(source), "label": int(label), "form": form})
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "nested" / "notes.txt").write_text("listing of the photos, not an image\n")
    return folder, pd.DataFrame(records)


def clean_predictions(model_path: Path, sources: list[str]) -> np.ndarray:
    """Class probabilities for the original files, through the training pipeline's decoding and DeviceDataset."""
    model, metadata = load_model(model_path)
    images = decode_files([Path(s) for s in sources], metadata["image_size"])
    dataset = DeviceDataset(images, np.zeros(len(images), dtype=np.int64), metadata["mean_image"], torch.device("cpu"))
    with torch.no_grad():
        logits = torch.cat([model(batch) for batch, _ in dataset.eval_batches(64, channels_last=False)])
    return torch.softmax(logits, dim=1).numpy()


def test_predict_cli_messy_folder(model_file, messy_folder, tmp_path, capsys):
    folder, images = messy_folder
    out = tmp_path / "predictions.csv"

    code = main(["predict", str(model_file), str(folder), "--top-k", "3", "--out", str(out), "--batch-size", "64"])

    assert code == 0
    printed = capsys.readouterr().out
    assert f"classified {NUM_IMAGES} of {NUM_IMAGES + 2} files, skipped 2" in printed
    assert f"skipped {folder / 'empty.jpg'}: empty file (0 bytes)" in printed
    assert f"skipped {folder / 'nested' / 'notes.txt'}: not an image file" in printed

    predictions = pd.read_csv(out)
    assert len(predictions) == NUM_IMAGES
    assert sorted(predictions["path"]) == sorted(images["path"])
    assert list(predictions.columns[:3]) == ["path", "predicted_class", "probability"]
    assert (predictions["predicted_class"] == predictions["top1_class"]).all()
    assert np.allclose(predictions["probability"], predictions["top1_probability"])
    assert (predictions["top1_probability"] >= predictions["top2_probability"]).all()
    assert (predictions["top2_probability"] >= predictions["top3_probability"]).all()
    assert (predictions[["top1_probability", "top2_probability", "top3_probability"]].sum(axis=1) <= 1 + 1e-5).all()


def test_predict_accuracy_matches_clean(model_file, messy_folder):
    folder, images = messy_folder
    _, metadata = load_model(model_file)
    class_names = metadata["class_names"]

    predictions, skipped = predict_images(model_file, [folder], top_k=2, batch_size=50, device="cpu")

    assert sorted(item.path for item in skipped) == sorted(
        [str(folder / "empty.jpg"), str(folder / "nested" / "notes.txt")]
    )
    merged = images.merge(predictions, on="path", validate="one_to_one")
    assert len(merged) == NUM_IMAGES
    clean = clean_predictions(model_file, list(merged["source"]))
    clean_class = np.asarray(class_names)[clean.argmax(axis=1)]
    labels = np.asarray(class_names)[merged["label"]]

    messy_accuracy = float((merged["predicted_class"] == labels).mean())
    clean_accuracy = float((clean_class == labels).mean())
    assert clean_accuracy > 0.2, f"the test model is barely better than chance (accuracy {clean_accuracy:.3f})"
    assert abs(messy_accuracy - clean_accuracy) <= ACCURACY_TOLERANCE, (
        f"accuracy on messy copies {messy_accuracy:.3f} vs originals {clean_accuracy:.3f}"
    )

    # Lossless forms decode to the original pixels, so every prediction must match.
    lossless = merged["form"].isin(LOSSLESS_FORMS).to_numpy()
    assert lossless.sum() >= 90
    assert (merged["predicted_class"].to_numpy()[lossless] == clean_class[lossless]).all()
    assert np.allclose(merged["probability"].to_numpy()[lossless], clean.max(axis=1)[lossless], atol=1e-5)


def test_predict_exif_rotation_applied(model_file, messy_folder):
    _, images = messy_folder
    rotated = images[images["form"] == "exif_rotated"]

    predictions, skipped = predict_images(model_file, list(rotated["path"]), device="cpu")

    assert skipped == []
    assert len(predictions) == len(rotated) > 0
    clean = clean_predictions(model_file, list(rotated["source"]))
    # The rotated PNGs restore the original pixels exactly, so the probabilities match.
    assert np.allclose(predictions["probability"].to_numpy(), clean.max(axis=1), atol=1e-5)


def test_predict_missing_input_fails(model_file, tmp_path, capsys):
    code = main(["predict", str(model_file), str(tmp_path / "no-such-folder"), "--out", str(tmp_path / "p.csv")])

    assert code == 2
    assert "no-such-folder not found" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_predict_top_k_above_classes_fails(model_file, messy_folder):
    folder, _ = messy_folder
    with pytest.raises(ValueError, match="top_k must lie between 1 and the model's 10 classes"):
        predict_images(model_file, [folder], top_k=11, device="cpu")


def test_find_image_files_skips_hidden(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "B.PNG").write_bytes(b"x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.jpg").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    (tmp_path / "d.webp").write_bytes(b"x")

    files = find_image_files([tmp_path])

    assert files == [tmp_path / "d.webp", tmp_path / "a" / "B.PNG"]


def test_model_card_written(model_file):
    if os.environ.get(TEST_MODEL_ENV):
        pytest.skip(f"${TEST_MODEL_ENV} names a model file this test did not write")
    json_path, markdown_path = card_paths(model_file)

    card = json.loads(json_path.read_text())

    assert json_path.name == "model.card.json"
    assert card["architecture"]["name"] == "cnn2"
    assert card["architecture"]["arguments"]["filters"] == [16, 32]
    assert card["architecture"]["parameters"]["total"] > 0
    assert card["data"]["class_counts"]["train"]["cat"] == 500
    assert card["preprocessing"]["resize"] == "32x32 pixels, bilinear"
    assert card["training"]["seed"] == 0
    assert card["training"]["epochs"] == 2
    assert card["training"]["train_time_s"] > 0
    assert 0 <= card["metrics"]["test_accuracy"] <= 1
    assert card["training"]["split_seed"] == NOT_RECORDED
    assert card["versions"]["torch"] == torch.__version__
    assert "## Metrics" in markdown_path.read_text()
