"""Data sources, the on-disk cache, splits and the on-device batch path."""

from cifar_ray.data.bundle import DataBundle, prepare_data
from cifar_ray.data.images import SkippedFile, decode_image
from cifar_ray.data.loader import DeviceDataset, random_crop_flip
from cifar_ray.data.sources import CACHE_ENV, DATA_ENV, DataNotFoundError, default_cache_dir

__all__ = [
    "CACHE_ENV",
    "DATA_ENV",
    "DataBundle",
    "DataNotFoundError",
    "DeviceDataset",
    "SkippedFile",
    "decode_image",
    "default_cache_dir",
    "prepare_data",
    "random_crop_flip",
]
