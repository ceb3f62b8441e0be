"""Search 2- and 3-layer fully connected nets, plain and with L2, retrain the winners, print the table.

    python sweeps/fcnn_search.py --data ../shared/datasets/cifar10-jpeg
"""

import sys

from cifar_ray.tune.sweep import SweepSpec, run

SPEC = SweepSpec(
    name="fcnn_search",
    description="Search 2- and 3-layer fully connected nets (plain and L2) with Ray Tune, retrain the best, test once.",
    searches=["fcnn"],
)

if __name__ == "__main__":
    sys.exit(run(SPEC))
