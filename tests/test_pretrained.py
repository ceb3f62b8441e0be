"""The pretrained family: torchvision backbones with a new head, local weight files, freezing, training and prediction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from _images import one_torch_thread, real_files, small_bundle  # noqa: F401

from cifar_ray.checkpoint import load_model, save_model
from cifar_ray.config import TrainConfig
from cifar_ray.engine import Trainer
from cifar_ray.models import build_architecture, build_model, count_parameters, get_spec, registered_models
from cifar_ray.models.pretrained import PretrainedWeightsError, hub_checkpoint_path
from cifar_ray.predict import predict_images

PRETRAINED_MODELS = [name for name in registered_models() if get_spec(name).family == "pretrained"]


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state_dict file in torchvision's ResNet-18 layout (random weights; nothing is downloaded)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point torchvision's cache at an empty folder, so no test reads or writes the real one."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home"


def test_registry_has_pretrained_models():
    assert "resnet18_pretrained" in PRETRAINED_MODELS
    assert "mobilenet_v3_small_pretrained" in PRETRAINED_MODELS


@pytest.mark.parametrize("name", PRETRAINED_MODELS)
@pytest.mark.parametrize("image_size", [32, 64])
def test_pretrained_forward_shapes(name, image_size):
    model = build_architecture(name, num_classes=7, image_size=image_size).eval()
    images = torch.randn(2, 3, image_size, image_size)

    with torch.no_grad():
        logits = model(images)
        features = model.forward_features(images)

    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    assert features.shape == (2, model.head.in_features)
    assert len(model.conv_layers()) == 2
    assert all(isinstance(layer, torch.nn.Conv2d) for layer in model.conv_layers())
    assert model.regularized == []


def test_pretrained_input_size_upsamples():
    model = build_architecture("resnet18_pretrained", image_size=32, input_size=64).eval()
    seen = []
    model.body.conv1.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))

    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))

    assert seen == [torch.Size([2, 3, 64, 64])]


def test_local_weights_loaded(resnet18_weights):
    expected = torch.load(resnet18_weights, weights_only=True)

    model = build_model("resnet18_pretrained", num_classes=10, weights=str(resnet18_weights))

    assert torch.equal(model.body.conv1.weight, expected["conv1.weight"])
    assert torch.equal(model.body.layer4[1].bn2.running_var, expected["layer4.1.bn2.running_var"])
    assert model.head.out_features == 10


def test_weights_from_torch_hub_cache(resnet18_weights, empty_torch_home):
    cached = hub_checkpoint_path("resnet18")
    assert cached == empty_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(resnet18_weights.read_bytes())

    model = build_model("resnet18_pretrained")

    expected = torch.load(resnet18_weights, weights_only=True)
    assert torch.equal(model.body.layer1[0].conv1.weight, expected["layer1.0.conv1.weight"])


def test_missing_imagenet_weights_error(empty_torch_home):
    with pytest.raises(PretrainedWeightsError) as raised:
        build_model("resnet18_pretrained")

    message = str(raised.value)
    assert "ImageNet weights for resnet18 not found" in message
    assert str(empty_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "weights=PATH" in message
    assert "download=true" in message


def test_missing_weights_file_error(tmp_path):
    missing = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(PretrainedWeightsError, match=f"weights file {missing} for resnet18 not found"):
        build_model("resnet18_pretrained", weights=str(missing))


def test_mismatched_weights_file_error(tmp_path):
    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="do not fit ResNet"):
        build_model("resnet18_pretrained", weights=str(path))


def test_non_state_dict_weights_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="could not be read"):
        build_model("resnet18_pretrained", weights=str(path))


@pytest.mark.parametrize("freeze", [-1, 6, "everything", True])
def test_invalid_freeze_rejected(freeze):
    with pytest.raises(ValueError, match="freeze must"):
        build_architecture("resnet18_pretrained", freeze=freeze)


def test_freeze_counts_non_trainable():
    head_parameters = 512 * 10 + 10
    model = build_architecture("resnet18_pretrained", freeze="all_but_head")
    unfrozen = build_architecture("resnet18_pretrained")

    counts = count_parameters(model)

    assert counts["trainable"] == head_parameters
    assert counts["total"] == count_parameters(unfrozen)["total"]
    partly = count_parameters(build_architecture("resnet18_pretrained", freeze=2))
    assert head_parameters < partly["trainable"] < count_parameters(unfrozen)["trainable"]


def test_frozen_blocks_unchanged_by_training():
    data = small_bundle(train_per_class=10, val_per_class=5, test_per_class=2)
    config = TrainConfig(
        model="mobilenet_v3_small_pretrained",
        model_kwargs={"weights": None, "freeze": 10},
        epochs=1,
        batch_size=25,
        device="cpu",
        channels_last=False,
    )
    trainer = Trainer(config, data)
    model = trainer.model
    frozen_state = {
        name: value.clone()
        for block in model.blocks[:10]
        for module in block
        for name, value in module.state_dict().items()
    }
    trainable_before = model.body.features[12][0].weight.clone()
    head_before = model.head.weight.clone()

    trainer.train_epoch()

    after = {name: value for block in model.blocks[:10] for module in block for name, value in module.state_dict().items()}
    changed = [name for name, value in frozen_state.items() if not torch.equal(value, after[name])]
    assert changed == [], f"frozen weights or batch-norm statistics changed: {changed[:5]}"
    assert all(p.grad is None for block in model.blocks[:10] for module in block for p in module.parameters())
    assert not torch.equal(model.body.features[12][0].weight, trainable_before)
    assert not torch.equal(model.head.weight, head_before)


def test_pretrained_trains_saves_and_predicts(resnet18_weights, tmp_path):
    data = small_bundle(train_per_class=20, val_per_class=5, test_per_class=2)
    config = TrainConfig(
        model="resnet18_pretrained",
        model_kwargs={"weights": str(resnet18_weights), "freeze": 1},
        epochs=1,
        batch_size=50,
        device="cpu",
    )
    trainer = Trainer(config, data)
    metrics = trainer.train_epoch()
    assert metrics["train_loss"] < 10
    assert 0 <= metrics["val_accuracy"] <= 1

    model_path = save_model(
        tmp_path / "model.pt",
        trainer.model,
        config.model,
        config.model_kwargs,
        data.class_names,
        data.mean_image,
        data.image_size,
        train_config=config,
    )
    # The saved model contains its own weights, so the starting file is no longer needed.
    moved = resnet18_weights.rename(resnet18_weights.with_suffix(".moved"))
    try:
        loaded, _ = load_model(model_path)
    finally:
        moved.rename(resnet18_weights)
    assert torch.equal(loaded.head.weight, trainer.model.head.weight)

    paths, _ = real_files("test", per_class=1)
    predictions, skipped = predict_images(model_path, paths, top_k=5, device="cpu")
    assert skipped == []
    assert len(predictions) == 10
    assert set(predictions["predicted_class"]) <= set(data.class_names)
    assert (tmp_path / "model.card.json").is_file()
