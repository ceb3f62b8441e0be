"""`cifar-ray export`: a torch.export archive that reproduces the saved model's logits with torch alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _images import decode_files, one_torch_thread, real_files, small_bundle  # noqa: F401

from cifar_ray.checkpoint import load_model, save_model
from cifar_ray.cli import main
from cifar_ray.data import DeviceDataset
from cifar_ray.export import METADATA_ENTRY
from cifar_ray.model_card import NOT_RECORDED, card_paths
from cifar_ray.models import build_architecture

# Runs in a fresh interpreter in isolated mode (-I), with every import of
# cifar_ray made to fail, so the archive provably needs only torch.
LOAD_WITH_TORCH_ONLY = textwrap.dedent(
    """
    import json, sys
    sys.modules["cifar_ray"] = None
    import torch

    archive, images_path, out_path = sys.argv[1:]
    extra = {"%s": ""}
    model = torch.export.load(archive, extra_files=extra).module()
    images = torch.load(images_path)
    with torch.no_grad():
        logits = model(images)
        single = model(images[:1])
    loaded = [name for name, module in sys.modules.items() if name.startswith("cifar_ray") and module is not None]
    torch.save({"logits": logits, "single": single, "metadata": extra["%s"], "loaded": loaded}, out_path)
    """
    % (METADATA_ENTRY, METADATA_ENTRY)
)

EXPORT_CASES = {
    "cnn": ("cnn2", {"filters": [16, 32], "dense_units": 64}, 32),
    "mobilenet_64px": ("mobilenet_v3_small_pretrained", {"freeze": 3}, 64),
}


def saved_model(tmp_path: Path, name: str, kwargs: dict, image_size: int) -> Path:
    """Save an untrained model with a real mean image and real class names; no training is needed to compare logits."""
    data = small_bundle(train_per_class=10, val_per_class=2, test_per_class=1, image_size=image_size)
    torch.manual_seed(0)
    model = build_architecture(name, num_classes=data.num_classes, image_size=image_size, **kwargs)
    # Non-trivial batch-norm statistics, so that eval-mode normalisation matters in the comparison.
    model.train()
    with torch.no_grad():
        dataset = DeviceDataset(data.x_train, data.y_train, data.mean_image, torch.device("cpu"))
        model(dataset.normalise(dataset.images, channels_last=False))
    model.eval()
    return save_model(
        tmp_path / "model.pt", model, name, kwargs, data.class_names, data.mean_image, image_size
    )


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_export_matches_original_without_cifar_ray(case, tmp_path):
    name, kwargs, image_size = EXPORT_CASES[case]
    model_path = saved_model(tmp_path, name, kwargs, image_size)
    archive = tmp_path / "served" / "model.pt2"

    assert main(["export", str(model_path), "--out", str(archive)]) == 0
    assert archive.is_file()

    paths, _ = real_files("test", per_class=3)
    images = decode_files(paths, image_size)
    torch.save(torch.from_numpy(images), tmp_path / "images.pt")
    subprocess.run(
        [sys.executable, "-I", "-c", LOAD_WITH_TORCH_ONLY, str(archive), str(tmp_path / "images.pt"), str(tmp_path / "out.pt")],
        check=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    served = torch.load(tmp_path / "out.pt")

    model, metadata = load_model(model_path)
    dataset = DeviceDataset(images, np.zeros(len(images), dtype=np.int64), metadata["mean_image"], torch.device("cpu"))
    with torch.no_grad():
        expected = model(dataset.normalise(dataset.images, channels_last=False))
    assert served["loaded"] == []
    assert served["logits"].shape == (30, 10)
    assert torch.allclose(served["logits"], expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(served["logits"].argmax(1), expected.argmax(1))
    assert torch.allclose(served["single"], expected[:1], atol=1e-4, rtol=1e-4)
    description = json.loads(served["metadata"])
    assert description["class_names"] == metadata["class_names"]
    assert description["image_size"] == image_size


def test_export_default_path_next_to_model(tmp_path, capsys):
    model_path = saved_model(tmp_path, *EXPORT_CASES["cnn"])

    assert main(["export", str(model_path)]) == 0

    assert (tmp_path / "model.pt2").is_file()
    assert "wrote " + str(tmp_path / "model.pt2") in capsys.readouterr().out


def test_export_rejects_float_and_wrong_size(tmp_path):
    model_path = saved_model(tmp_path, *EXPORT_CASES["cnn"])
    assert main(["export", str(model_path)]) == 0
    served = torch.export.load(tmp_path / "model.pt2").module()

    with pytest.raises(Exception, match="dtype"):
        served(torch.rand(2, 32, 32, 3))
    with pytest.raises(Exception, match="32"):
        served(torch.zeros(2, 48, 48, 3, dtype=torch.uint8))


def test_export_missing_model_fails(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt not found" in capsys.readouterr().err


def test_model_card_marks_missing_fields(tmp_path):
    model_path = saved_model(tmp_path, *EXPORT_CASES["cnn"])
    json_path, markdown_path = card_paths(model_path)

    card = json.loads(json_path.read_text())

    assert card["training"]["seed"] == NOT_RECORDED
    assert card["training"]["train_time_s"] == NOT_RECORDED
    assert card["metrics"]["test_accuracy"] == NOT_RECORDED
    assert card["data"]["class_counts"] == NOT_RECORDED
    assert card["data"]["source"] == NOT_RECORDED
    assert card["architecture"]["parameters"]["total"] > 0
    assert len(card["preprocessing"]["mean_image_channel_means"]) == 3
    markdown = markdown_path.read_text()
    assert "| test_accuracy | not recorded |" in markdown
    assert "training time: not recorded" in markdown
