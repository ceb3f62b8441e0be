"""cifar-ray: compare image-classification architectures with Ray Tune sweeps on CIFAR-10 or your own photos."""

__version__ = "0.1.0"
