"""Decoding image files of any format, mode and size into fixed-size RGB arrays."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

# Formats phones and cameras produce, plus the usual web formats. Files with
# other extensions are still tried, so a mislabelled image is not lost.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

# Below this many files, process start-up costs more than parallel decoding saves.
_PARALLEL_MIN_FILES = 2000


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


def decode_image(path: str, image_size: int) -> np.ndarray:
    """Decode one file into an (image_size, image_size, 3) uint8 RGB array.

    EXIF orientation is applied, every colour mode (grayscale, palette, RGBA,
    CMYK, 16-bit) becomes RGB, and any other size is resized with bilinear
    filtering (antialiased when shrinking). Raises ValueError with the reason
    when the file cannot be used.
    """
    if os.path.getsize(path) == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16- and 32-bit grayscale: scale to 8 bits before the RGB conversion.
                array = np.asarray(image, dtype=np.float64)
                image = Image.fromarray((array / max(array.max(), 1.0) * 255).astype(np.uint8))
            elif image.mode == "F":
                image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
            rgb = image.convert("RGB")
            if rgb.size != (image_size, image_size):
                rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError("not an image file (format not recognised)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"truncated or corrupt image ({error})") from None


def _decode_chunk(paths: list[str], image_size: int) -> tuple[np.ndarray, list[int], list[SkippedFile]]:
    arrays = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[SkippedFile] = []
    for index, path in enumerate(paths):
        try:
            arrays[len(kept)] = decode_image(path, image_size)
            kept.append(index)
        except ValueError as error:
            skipped.append(SkippedFile(path, str(error)))
    return arrays[: len(kept)], kept, skipped


def decode_many(
    paths: list[str], image_size: int, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[SkippedFile]]:
    """Decode files in parallel; return the images, the indices into `paths` they came from, and the skipped files."""
    workers = workers or os.cpu_count() or 1
    if len(paths) < _PARALLEL_MIN_FILES or workers == 1:
        images, kept, skipped = _decode_chunk(paths, image_size)
        return images, np.asarray(kept, dtype=np.int64), skipped

    chunk = -(-len(paths) // (workers * 4))
    starts = list(range(0, len(paths), chunk))
    results = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_decode_chunk, paths[start : start + chunk], image_size) for start in starts]
        results = [future.result() for future in futures]

    images = np.concatenate([r[0] for r in results]) if results else np.empty((0, image_size, image_size, 3), np.uint8)
    kept = np.concatenate([np.asarray(r[1], dtype=np.int64) + start for r, start in zip(results, starts)])
    skipped = [s for r in results for s in r[2]]
    return images, kept, skipped
