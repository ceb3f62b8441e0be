"""The study's own results, for side-by-side tables.

Source: Yingyu Mao, "Comparison between regular deep neural network and
convolutional neural networks on CIFAR-10 dataset", MSDS 458 course report,
15 October 2025, Tables 1-6 and the summary table. Keras, one 2.4 GB laptop GPU,
the original CIFAR-10 files (this project's JPEG copy scores somewhat lower).
Training times are wall-clock seconds as reported; 3-conv regularised with SGD
for 90 epochs is "about 2 h 30 min" in the report.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StudyResult:
    key: str  # model name, with a suffix for the study's other training setups
    model: str  # registered architecture
    setup: str  # optimiser and stopping rule
    params: int
    train_time_s: float
    test_accuracy: float
    test_rmse: float


STUDY_RESULTS: list[StudyResult] = [
    StudyResult("fcnn2", "fcnn2", "nadam, early stopping", 770_760, 28.6, 0.5178, 3.018),
    StudyResult("fcnn2_l2", "fcnn2_l2", "nadam, early stopping", 770_760, 31.6, 0.5425, 2.944),
    StudyResult("fcnn3", "fcnn3", "nadam, early stopping", 1_061_860, 32.9, 0.5394, 2.886),
    StudyResult("fcnn3_l2", "fcnn3_l2", "nadam, early stopping", 1_129_710, 42.6, 0.5565, 2.907),
    StudyResult("cnn2", "cnn2", "nadam, early stopping", 5_042_506, 183.0, 0.7365, 2.126),
    StudyResult("cnn2_reg", "cnn2_reg", "nadam, early stopping", 6_206_474, 1439.0, 0.8003, 1.834),
    StudyResult("cnn3", "cnn3", "nadam, early stopping", 4_886_826, 301.0, 0.7688, 1.942),
    StudyResult("cnn3_reg", "cnn3_reg", "nadam, early stopping", 6_748_234, 3422.0, 0.8377, 1.596),
    StudyResult("resnet", "resnet", "nadam, early stopping", 4_334_026, 1186.0, 0.7233, 2.331),
    StudyResult("resnet_sgd", "resnet", "sgd 0.1, early stopping", 4_334_026, 2297.0, 0.7983, 1.793),
    StudyResult("resnet_sgd_90", "resnet", "sgd 0.1, 90 epochs", 4_334_026, 20186.0, 0.8761, 1.425),
    StudyResult("fcnn3_l2_sgd_90", "fcnn3_l2", "sgd 0.1, 90 epochs", 1_129_710, 107.0, 0.5242, 2.965),
    StudyResult("cnn3_reg_sgd_90", "cnn3_reg", "sgd 0.1, 90 epochs", 6_748_234, 9000.0, 0.836, 1.641),
]


def study_result(model: str, optimizer: str = "nadam", early_stopping: bool = True) -> StudyResult | None:
    """Return the study's row for a registered model trained with the given setup, or None when the study has none."""
    if optimizer == "nadam" and early_stopping:
        key = model
    elif optimizer == "sgd" and early_stopping:
        key = f"{model}_sgd"
    elif optimizer == "sgd":
        key = f"{model}_sgd_90"
    else:
        return None
    return next((r for r in STUDY_RESULTS if r.key == key), None)
