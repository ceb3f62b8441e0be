"""The study's nine architectures in the registry: parameter counts, forward and backward passes, L2 terms, errors.

The registry also contains ImageNet-pretrained backbones. They need weight files
that are not part of the test setup, so these tests cover the study's nine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
import torch
from torch import nn

from cifar_ray.cli import main
from cifar_ray.models import DEFAULT_L2, build_model, count_parameters, l2_penalty, registered_models

# Total and non-trainable parameters as Keras' model.summary() reported them in
# the study's table. Keras counts batch norm's moving mean and variance as
# non-trainable parameters.
STUDY_PARAMETERS = {
    "fcnn2": (770760, 0),
    "fcnn2_l2": (770760, 0),
    "fcnn3": (1061860, 0),
    "fcnn3_l2": (1129710, 0),
    "cnn2": (5042506, 512),
    "cnn2_reg": (6206474, 768),
    "cnn3": (4886826, 512),
    "cnn3_reg": (6748234, 768),
    "resnet": (4334026, 6272),
}

# Image sizes just below what each convolutional model accepts: two valid
# 3x3 convolutions with pooling need 10 pixels, three need 22, and ResNet's
# three stages need 4.
TOO_SMALL_SIZES = {"cnn2": 9, "cnn2_reg": 9, "cnn3": 21, "cnn3_reg": 21, "resnet": 3}


@pytest.fixture(scope="module")
def default_model() -> Callable[[str], nn.Module]:
    """Return a function that builds each registered model once per module, at 32 pixels and 10 classes.

    Building is most of this file's run time (truncated-normal initialisation
    of millions of weights), so the count and the forward tests share one instance.
    """
    built: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in built:
            torch.manual_seed(0)
            built[name] = build_model(name)
        return built[name]

    return get


STUDY_MODELS = list(STUDY_PARAMETERS)


def test_study_models_registered():
    registered = registered_models()
    for name in STUDY_MODELS:
        assert name in registered, f"study model {name} is not registered"


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_parameter_counts(name, default_model):
    counts = count_parameters(default_model(name))
    total, non_trainable = STUDY_PARAMETERS[name]

    assert counts["total"] == total, f"{name}: total parameters"
    assert counts["non_trainable"] == non_trainable, f"{name}: non-trainable parameters"
    assert counts["trainable"] == total - non_trainable, f"{name}: trainable parameters"


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_forward_backward(name, default_model):
    model = default_model(name)
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)

    logits = model(images)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all(), f"{name}: non-finite logits"

    logits.logsumexp(dim=1).sum().backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name}: {parameter_name} received no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name}: {parameter_name} has a non-finite gradient"
        assert parameter.grad.abs().sum() > 0, f"{name}: {parameter_name} has an all-zero gradient"


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_other_size_and_classes(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, image_size=64)
    model.eval()

    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))

    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all(), f"{name}: non-finite logits at image size 64"


@pytest.mark.parametrize("name", sorted(TOO_SMALL_SIZES))
def test_too_small_image_size(name):
    size = TOO_SMALL_SIZES[name]

    with pytest.raises(ValueError, match=rf"image_size {size}\b"):
        build_model(name, image_size=size)


def test_unknown_model_name():
    with pytest.raises(ValueError) as raised:
        build_model("cnn4")

    message = str(raised.value)
    assert "'cnn4'" in message
    for name in registered_models():
        assert re.search(rf"\b{name}\b", message), f"registered model {name} missing from: {message}"


@pytest.mark.parametrize("name", ["fcnn3_l2", "cnn2_reg"])
def test_l2_penalty_kernels_only(name):
    torch.manual_seed(0)
    model = build_model(name)
    hidden_dense = [module for module_name, module in model.named_modules() if isinstance(module, nn.Linear) and module_name != "head"]

    # Nonzero biases would raise the penalty if they were counted.
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.fill_(1.0)
    expected = sum(DEFAULT_L2 * module.weight.detach().pow(2).sum() for module in hidden_dense)

    penalty = l2_penalty(model)
    assert penalty is not None, f"{name} has no L2 term"
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)


def test_l2_penalty_absent_without_l2():
    assert l2_penalty(build_model("fcnn3")) is None


def test_models_command_json(capsys):
    exit_code = main(["models", "--json"])

    assert exit_code == 0
    rows = json.loads(capsys.readouterr().out)
    reported = {row["name"]: (row["total"], row["non_trainable"]) for row in rows}
    assert sorted(reported) == sorted(registered_models())
    for name, counts in STUDY_PARAMETERS.items():
        assert reported[name] == counts, f"{name}: (total, non-trainable) parameters"
