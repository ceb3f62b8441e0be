"""scripts/gpu_check.py without a GPU: it prints that none is visible, runs the CPU checks and exits 0."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from _images import one_torch_thread  # noqa: F401

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


def load_gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up in sys.modules while the module runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any GPU of the machine running the tests, so the CPU path runs everywhere."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_gpu_check_cpu_path(cpu_only, tmp_path: Path, capsys: pytest.CaptureFixture):
    gpu_check = load_gpu_check()
    report_path = tmp_path / "gpu_check.json"

    status = gpu_check.main(["--steps", "1", "--batch-size", "8", "--json", str(report_path)])

    output = capsys.readouterr().out
    assert status == 0, output
    assert "No CUDA GPU is visible" in output
    report = json.loads(report_path.read_text())
    assert report["environment"]["cuda_available"] is False
    assert report["failed"] == []
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    assert statuses == {
        "device placement": "pass",
        "host-to-device copies": "skipped",
        "mixed precision (amp)": "pass",
        "channels_last": "pass",
        "training steps per family": "pass",
        "Tune sweep, --gpus-per-trial 0.5": "skipped",
    }

    figures = {check["name"]: check["figures"] for check in report["checks"]}
    assert figures["device placement"]["trainer_device"] == "cpu"
    assert "no CUDA GPU is visible" in figures["device placement"]["cuda_request_error"]
    amp = figures["mixed precision (amp)"]
    assert amp["use_amp"] is False, "amp must be a no-op on the CPU"
    assert amp["grad_scaler"] is False
    assert amp["conv_output_dtype"] == "float32"
    assert figures["channels_last"]["images_per_s_channels_last"] > 0
    assert figures["channels_last"]["images_per_s_contiguous"] > 0
    families = figures["training steps per family"]
    assert sorted(families) == ["cnn", "fcnn", "pretrained", "resnet"]
    for family, numbers in families.items():
        assert numbers.get("images_per_s", 0) > 0, f"{family}: {numbers}"


@pytest.mark.parametrize("flags", [["--steps", "0"], ["--batch-size", "1"]])
def test_gpu_check_rejects_invalid_sizes(cpu_only, flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture):
    gpu_check = load_gpu_check()
    assert gpu_check.main([*flags, "--json", str(tmp_path / "report.json")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()
