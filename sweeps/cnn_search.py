"""The main job: search 2- and 3-conv CNNs, plain and regularised, retrain the winners, print the table.

    python sweeps/cnn_search.py --data ../shared/datasets/cifar10-jpeg

Without a GPU the `cpu` profile runs. It searches on 10,000 training images
with networks about a seventh of the study's width and crop-and-flip
augmentation, then retrains the top 2 on all 45,000 training images. The
whole run is sized for 15 minutes on 2 CPU cores. With a GPU the
`paper` profile searches around the study's own widths on the full data.
"""

import sys

from cifar_ray.tune.sweep import SweepSpec, run

SPEC = SweepSpec(
    name="cnn_search",
    description="Search 2- and 3-conv CNNs (plain and regularised) with Ray Tune, retrain the best, test once.",
    searches=["cnn"],
)

if __name__ == "__main__":
    sys.exit(run(SPEC))
