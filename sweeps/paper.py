"""The whole study in one run: both searches, the ResNet trainings and experiment 10, one final table.

The best configuration of each of the eight searched models is retrained
(`--top-k` per model, default 1), next to the ResNet with Nadam and early
stopping, with SGD and early stopping, and the three SGD runs of experiment 10.

    python sweeps/paper.py --data ../shared/datasets/cifar10-jpeg --profile paper
"""

import sys

from cifar_ray.tune.study import resnet_runs
from cifar_ray.tune.sweep import SweepSpec, run

SPEC = SweepSpec(
    name="paper",
    description="The whole study: FCNN and CNN searches, ResNet runs and experiment 10, retrained and tested.",
    searches=["fcnn", "cnn"],
    fixed_configs=resnet_runs,
    per_model=True,
    default_top_k=1,
)

if __name__ == "__main__":
    sys.exit(run(SPEC))
