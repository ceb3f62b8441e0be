"""The study's experiment 10: how depth copes with SGD at learning rate 0.1 and no early stopping.

Trains the 3-layer FCNN with L2, the regularised 3-conv CNN and the ResNet with
SGD (momentum 0.9, weight decay 1e-4, lr 0.1) for a fixed number of epochs
(the study: 90), then tests each once. There is no search stage.

    python sweeps/resnet_lr.py --data ../shared/datasets/cifar10-jpeg
"""

import sys

from cifar_ray.tune.study import experiment_10
from cifar_ray.tune.sweep import SweepSpec, run

SPEC = SweepSpec(
    name="resnet_lr",
    description="Experiment 10: FCNN, CNN and ResNet trained with SGD at lr 0.1 without early stopping.",
    fixed_configs=experiment_10,
)

if __name__ == "__main__":
    sys.exit(run(SPEC))
