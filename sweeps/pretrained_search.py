"""Fine-tune ImageNet backbones (ResNet-18, MobileNetV3-Small): search the backbone, learning rate and frozen blocks.

The starting weights are read from torchvision's cache folder
($TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints), so
an offline machine needs resnet18-f37072fd.pth and
mobilenet_v3_small-047dcff4.pth copied there first.

    python sweeps/pretrained_search.py --data PHOTOS --image-size 64
"""

import sys

from cifar_ray.tune.sweep import SweepSpec, run

SPEC = SweepSpec(
    name="pretrained_search",
    description="Fine-tune pretrained torchvision backbones with Ray Tune, retrain the best, test once.",
    searches=["pretrained"],
)

if __name__ == "__main__":
    sys.exit(run(SPEC))
